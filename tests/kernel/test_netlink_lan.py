"""NetlinkKernel in a real kernel, on the LAN side: addresses and sysctls, gratuitous ARP frames
on the wire and in the peer's neighbour table, and the sockets it keeps.

Runs INSIDE user-mode Linux in the two-namespace `box` (conftest.py, lab/box.py), as
test_netlink.py does; checks read the kernel with the usual tools, never the code under test.
"""

from __future__ import annotations

import os

import pytest

from cgp_ipvs_helper.kernel.frames import mmsg
from cgp_ipvs_helper.plan import planner
from cgp_ipvs_helper.plan.model import Address, Service, ServiceKey, Sysctl
from cgp_ipvs_helper.plan.operations import (
    AddAddress,
    AddService,
    DelAddress,
    SendGarp,
    SetSysctl,
)
from lab.box import (
    OUR_IP,
    OUR_MAC,
    Box,
    addresses,
    ip_batch,
    refused,
    sysctl,
    wait_neigh,
)
from lab.netns import in_netns
from lab.sniff import announcing, arp_sniffer, garp, mac_bytes

VIP = "198.51.100.7"


# --- addresses and sysctls ----------------------------------------------------------------------


def test_addresses_are_added_deleted_and_observed_in_kernel_order(box: Box) -> None:
    k = box.kernel
    k.apply(AddAddress(Address(VIP, "lo")))
    k.apply(AddAddress(Address(VIP, "eth0")))
    k.apply(AddAddress(Address("198.51.100.8", "eth0", 28)))
    assert addresses("eth0") == [f"{OUR_IP}/24", f"{VIP}/32", "198.51.100.8/28"]
    assert addresses("lo") == ["127.0.0.1/8", f"{VIP}/32"]

    observed = k.observe(frozenset()).addresses
    assert observed == (
        Address("127.0.0.1", "lo", 8),
        Address(VIP, "lo", 32),
        Address(OUR_IP, "eth0", 24),
        Address(VIP, "eth0", 32),
        Address("198.51.100.8", "eth0", 28),
    )

    k.apply(DelAddress(Address(VIP, "eth0")))
    k.apply(DelAddress(Address("198.51.100.8", "eth0", 28)))
    assert addresses("eth0") == [f"{OUR_IP}/24"]
    assert addresses("lo") == ["127.0.0.1/8", f"{VIP}/32"]  # the lo copy stays


def test_address_errors_carry_the_kernels_reason(box: Box) -> None:
    k = box.kernel
    k.apply(AddAddress(Address(VIP, "lo")))
    assert refused(AddAddress(Address(VIP, "lo")), k).reason == "File exists"
    missing = DelAddress(Address("198.51.100.9", "eth0"))
    assert refused(missing, k).reason == "Cannot assign requested address"
    # the kernel deletes by address and prefix length: /32 does not match a /24
    wrong_len = DelAddress(Address(OUR_IP, "eth0", 32))
    assert refused(wrong_len, k).reason == "Cannot assign requested address"
    no_dev = AddAddress(Address("198.51.100.9", "nosuch0"))
    assert refused(no_dev, k).reason == "No such device"
    assert addresses("eth0") == [f"{OUR_IP}/24"]


def test_a_replaced_device_is_found_again(box: Box) -> None:
    k = box.kernel
    ip_batch("link add dum0 type veth peer name dum0p\n")
    k.observe(frozenset())  # caches dum0's index
    ip_batch("link del dum0\nlink add dum0 type veth peer name dum0p\n")
    op = AddAddress(Address(VIP, "dum0"))
    assert refused(op, k).reason == "No such device"  # the old index
    k.apply(op)  # resolved again
    assert addresses("dum0") == [f"{VIP}/32"]


def test_sysctls_are_written_and_read(box: Box) -> None:
    k = box.kernel
    ip_batch("link add e.1 type veth peer name e1p\n")  # a dot in a device name
    for path in ("net/ipv4/conf/eth0/arp_ignore", "net/ipv4/conf/e.1/arp_ignore"):
        k.apply(SetSysctl(Sysctl(path, "1")))
    k.apply(SetSysctl(Sysctl("net/ipv4/conf/eth0/arp_announce", "2")))
    k.apply(SetSysctl(Sysctl("net/ipv4/vs/expire_nodest_conn", "1")))
    assert sysctl("net.ipv4.conf.eth0.arp_ignore") == "1"
    assert sysctl("net/ipv4/conf/e.1/arp_ignore") == "1"
    assert sysctl("net.ipv4.conf.eth0.arp_announce") == "2"
    assert sysctl("net.ipv4.vs.expire_nodest_conn") == "1"

    paths = frozenset(
        [
            "net/ipv4/conf/eth0/arp_ignore",
            "net/ipv4/conf/e.1/arp_ignore",
            "net/ipv4/conf/all/arp_ignore",
            "net/ipv4/vs/backup_only",
            "net/ipv4/no/such/setting",
        ]
    )
    assert k.observe(paths).sysctls == {
        "net/ipv4/conf/eth0/arp_ignore": "1",
        "net/ipv4/conf/e.1/arp_ignore": "1",
        "net/ipv4/conf/all/arp_ignore": "0",
        "net/ipv4/vs/backup_only": "0",
        "net/ipv4/no/such/setting": None,
    }

    missing = SetSysctl(Sysctl("net/ipv4/no/such/setting", "1"))
    assert refused(missing, k).reason == "No such file or directory"
    bad = SetSysctl(Sysctl("net/ipv4/conf/eth0/arp_ignore", "x"))
    assert refused(bad, k).reason == "Invalid argument"
    escape = SetSysctl(Sysctl("net/../../etc/passwd", "x"))
    assert "bad sysctl path" in refused(escape, k).reason


