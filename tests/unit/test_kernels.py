"""Both kernels: the whole `Kernel` contract, a handler for every operation type, and (with
stand-in sockets) how the netlink kernel groups operations into batches."""

from __future__ import annotations

import errno
import typing

import pytest
from pyroute2.netlink.generic.ipvs import ipvsmsg

from cgp_ipvs_helper.kernel import memory
from cgp_ipvs_helper.kernel.interface import Kernel
from cgp_ipvs_helper.kernel.netlink import ipvs as ipvswire
from cgp_ipvs_helper.kernel.netlink import kernel as netlink
from cgp_ipvs_helper.kernel.netlink import sockets as nlsocket
from cgp_ipvs_helper.kernel.netlink import wire as nlwire
from cgp_ipvs_helper.kernel.testing import FakeKernel
from cgp_ipvs_helper.plan.model import Address, Daemon, Dest, Service, ServiceKey, Sysctl
from cgp_ipvs_helper.plan.operations import (
    AddAddress,
    AddDest,
    AddDests,
    AddService,
    DelAddress,
    Operation,
    SendGarp,
    SetSysctl,
    StopDaemon,
)

OPERATION_TYPES = set(typing.get_args(Operation))
KEY = ServiceKey("tcp", "198.51.100.7", 0)


@pytest.mark.parametrize("table", [netlink.HANDLERS, memory.HANDLERS], ids=["netlink", "memory"])
def test_every_operation_type_has_exactly_one_handler(table: dict) -> None:
    assert set(table) == OPERATION_TYPES


@pytest.mark.parametrize("kernel", [netlink.NetlinkKernel, memory.MemoryKernel, FakeKernel])
def test_each_kernel_has_the_whole_contract(kernel: type) -> None:
    k = kernel()  # the netlink kernel opens its sockets on first use: nothing here
    try:
        assert isinstance(k, Kernel)
        assert k.ipvs_problem is None
    finally:
        k.close()


def test_the_memory_kernel_applies_many_through_apply_and_goes_on_after_a_failure() -> None:
    k = FakeKernel()
    k.fail[AddDest] = "refused"
    ops = [AddService(Service(KEY, "wlc", 15)), AddDest(Dest(KEY, "192.0.2.11", 1))]
    ops.append(StopDaemon(Daemon("master", "eth0", 0)))
    errors = k.apply_many(ops)
    assert [(e.op, e.reason) for e in errors] == [(ops[1], "refused"), (ops[2], "No such process")]
    assert k.take() == [ops[0]]
    with pytest.raises(TypeError):
        k.apply_many(["not an operation"])  # type: ignore[list-item]


class Socket:
    """A stand-in netlink socket: records each batch, fails the requests it is told to."""

    def __init__(self, name: str, events: list) -> None:
        self.name, self.events = name, events
        self.fail: dict[int, int] = {}

    def batch(self, requests: list) -> dict[int, int]:
        self.events.append((self.name, [mtype for mtype, _flags, _body in requests]))
        return {i: code for i, code in self.fail.items() if i < len(requests)}

    def family(self, _name: str) -> int:
        return 42

    def forget(self, _name: str) -> None:
        self.events.append(("forget", []))

    def close(self) -> None:
        """Nothing to close."""


def test_consecutive_operations_of_one_channel_travel_in_one_batch(monkeypatch) -> None:
    events: list = []
    rtnl, genl = Socket("rtnl", events), Socket("genl", events)
    k = netlink.NetlinkKernel(route=rtnl, generic=genl)  # type: ignore[arg-type]

    def direct(_kernel, op) -> None:
        events.append(("direct", [op.sysctl.path]))

    monkeypatch.setitem(netlink.HANDLERS, SetSysctl, netlink.Handler(None, direct))
    a, b = Address("198.51.100.7", "lo"), Address("198.51.100.8", "lo")
    service = Service(KEY, "wlc", 15)
    no_dev = AddAddress(Address("198.51.100.9", "nosuch0"))
    ops: list[Operation] = [
        AddAddress(a),
        DelAddress(b),
        AddService(service),
        AddDest(Dest(KEY, "192.0.2.11", 1)),
        SetSysctl(Sysctl("net/ipv4/vs/backup_only", "1")),
        AddAddress(b),
        no_dev,  # cannot be encoded: fails alone, after the batch before it was sent
        StopDaemon(Daemon("master", "lo", 0)),
    ]
    rtnl.fail = {1: errno.EADDRNOTAVAIL}
    genl.fail = {0: errno.ENOENT}
    errors = k.apply_many(ops)
    assert events == [
        ("rtnl", [20, 21]),  # RTM_NEWADDR, RTM_DELADDR
        ("genl", [42, 42]),
        ("forget", []),  # ENOENT: perhaps ip_vs was reloaded with another family id
        ("direct", ["net/ipv4/vs/backup_only"]),
        ("rtnl", [20]),
        ("genl", [42]),
        ("forget", []),
    ]
    assert [(e.op, e.reason) for e in errors] == [
        (ops[1], "Cannot assign requested address"),
        (ops[2], "No such file or directory"),
        (no_dev, "No such device"),
        (ops[7], "No such file or directory"),
    ]


