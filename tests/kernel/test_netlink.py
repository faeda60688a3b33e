"""NetlinkKernel in a real kernel, IPVS: services, real servers and sync daemons, observe()
round trips, the kernel's errors, and an IPVS that cannot be read.

Runs INSIDE user-mode Linux (conftest.py fails the run anywhere else):

    python -m lab.uml -- python -m pytest -p no:cacheprovider tests/kernel/test_netlink.py

Each test gets the `box` fixture (conftest.py, lab/box.py): two fresh network namespaces
joined by a veth pair, "ours", where the kernel under test works (eth0 192.0.2.10/24), and
"peer" (eth0 192.0.2.20/24), which sees the frames. The test body runs with its thread inside
"ours", so the NetlinkKernel's sockets and every tool the test runs belong there. Checks read
the kernel with the usual tools (ipvsadm, ip, sysctl), never with the code under test.
Addresses: LAN 192.0.2.0/24, VIPs 198.51.100.0/24, someone else's 203.0.113.0/24 (and
2001:db8::1 for an IPv6 service that never carries traffic).
"""

from __future__ import annotations

import re

import pytest

from cgp_ipvs_helper.errors import KernelError
from cgp_ipvs_helper.kernel.netlink import channels as nlchannels
from cgp_ipvs_helper.kernel.netlink.kernel import NetlinkKernel
from cgp_ipvs_helper.plan import planner
from cgp_ipvs_helper.plan.model import Address, Daemon, Dest, Service, ServiceKey, Settings, Sysctl
from cgp_ipvs_helper.plan.operations import (
    AddAddress,
    AddDest,
    AddService,
    DelDest,
    DelService,
    EditDest,
    EditService,
    SendGarp,
    SetSysctl,
    StartDaemon,
    StopDaemon,
)
from lab.box import (
    OUR_IP,
    Box,
    addresses,
    ip_batch,
    ipvsadm_rules,
    refused,
    run,
    sysctl,
)
from tests.forked import as_nobody

VIP = "198.51.100.7"


def svc(proto: str = "tcp", vip: str = VIP, port: int = 0, sched: str = "wlc", p: int = 15):
    return Service(ServiceKey(proto, vip, port), sched, p)


# --- IPVS ---------------------------------------------------------------------------------------


def test_services_and_dests_round_trip_including_the_local_real_server(box: Box) -> None:
    k = box.kernel
    tcp, udp, smtp = svc("tcp"), svc("udp"), svc("tcp", port=25, sched="wrr", p=0)
    dests = {
        Dest(tcp.key, OUR_IP, 50),  # the director itself
        Dest(tcp.key, "192.0.2.11", 100),
        Dest(udp.key, OUR_IP, 50),
        Dest(udp.key, "192.0.2.11", 100),
        Dest(smtp.key, "192.0.2.12", 7),
    }
    assert k.apply_many([AddService(s) for s in (tcp, udp, smtp)]) == []
    assert k.apply_many([AddDest(d) for d in sorted(dests, key=str)]) == []

    assert ipvsadm_rules() == {
        f"-A -t {VIP}:0 -s wlc -p 15",
        f"-a -t {VIP}:0 -r {OUR_IP}:0 -g -w 50",
        f"-a -t {VIP}:0 -r 192.0.2.11:0 -g -w 100",
        f"-A -u {VIP}:0 -s wlc -p 15",
        f"-a -u {VIP}:0 -r {OUR_IP}:0 -g -w 50",
        f"-a -u {VIP}:0 -r 192.0.2.11:0 -g -w 100",
        f"-A -t {VIP}:25 -s wrr",
        f"-a -t {VIP}:25 -r 192.0.2.12:25 -g -w 7",
    }
    # Linux 6.1 keeps the director's own address as a DR ("Route") real server, not "Local"
    listing = run("ipvsadm", "-L", "-n")
    assert re.search(rf"-> {re.escape(OUR_IP)}:0\s+Route\s+50\s", listing), listing

    state = k.observe(frozenset())
    assert state.ipvs is True and k.ipvs_problem is None
    assert state.services == {tcp, udp, smtp}
    assert state.dests == dests  # method "dr" for the local one too