# --- gratuitous ARP -----------------------------------------------------------------------------


def test_garp_frames_on_the_wire(box: Box) -> None:
    with arp_sniffer(box.peer) as sniffer:
        ops = [SendGarp(VIP, "eth0", False), SendGarp(VIP, "eth0", True)]
        assert box.kernel.apply_many(ops) == []
        announced = announcing(sniffer, VIP, 2)
    # broadcast from our MAC, sender = target = the VIP, padded with zeros to 60 bytes
    assert announced == [garp(mac_bytes(OUR_MAC), VIP, reply) for reply in (False, True)]


def test_garp_updates_the_peers_neighbour_table_with_the_current_mac(box: Box) -> None:
    k = box.kernel
    with in_netns(box.peer):
        ip_batch(f"neigh replace {VIP} lladdr 02:00:00:00:00:99 dev eth0 nud stale\n")
    k.apply(SendGarp(VIP, "eth0", False))  # request form: Linux takes it at once
    assert OUR_MAC in wait_neigh(box, VIP, OUR_MAC)  # (once the peer's softirq has run)

    new_mac = "02:00:00:00:01:11"
    ip_batch(f"link set eth0 address {new_mac}\n")  # veth changes its MAC while up
    # the reply form carries target MAC = sender MAC, so Linux takes it as gratuitous at once,
    # inside its 1 s ARP lock time (arp_is_garp); only one frame is sent
    k.apply(SendGarp(VIP, "eth0", True))  # reply form, same socket, the MAC of now
    assert new_mac in wait_neigh(box, VIP, new_mac)


def test_garp_errors(box: Box) -> None:
    k = box.kernel
    assert refused(SendGarp(VIP, "lo", True), k).reason == "lo is not an Ethernet device"
    assert refused(SendGarp(VIP, "nosuch0", True), k).reason == "No such device"
    ip_batch("link set eth0 down\n")
    assert refused(SendGarp(VIP, "eth0", True), k).reason == "Network is down"
    ip_batch("link set eth0 up\n")
    k.apply(SendGarp(VIP, "eth0", True))


@pytest.mark.parametrize("how", ["sendmmsg", "one send a frame"])
def test_a_round_of_frames_leaves_in_order(box: Box, how: str, monkeypatch) -> None:
    if how != "sendmmsg":
        monkeypatch.setattr(mmsg, "_sendmmsg", None)  # as where libc has no sendmmsg
    vips = [f"203.0.113.{i}" for i in range(256)]
    ops = planner.announce(vips, "eth0")  # 512 frames
    with arp_sniffer(box.peer, rcvbuf=4 << 20) as sniffer:  # room for 512 waiting frames
        assert box.kernel.apply_many(ops) == []
        frames = [sniffer.recv(2048) for _ in ops]
    mac = mac_bytes(OUR_MAC)
    assert [f[:42] for f in frames] == [garp(mac, op.ip, op.reply, pad=False) for op in ops]


def test_frames_on_a_replaced_device_go_out_on_a_new_socket(box: Box) -> None:
    k = box.kernel
    ip_batch("link add dum0 type veth peer name dum0p\nlink set dum0 up\nlink set dum0p up\n")
    ops = [SendGarp(VIP, "dum0", False), SendGarp(VIP, "dum0", True)]
    assert k.apply_many(ops) == []
    ip_batch(
        "link del dum0\nlink add dum0 address 02:00:00:00:02:22 type veth peer name dum0p\n"
        "link set dum0 up\nlink set dum0p up\n"
    )
    with arp_sniffer(box.ours, "dum0p") as sniffer:
        assert k.apply_many(ops) == []  # the old socket's device is gone: opened anew once
        frames = [sniffer.recv(2048) for _ in ops]
    assert [f[6:12] for f in frames] == [mac_bytes("02:00:00:00:02:22")] * 2  # the new MAC


def test_each_refused_frame_of_a_round_fails_alone(box: Box) -> None:
    k = box.kernel
    ops = [SendGarp(VIP, "eth0", False), SendGarp(VIP, "lo", True), SendGarp(VIP, "eth0", True)]
    ip_batch("link set eth0 down\n")
    errors = k.apply_many(ops)
    assert [(e.op, e.reason) for e in errors] == [
        (ops[0], "Network is down"),
        (ops[1], "lo is not an Ethernet device"),
        (ops[2], "Network is down"),
    ]
    ip_batch("link set eth0 up\n")
    assert [e.op for e in k.apply_many(ops)] == [ops[1]]


# --- sockets ------------------------------------------------------------------------------------


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_sockets_open_once_and_are_reused(box: Box) -> None:
    k = box.kernel
    start = _open_fds()
    k.observe(frozenset())
    k.apply(SendGarp(VIP, "eth0", False))
    assert _open_fds() == start + 3  # route netlink, generic netlink, one packet socket
    for port in range(1, 51):
        k.apply(AddService(Service(ServiceKey("tcp", VIP, port), "wlc", 0)))
        k.apply(AddAddress(Address(f"198.51.100.{port}", "lo")))
        k.apply(SendGarp(VIP, "eth0", port % 2 == 0))
    k.observe(frozenset())
    assert _open_fds() == start + 3
    k.close()
    assert _open_fds() == start