def test_prepared_operations_are_sent_as_built_until_a_failure(monkeypatch) -> None:
    events: list = []
    genl = Socket("genl", events)
    k = netlink.NetlinkKernel(route=Socket("rtnl", events), generic=genl)  # type: ignore[arg-type]
    built: list = []
    row = netlink.HANDLERS[AddService]

    def counted(kernel, op):
        built.append(op)
        return row.run(kernel, op)

    monkeypatch.setitem(netlink.HANDLERS, AddService, netlink.Handler("genl", counted))
    ops = [AddService(Service(ServiceKey("tcp", "198.51.100.7", p), "wlc", 0)) for p in (1, 2)]
    k.prepare(ops)
    assert built == ops
    assert k.apply_many(ops) == [] and built == ops  # sent as prepared: nothing built again
    assert k.apply_many([AddService(ops[0].service)]) == [] and len(built) == 3  # an equal one
    genl.fail = {0: errno.EEXIST}
    assert len(k.apply_many(ops)) == 1 and len(built) == 3
    genl.fail = {}
    assert k.apply_many(ops) == [] and len(built) == 5  # a failure dropped the preparation
    k.prepare(ops)
    indexes = [{"eth0": 2}, {"eth0": 2}, {"eth0": 7}]
    k._route.addresses = lambda: k._route._ifindex.update(indexes.pop(0)) or ()  # type: ignore
    k._ipvs.state = lambda _tables=True: (frozenset(), frozenset(), frozenset())  # type: ignore[method-assign]
    k.observe(frozenset())  # the device indexes read the first time: dropped
    assert k.apply_many(ops) == [] and len(built) == 9
    k.prepare(ops)
    k.observe(frozenset())  # the same again: kept
    assert k.apply_many(ops) == [] and len(built) == 11
    k.observe(frozenset())  # a device has a new index: dropped
    assert k.apply_many(ops) == [] and len(built) == 13
    assert [name for name, _ in events] == ["genl"] * 7


class Frames:
    """A stand-in frame sender: records each round of requests."""

    limit = 0

    def __init__(self) -> None:
        self.rounds: list[list] = []

    def forget_macs(self) -> None:
        """The MAC is read when a round is sent (FrameSender._send_run)."""

    def prepare(self, requests: list) -> None:
        """Nothing to lay out."""

    def batch(self, requests: list) -> dict[int, int]:
        self.rounds.append(list(requests))
        return {}

    def failed(self, codes: set[int]) -> None:
        """Nothing to forget."""

    def close(self) -> None:
        """Nothing to close."""


def test_prepared_frames_are_sent_as_built(monkeypatch) -> None:
    frames = Frames()
    k = netlink.NetlinkKernel(frames=frames)  # type: ignore[arg-type]
    built: list = []

    def counted(_kernel, op):
        built.append(op)
        return ("eth0", 2 if op.reply else 1, op.ip)

    monkeypatch.setitem(netlink.HANDLERS, SendGarp, netlink.Handler("frames", counted))
    ops = [SendGarp("198.51.100.7", "eth0", reply) for reply in (False, True)]
    k.prepare(ops)
    assert k.apply_many(ops) == [] and built == ops  # the round as prepared
    assert k.apply_many([SendGarp("198.51.100.7", "eth0", False)]) == [] and len(built) == 3
    assert frames.rounds[0] == [("eth0", 1, "198.51.100.7"), ("eth0", 2, "198.51.100.7")]


