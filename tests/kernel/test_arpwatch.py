"""The split-brain watch in a real kernel: what its packet socket hears on a LAN.

Runs INSIDE user-mode Linux:
    python -m tests.lab.uml -- python -m pytest -p no:cacheprovider tests/kernel/test_arpwatch.py
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Iterator

import pytest

from cgp_ipvs_helper.arpwatch import ArpListener
from cgp_ipvs_helper.netlink import NetlinkKernel
from cgp_ipvs_helper.operations import SendGarp
from tests.lab.lan import Host, Lan
from tests.lab.traffic import tcp_ask

VIP = "198.51.100.10"


@pytest.fixture
def lan() -> Iterator[Lan]:
    with Lan(f"aw{os.getpid() % 10000}") as lan:
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