def test_services_and_dests_are_edited_and_deleted(box: Box) -> None:
    k = box.kernel
    tcp, smtp = svc("tcp"), svc("tcp", port=25, p=0)
    local, other = Dest(tcp.key, OUR_IP, 100), Dest(tcp.key, "192.0.2.11", 100)
    ops = [AddService(tcp), AddService(smtp), AddDest(local), AddDest(other)]
    assert k.apply_many(ops) == []

    edited = [
        EditService(svc("tcp", sched="wrr", p=30)),
        EditService(svc("tcp", port=25, p=20)),  # becomes persistent
        EditDest(Dest(tcp.key, OUR_IP, 0)),  # the director stops taking new clients
    ]
    assert k.apply_many(edited) == []
    assert ipvsadm_rules() == {
        f"-A -t {VIP}:0 -s wrr -p 30",
        f"-a -t {VIP}:0 -r {OUR_IP}:0 -g -w 0",
        f"-a -t {VIP}:0 -r 192.0.2.11:0 -g -w 100",
        f"-A -t {VIP}:25 -s wlc -p 20",
    }
    k.apply(EditService(svc("tcp", port=25, p=0)))  # and back: persistence off
    assert f"-A -t {VIP}:25 -s wlc" in ipvsadm_rules()
    state = k.observe(frozenset())
    assert state.services == {svc("tcp", sched="wrr", p=30), svc("tcp", port=25, p=0)}
    assert state.dests == {Dest(tcp.key, OUR_IP, 0), other}

    k.apply(DelDest(other))
    assert ipvsadm_rules() == {
        f"-A -t {VIP}:0 -s wrr -p 30",
        f"-a -t {VIP}:0 -r {OUR_IP}:0 -g -w 0",
        f"-A -t {VIP}:25 -s wlc",
    }
    assert k.apply_many([DelService(svc("tcp")), DelService(smtp)]) == []
    assert ipvsadm_rules() == set()
    assert k.observe(frozenset()).dests == frozenset()


def test_ipvs_errors_carry_the_kernels_reason(box: Box) -> None:
    k = box.kernel
    tcp = svc("tcp")
    k.apply(AddService(tcp))
    k.apply(AddDest(Dest(tcp.key, "192.0.2.11", 100)))
    gone = svc("tcp", vip="198.51.100.99")
    expected = [
        (AddService(tcp), "File exists"),
        (DelService(gone), "No such process"),
        (EditService(gone), "No such process"),
        (AddDest(Dest(gone.key, "192.0.2.11", 1)), "No such process"),
        (AddDest(Dest(tcp.key, "192.0.2.11", 1)), "File exists"),
        (EditDest(Dest(tcp.key, "192.0.2.12", 1)), "No such file or directory"),
        (DelDest(Dest(tcp.key, "192.0.2.12", 1)), "No such file or directory"),
        # a scheduler whose module is not loaded (the lab loads rr, wlc and wrr only)
        (AddService(svc("tcp", vip="198.51.100.98", sched="sh")), "No such file or directory"),
    ]
    for op, reason in expected:
        assert refused(op, k).reason == reason, op
    assert ipvsadm_rules() == {
        f"-A -t {VIP}:0 -s wlc -p 15",
        f"-a -t {VIP}:0 -r 192.0.2.11:0 -g -w 100",
    }