def test_the_real_servers_of_an_activation_go_in_full_datagrams_and_fail_one_by_one() -> None:
    events: list = []
    genl = Socket("genl", events)
    k = netlink.NetlinkKernel(generic=genl)  # type: ignore[arg-type]
    keys = tuple(ServiceKey(p, f"203.0.113.{i}", 0) for i in range(1, 201) for p in ("tcp", "udp"))
    block = AddDests(keys, (("192.0.2.11", 100), ("192.0.2.12", 100), ("192.0.2.13", 7)))
    services = [AddService(Service(k, "wlc", 15)) for k in keys[:100]]
    k.prepare(services)
    genl.fail = {1023: errno.EEXIST}  # the last of the first datagram: the block's 924th
    errors = k.apply_many([*services, block, StopDaemon(Daemon("backup", "eth0", 0))])
    assert [len(mtypes) for _name, mtypes in events] == [nlsocket.BATCH, 100 + 1200 + 1 - 1024]
    assert [(e.op, e.reason) for e in errors] == [(block.each()[923], "File exists")]
    assert block.part(923) == AddDest(Dest(keys[307], "192.0.2.13", 7))
    assert len(block) == 1200 and len(set(block.each())) == 1200


def test_an_activations_real_servers_are_the_requests_of_each_one() -> None:
    keys = [ServiceKey("tcp", "203.0.113.1", 25), ServiceKey("udp", "203.0.113.1", 5060)]
    keys += [ServiceKey("tcp", "2001:db8::1", 25), ServiceKey("tcp", "2001:db8::2", 25)]
    for family, servers in (
        (keys[:2], (("192.0.2.12", 100), ("192.0.2.11", 0))),
        (keys[2:], (("2001:db8::b", 100),)),
    ):
        block = AddDests(tuple(family), servers)
        expected = [
            (42, 0, ipvswire.dest_request(ipvswire.CMD_NEW_DEST, d.dest, True))
            for d in block.each()
        ]
        assert list(ipvswire.dest_requests(42, block.services, block.servers)) == expected


@pytest.mark.parametrize("ip", ["192.0.2.12", "2001:db8::b"])
@pytest.mark.parametrize("port", [0, 5060, 65535])
@pytest.mark.parametrize("weight", [0, 100, 0xFFFFFFFF])
def test_a_real_server_request_says_what_pyroute2_and_our_reader_read(
    ip: str, port: int, weight: int
) -> None:
    vip = "2001:db8::1" if ":" in ip else "203.0.113.1"
    d = Dest(ServiceKey("udp", vip, port), ip, weight)
    for cmd, full in ((ipvswire.CMD_NEW_DEST, True), (ipvswire.CMD_DEL_DEST, False)):
        body = ipvswire.dest_request(cmd, d, full)
        msg = nlwire.NLMSGHDR.pack(16 + len(body), 42, 1, 1, 0) + body
        decoded = ipvsmsg(msg)
        decoded.decode()
        dest = dict(decoded.get_attr("IPVS_CMD_ATTR_DEST")["attrs"])
        assert decoded["cmd"] == cmd
        # pyroute2 leaves the address attribute's own 4-byte header on
        assert dest.pop("IPVS_DEST_ATTR_ADDR")[4:] == nlwire.packed(ip)[1]
        assert dest.pop("IPVS_DEST_ATTR_PORT") == port
        full_attrs = {"IPVS_DEST_ATTR_FWD_METHOD": 3, "IPVS_DEST_ATTR_WEIGHT": weight}
        full_attrs |= {"IPVS_DEST_ATTR_U_THRESH": 0, "IPVS_DEST_ATTR_L_THRESH": 0}
        assert dest == (full_attrs if full else {})  # 3: direct routing
        if full:
            assert ipvswire.dest_from(d.service, msg) == d  # direct routing, this weight


def test_a_datagram_numbers_its_messages_and_asks_only_the_last_for_the_ack() -> None:
    requests = [(20, 0x600, b"\x02\x20\x00\x00"), (42, 0, b""), (21, 0, b"\x0a\x80\x00\x00" * 3)]
    data = nlsocket.datagram(requests, 7)
    heads = [
        nlwire.NLMSGHDR.pack(20, 20, 0x601, 7, 0),
        nlwire.NLMSGHDR.pack(16, 42, 0x1, 8, 0),
        nlwire.NLMSGHDR.pack(28, 21, 0x5, 9, 0),  # NLM_F_REQUEST | NLM_F_ACK
    ]
    assert data == b"".join(head + body for head, (_t, _f, body) in zip(heads, requests))
