"""The lab itself works: a hand-made IPVS direct-routing service on a LAN of namespaces.

Run inside user-mode Linux:
    python -m lab.uml -- python -m pytest tests/kernel/test_lab_smoke.py
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from lab.echo import EchoService
from lab.lan import Host, Lan, ipvsadm
from lab.traffic import tcp_ask, udp_ask

VIP = "198.51.100.10"
TCP_PORT = 25
UDP_PORT = 5060
SOURCES = [f"192.0.2.{n}" for n in range(64, 72)]


@pytest.fixture
def lan() -> Iterator[Lan]:
    with Lan("smoke") as lan:
        lan.add_host("fe1", "192.0.2.11")
        lan.add_host("fe2", "192.0.2.12")
        lan.add_host("client", "192.0.2.100", extra_ips=SOURCES)
        yield lan


def _dr_service(director: Host, proto_flag: str, port: int, servers: list[Host]) -> None:
    """ipvsadm by hand: round robin, every real server in direct-routing mode (-g)."""
    ipvsadm(director, "-A", proto_flag, f"{VIP}:{port}", "-s", "rr")
    for server in servers:
        ipvsadm(director, "-a", proto_flag, f"{VIP}:{port}", "-r", server.ip, "-g", "-w", "100")


def test_dr_service_answers_from_both_frontends(lan: Lan) -> None:
    fe1, fe2, client = lan["fe1"], lan["fe2"], lan["client"]
    for fe in (fe1, fe2):
        fe.dr_real_server([VIP])  # VIP on lo, arp_ignore=1, arp_announce=2
    fe1.add_address(VIP, dev="eth0")  # the director answers ARP for the VIP
    _dr_service(fe1, "-t", TCP_PORT, [fe1, fe2])
    _dr_service(fe1, "-u", UDP_PORT, [fe1, fe2])
    # 6.1 lists the director's own address as "Route" (netlink fwd_method 3) like any other
    # DR real server, never "Local": local delivery is decided per packet, at transmit time.
    table = ipvsadm(fe1, "-L", "-n")
    for fe in (fe1, fe2):
        assert re.search(rf"-> {re.escape(fe.ip)}:{TCP_PORT}\s+Route\s", table), table

    with EchoService([fe1, fe2], [VIP], tcp_ports=[TCP_PORT], udp_ports=[UDP_PORT]):
        tcp = [tcp_ask(client, VIP, TCP_PORT, src=src) for src in SOURCES]
        udp = [udp_ask(client, VIP, UDP_PORT, src=src) for src in SOURCES]

    assert set(tcp) == {"fe1", "fe2"}, tcp
    assert set(udp) == {"fe1", "fe2"}, udp
    # Round robin over two real servers: an even split.
    assert tcp.count("fe1") == tcp.count("fe2"), tcp
    # The client reached the VIP through the director's MAC only (ARP answered by fe1 alone).
    assert client.neigh(VIP) == fe1.mac
    # Only the director holds the VIP on eth0; the other real server keeps it on lo.
    assert f"{VIP}/32" in fe1.addresses("eth0")
    assert f"{VIP}/32" not in fe2.addresses("eth0")
    assert f"{VIP}/32" in fe2.addresses("lo")