def test_apply_many_goes_on_after_failures_and_reports_them_in_order(box: Box) -> None:
    k = box.kernel
    # 300 services: more than one datagram; failures in the middle of batches, and an
    # address operation in between that splits the IPVS run in two
    ops: list = [AddService(svc("tcp", port=p, p=0)) for p in range(1, 301)]
    bad = {
        5: AddService(svc("tcp", port=1, p=0)),
        150: AddAddress(Address(VIP, "nosuch0")),
        151: AddAddress(Address(VIP, "lo")),
        260: AddDest(Dest(ServiceKey("tcp", VIP, 999), "192.0.2.11", 1)),
        299: AddService(svc("tcp", port=2, p=0)),
    }
    for index in sorted(bad):
        ops.insert(index, bad[index])
    errors = k.apply_many(ops)
    assert [(e.op, e.reason) for e in errors] == [
        (bad[5], "File exists"),
        (bad[150], "No such device"),
        (bad[260], "No such process"),
        (bad[299], "File exists"),
    ]
    assert len([r for r in ipvsadm_rules() if r.startswith("-A")]) == 300
    assert addresses("lo") == ["127.0.0.1/8", f"{VIP}/32"]

    # every request of several full datagrams failing: each is reported, none is lost
    again = [AddService(svc("tcp", port=p, p=0)) for p in range(1, 301)] * 2
    errors = k.apply_many(again)
    assert [e.op for e in errors] == again
    assert {e.reason for e in errors} == {"File exists"}


def test_sync_daemons_start_stop_and_are_observed(box: Box) -> None:
    k = box.kernel
    master, backup = Daemon("master", "eth0", 7), Daemon("backup", "eth0", 7)
    assert k.apply_many([StartDaemon(backup), StartDaemon(master)]) == []
    listing = run("ipvsadm", "-L", "-n", "--daemon")
    assert "master sync daemon (mcast=eth0, syncid=7," in listing
    assert "backup sync daemon (mcast=eth0, syncid=7," in listing
    assert k.observe(frozenset()).daemons == {master, backup}

    assert refused(StartDaemon(master), k).reason == "File exists"
    no_dev = StartDaemon(Daemon("master", "nosuch0", 7))
    assert refused(no_dev, k).reason in ("File exists", "No such device")

    k.apply(StopDaemon(master))
    listing = run("ipvsadm", "-L", "-n", "--daemon")
    assert "master" not in listing and "backup sync daemon (mcast=eth0, syncid=7," in listing
    assert k.observe(frozenset()).daemons == {backup}
    assert refused(StopDaemon(master), k).reason == "No such process"
    assert refused(no_dev, k).reason == "No such device"
    k.apply(StopDaemon(backup))
    assert k.observe(frozenset()).daemons == frozenset()


def test_plan_apply_observe_converges_and_leaves_foreign_things_alone(box: Box) -> None:
    k = box.kernel
    # someone else's: a NAT service on the LAN address, fwmark, IPv6 and SCTP services, and an
    # address of theirs on eth0
    for rule in (
        f"-A -t {OUR_IP}:80 -s rr",
        f"-a -t {OUR_IP}:80 -r 203.0.113.30:8080 -m -w 3",
        "-A -f 7 -s rr",
        "-A -f 7 -6 -s rr",
        "-A -t [2001:db8::1]:80 -s rr",
        f"-A --sctp-service {OUR_IP}:5000 -s rr",
    ):
        run("ipvsadm", *rule.split())
    ip_batch("address add 203.0.113.5/32 dev eth0\n")
    foreign_rules = ipvsadm_rules()
    foreign = Service(ServiceKey("tcp", OUR_IP, 80), "rr", 0)
    foreign6 = Service(ServiceKey("tcp", "2001:db8::1", 80), "rr", 0)
    marked = Service(ServiceKey.for_mark(7), "rr", 0)  # reported, but not a mark of ours
    marked6 = Service(ServiceKey.for_mark(7, ipv6=True), "rr", 0)  # the same mark for IPv6

    settings = Settings(iface="eth0", syncid=3, persistence=15, weight=50)
    paths = planner.sysctl_paths("eth0")
    before = k.observe(paths)
    # SCTP services are never ours: not reported; IPv6 and fwmark ones are, and left alone
    assert before.services == {foreign, foreign6, marked, marked6}
    assert before.dests == {Dest(foreign.key, "203.0.113.30", 3, "nat")}
    assert Address("203.0.113.5", "eth0", 32) in before.addresses

    vips = ["198.51.100.1", "198.51.100.2"]
    members = [OUR_IP, "192.0.2.11", "192.0.2.12"]
    active = planner.desired(settings, vips, planner.Role.ACTIVE, members, OUR_IP)
    assert k.apply_many(planner.plan(active, before)) == []

    after = k.observe(paths)
    assert planner.plan(active, after) == ()
    assert after.services == active.services | {foreign, foreign6, marked, marked6}
    assert {d for d in after.dests if d.service.vip in vips} == active.dests
    assert after.daemons == active.daemons
    assert foreign_rules <= ipvsadm_rules()
    assert addresses("eth0") == [f"{OUR_IP}/24", "203.0.113.5/32", *(f"{v}/32" for v in vips)]
    assert sysctl("net.ipv4.vs.backup_only") == "1"

    standby = planner.desired(settings, vips, planner.Role.STANDBY, members, OUR_IP)
    assert k.apply_many(planner.plan(standby, after)) == []
    assert ipvsadm_rules() == foreign_rules
    assert addresses("eth0") == [f"{OUR_IP}/24", "203.0.113.5/32"]
    assert k.observe(paths).daemons == standby.daemons
    assert planner.plan(standby, k.observe(paths)) == ()


