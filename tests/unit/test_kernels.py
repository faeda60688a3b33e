"""Both kernels: the whole `Kernel` contract, a handler for every operation type, and (with
stand-in sockets) how the netlink kernel groups operations into batches."""

from __future__ import annotations

import errno
import typing

import pytest

from cgp_ipvs_helper import memory, netlink
from cgp_ipvs_helper.kernel import Kernel
from cgp_ipvs_helper.model import Address, Daemon, Dest, Service, ServiceKey, Sysctl
from cgp_ipvs_helper.operations import (
    AddAddress,
    AddDest,
    AddService,
    DelAddress,
    Operation,
    SendGarp,
    SetSysctl,
    StopDaemon,
)
from cgp_ipvs_helper.testing import FakeKernel

OPERATION_TYPES = set(typing.get_args(Operation))
KEY = ServiceKey("tcp", "198.51.100.7", 0)


@pytest.mark.parametrize("table", [netlink.HANDLERS, memory.HANDLERS], ids=["netlink", "memory"])
def test_every_operation_type_has_exactly_one_handler(table: dict) -> None:
    assert len(OPERATION_TYPES) == 17  # 13, steering filters (AddClsact, Add/DelFilter), AddDests
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
    k = netlink.NetlinkKernel()
    rtnl = k._route.sock = Socket("rtnl", events)  # type: ignore[assignment]
    genl = k._ipvs.sock = Socket("genl", events)  # type: ignore[assignment]

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
    k = netlink.NetlinkKernel()
    k._route.sock = Socket("rtnl", events)  # type: ignore[assignment]
    genl = k._ipvs.sock = Socket("genl", events)  # type: ignore[assignment]
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
    k._ipvs.state = lambda: (frozenset(), frozenset(), frozenset())  # type: ignore[method-assign]
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
    k = netlink.NetlinkKernel()
    frames = k._frames = k._channels["frames"] = Frames()  # type: ignore[assignment]
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
