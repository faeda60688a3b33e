"""The split-brain watch in a real kernel: what its packet socket hears on a LAN.

Runs INSIDE user-mode Linux:
    python -m lab.uml -- python -m pytest -p no:cacheprovider tests/kernel/test_arpwatch.py
"""

from __future__ import annotations

import os
import select
import tempfile
import time
from collections.abc import Iterator

import pytest

from cgp_ipvs_helper.core.arpwatch import ArpListener
from cgp_ipvs_helper.kernel.netlink.kernel import NetlinkKernel
from cgp_ipvs_helper.plan.operations import SendGarp
from lab.driver import HelperProcess, write_vipfile
from lab.lan import Host, Lan, unique
from lab.traffic import tcp_ask

VIP = "198.51.100.10"


@pytest.fixture
def lan() -> Iterator[Lan]:
    with Lan(unique("aw")) as lan:
        lan.add_host("fe1", "192.0.2.11")
        lan.add_host("fe2", "192.0.2.12")
        lan.add_host("client", "192.0.2.100")
        yield lan


def announce(host: Host, ip: str) -> None:
    """Both gratuitous ARP forms for `ip` from `host`, as a helper sends them."""
    kernel = host.call(NetlinkKernel)
    try:
        assert host.call(kernel.apply_many, [SendGarp(ip, "eth0", r) for r in (False, True)]) == []
    finally:
        kernel.close()


def heard(listener: ArpListener, seconds: float) -> list[tuple[str, bytes]]:
    """Every claim the listener hears within `seconds`, waiting as the helper does (select)."""
    found: list[tuple[str, bytes]] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if select.select([listener], [], [], left)[0]:
            found += listener.claims()
    return found


def mac(host: Host) -> bytes:
    return bytes.fromhex(host.mac.replace(":", ""))


def test_the_listener_hears_another_hosts_announcement_of_a_vip_at_once(lan: Lan) -> None:
    fe1, fe2 = lan["fe1"], lan["fe2"]
    listener = fe1.call(ArpListener, "eth0")
    try:
        sent = time.monotonic()
        announce(fe2, VIP)
        ready = select.select([listener], [], [], 1.0)[0]
        assert ready and time.monotonic() - sent < 1.0
        claims = listener.claims() + heard(listener, 0.3)
        assert claims == [(VIP, mac(fe2)), (VIP, mac(fe2))]  # request and reply form
    finally:
        listener.close()


def test_the_listener_ignores_its_own_hosts_frames(lan: Lan) -> None:
    fe1, client = lan["fe1"], lan["client"]
    listener = fe1.call(ArpListener, "eth0")
    try:
        announce(fe1, VIP)  # our own announcement (PACKET_OUTGOING)
        fe1.flush_neigh()
        client.flush_neigh()
        with pytest.raises(OSError):  # ARP both ways between fe1 and the client, then refused
            tcp_ask(client, fe1.ip, 1, timeout=1)
        claims = heard(listener, 0.5)
        assert (VIP, mac(fe1)) not in claims
        assert {ip for ip, _ in claims} <= {client.ip}  # the client's request, not a claim
    finally:
        listener.close()


# --- two helpers active at once (split brain) ----------------------------------------------

VIPS = ["198.51.100.10", "198.51.100.11"]


def warnings(h: HelperProcess) -> list[str]:
    return [line for line in h.log if "ARP conflict" in line]


def wait_for(h: HelperProcess, n: int, seconds: float) -> None:
    """Until `h` has logged `n` conflict warnings, or `seconds` have passed."""
    deadline = time.monotonic() + seconds
    while len(warnings(h)) < n and time.monotonic() < deadline:
        time.sleep(0.02)


def cpu_seconds(h: HelperProcess) -> float:
    with open(f"/proc/{h.proc.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_two_active_helpers_warn_at_once_and_a_planned_switch_does_not(lan: Lan) -> None:
    fe1, fe2 = lan["fe1"], lan["fe2"]
    with tempfile.TemporaryDirectory() as tmp:
        vipfile = write_vipfile(f"{tmp}/vipaddrs", VIPS)
        h1, h2 = (
            HelperProcess(fe, "-i", "eth0", "-f", vipfile, "-t", "3", "--drain", "1")
            for fe in (fe1, fe2)
        )
        try:
            h1.wait_started(60)
            h2.wait_started(60)
            members = f"ACTIVATE {fe1.ip} {fe2.ip}"
            # normal operation: one balancer, its announcements, two refreshes
            assert h1.request(members).endswith("OK active vips=2 members=2")
            time.sleep(3.5)  # its repeats (1.1 s, 2.2 s) and a refresh (3 s): announcements
            # idle while listening (nothing due for 3 s after a request): no busy loop
            assert h1.request("STATUS").endswith("conflicts=0")
            before = cpu_seconds(h1)
            time.sleep(2.5)
            assert cpu_seconds(h1) - before < 0.025  # under 1 % of a CPU
            # a planned switch in the harder order: the new balancer first
            h2.send(f"90001 {members}")
            h1.send("90002 DEACTIVATE")
            assert h2.wait_response("90001").line.endswith("OK active vips=2 members=2")
            assert h1.wait_response("90002").line.endswith("OK standby")
            time.sleep(3.5)  # h2's repeats and a refresh
            assert warnings(h1) == [] and warnings(h2) == []
            assert h2.request("STATUS").split(" ")[-1] == "conflicts=0"
            # split brain: h1 is made active again while h2 never got DEACTIVATE
            sent = time.monotonic()  # (h1 announces before it answers: measured from sending)
            h1.send(f"90003 {members}")
            wait_for(h2, 2, 3.0)
            took = time.monotonic() - sent
            assert h1.wait_response("90003").line.endswith("OK active vips=2 members=2")
            assert len(warnings(h2)) == 2 and took < 1.0, (took, h2.log[-10:])
            assert all(
                fe1.mac in w and w.startswith("* WARNING: ARP conflict: ") for w in warnings(h2)
            )
            assert {v for v in VIPS if any(v in w for w in warnings(h2))} == set(VIPS)
            wait_for(h1, 2, 4.0)  # h2's next refresh reaches h1 too
            assert len(warnings(h1)) == 2 and all(fe2.mac in w for w in warnings(h1))
            time.sleep(3.5)  # more announcements both ways: no more warnings
            assert len(warnings(h1)) == 2 and len(warnings(h2)) == 2
            assert h2.request("STATUS").split(" ")[-1] == "conflicts=2"
        finally:
            h1.kill()
            h2.kill()