# --- IPVS that cannot be read -------------------------------------------------------------------


def test_a_missing_ipvs_module_is_reported_not_raised(
    box: Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the kernel answers for an unknown family exactly as when ip_vs is not loaded
    monkeypatch.setattr(nlchannels, "IPVS_FAMILY", "IPVS_MISSING")
    k = NetlinkKernel()
    try:
        state = k.observe(frozenset(["net/ipv4/conf/all/arp_ignore"]))
        assert state.ipvs is False
        assert (state.services, state.dests, state.daemons) == (frozenset(),) * 3
        assert k.ipvs_problem is not None and "load the ip_vs kernel module" in k.ipvs_problem
        assert Address(OUR_IP, "eth0", 24) in state.addresses  # the rest still works
        assert state.sysctls == {"net/ipv4/conf/all/arp_ignore": "0"}
        error = refused(AddService(svc()), k)
        assert error.reason.startswith("IPVS is not available")
        k.apply(AddAddress(Address(VIP, "lo")))
    finally:
        k.close()
    # and once IPVS is there, the problem is gone
    monkeypatch.setattr(nlchannels, "IPVS_FAMILY", "IPVS")
    k = NetlinkKernel()
    try:
        assert k.observe(frozenset()).ipvs is True and k.ipvs_problem is None
    finally:
        k.close()


def _in_child_as_nobody() -> dict:
    """What an unprivileged NetlinkKernel sees (run in a forked child)."""
    k = NetlinkKernel()
    state = k.observe(frozenset(["net/ipv4/conf/all/arp_ignore"]))
    out = {
        "ipvs": state.ipvs,
        "problem": k.ipvs_problem,
        "addresses": len(state.addresses),
        "sysctl": state.sysctls["net/ipv4/conf/all/arp_ignore"],
    }
    # 600 failures: more than one datagram (256) of errors fits the unprivileged receive buffer
    many = k.apply_many([AddService(svc(port=p, p=0)) for p in range(1, 601)])
    out["many"] = sorted({e.reason for e in many}) + [len(many)]
    for name, op in (
        ("service", AddService(svc())),
        ("address", AddAddress(Address(VIP, "lo"))),
        ("sysctl_write", SetSysctl(Sysctl("net/ipv4/conf/all/arp_ignore", "1"))),
        ("garp", SendGarp(VIP, "eth0", False)),
    ):
        try:
            k.apply(op)
            out[name] = "ok"
        except KernelError as exc:
            out[name] = exc.reason
    k.close()
    return out


def test_without_privilege_ipvs_is_reported_and_operations_fail_cleanly(box: Box) -> None:
    result = as_nobody(_in_child_as_nobody)
    assert result == {
        "ipvs": False,
        "problem": "IPVS is not available: permission denied (needs root or CAP_NET_ADMIN)",
        "addresses": 2,
        "sysctl": "0",
        "many": ["Operation not permitted", 600],
        "service": "Operation not permitted",
        "address": "Operation not permitted",
        "sysctl_write": "Permission denied",
        "garp": "Operation not permitted",
    }
