"""Every way the benchmarks make an ACTIVATE's kernel changes from the helper's standby
(`lab.standby`), one runner for all: `activate_by` the helper itself; or, the helper killed (its
standby state stays), the limit's process (lab/bare.py) from the messages the helper's netlink
kernel encodes for the helper's plan (`build`), alone (`limit`), behind the helper's pipe
(`piped`), or as the least helper (`least`); the helper's engine in-process on a `Recorder`,
each step's changes sent by the limit's process (`send_bare`); `classic`, the commands the
helper logs run by bash one process each until the client sees the first ARP; and
`steering_alone`, the member map's steering changes alone.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs

from cgp_ipvs_helper.config.memberfile import load_members
from cgp_ipvs_helper.core.protocol import logged
from cgp_ipvs_helper.errors import KernelError
from cgp_ipvs_helper.kernel.frames import arp, nd
from cgp_ipvs_helper.kernel.netlink.kernel import HANDLERS, NetlinkKernel
from cgp_ipvs_helper.kernel.netlink.sockets import datagram
from cgp_ipvs_helper.plan.model import KernelState, Role, Settings, TcState
from cgp_ipvs_helper.plan.operations import AddDest, Operation, SetSysctl
from cgp_ipvs_helper.plan.outgoing import MemberMap
from cgp_ipvs_helper.plan.planner import (
    DEFAULT_PORTS,
    announce,
    desired,
    plan,
    sysctl_paths,
    weights,
)

from .bare import PROTOCOLS
from .driver import HelperProcess, commands
from .netns import in_netns
from .sniff import ArpWatch
from .standby import FE_IP, activate, snapshot, standby, vips_in

WAYS = ("helper", "limit", "piped", "least")
SAMPLE_CAPS = {"ipvsadm -A": 16, "ipvsadm -a": 64, "ip address add": 16}


def activate_by(way: str, vipfile: str, members: list[str], *options: str) -> dict[str, Any]:
    """One ACTIVATE from the helper's standby by `way` (WAYS): the limit's times and counts; for
    the others, as the reader sees them, OK and first ARP, with the commands logged before the
    OK; for all, the state left (and the errors of the limit's process behind the pipe)."""
    vips, tmp = vips_in(vipfile), tempfile.TemporaryDirectory()
    with standby(way[:3], vipfile, *options) as (helper, fe, client), tmp:
        proc, path = helper, Path(tmp.name, "limit.pickle")
        if way != "helper":
            helper.kill()
            with in_netns(fe.ns):
                data = build(vipfile, members, bytes.fromhex(fe.mac.replace(":", "")))
                if way == "limit":
                    return {**send_bare(data), "counts": data["counts"], "state": snapshot(fe)}
            path.write_bytes(pickle.dumps(data))
            argv = [sys.executable, "-m", "lab.bare", str(path), way]
            proc = HelperProcess(fe, argv=argv, timed=True)
        try:
            if proc is not helper:
                proc.wait_started(timeout=60)
            watch = ArpWatch(client.ns, fe.mac, vips)
            reply, arp_at = activate(proc, members, len(vips)), watch.first()
            if proc is not helper:
                proc.close_stdin()
                proc.wait(30)
        finally:
            proc.kill()
        errors = 0 if way == "helper" else json.loads(Path(f"{path}.json").read_text())["errors"]
        arp_s, cmds, state = arp_at and arp_at - reply.sent, commands(reply.before), snapshot(fe)
        return {
            "ok_s": reply.seconds,
            "arp_s": arp_s,
            "cmds": cmds,
            "errors": errors,
            "state": state,
        }


def send_bare(data: dict[str, Any]) -> dict[str, Any]:
    """The limit's process (lab/bare.py) making `data`'s sysctls, datagrams and frames from this
    thread's namespace: its times; an error if it failed or the kernel refused a message."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "limit.pickle")
        path.write_bytes(pickle.dumps(data))
        argv = [sys.executable, "-m", "lab.bare", str(path), "limit"]
        done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the limit's process failed: {done.stderr[-500:]}")
    sent = json.loads(done.stdout)
    if sent["errors"]:
        raise RuntimeError(f"the kernel refused {sent['errors']} of the limit's messages")
    return sent


class Recorder(NetlinkKernel):
    """Real mode's netlink kernel for the helper's engine in-process: what it applies is
    recorded, for the limit's process to make (`send`)."""

    def __init__(self, mac: bytes) -> None:
        super().__init__()
        self.mac = mac
        self.ops: list[Operation] = []

    def apply_many(self, ops: Iterable[Operation]) -> list[KernelError]:
        self.ops += ops
        return []

    def send(self) -> dict[str, Any]:
        """What was recorded, made by the limit's process (`send_bare`): its times, the netlink
        messages and the frames."""
        data, _runs = prebuilt(self, self.ops, self.mac)
        self.ops, frames = [], data["counts"].get("frames", 0)
        sent = send_bare(data)
        return {**sent, "messages": sum(data["counts"].values()) - frames, "frames": frames}


def build(vipfile: str, members: list[str], mac: bytes) -> dict[str, Any]:
    """In the frontend's namespace, in standby: the helper's ACTIVATE (a takeover, as its planner
    plans it) as the limit's process makes it (`prebuilt`); and for the least helper the same
    less what depends on the members (`_least`)."""
    vips, kernel = vips_in(vipfile), NetlinkKernel()
    settings = Settings(vipfile=vipfile, iface="eth0")
    try:
        want = desired(settings, vips, Role.TAKING_OVER, members, FE_IP)
        now = kernel.observe(sysctl_paths("eth0"), guard_dev="eth0")  # the reset guard's too
        ops = plan(want, now) + announce(vips, "eth0")
        data, runs = prebuilt(kernel, ops, mac)
    finally:
        kernel.close()
    weight = weights(settings, Role.TAKING_OVER, members, FE_IP)
    least = _least(ops, runs, data["datagrams"], (FE_IP, weight[FE_IP], weight[members[-1]]))
    return {**data, "vips": len(vips), "least": least}


def prebuilt(
    kernel: NetlinkKernel, ops: Sequence[Operation], mac: bytes
) -> tuple[dict[str, Any], list[tuple[str, list[Any], list[Operation]]]]:
    """`ops` as the limit's process makes them: the sysctls it writes to /proc (no netlink
    channel), the datagrams and frames (`encoded`), the requests per channel; and the runs."""
    runs = runs_of(kernel, [op for op in ops if not isinstance(op, SetSysctl)])
    datagrams, frames, counts = encoded(runs, mac)
    sysctls = [op.sysctl for op in ops if isinstance(op, SetSysctl)]
    return dict(sysctls=sysctls, datagrams=datagrams, frames=frames, counts=dict(counts)), runs


def runs_of(
    kernel: NetlinkKernel, ops: Sequence[Operation]
) -> list[tuple[str, list[Any], list[Operation]]]:
    """The operations as the netlink kernel encodes them: (channel, requests, operations) per
    run of one channel, as the helper batches them."""
    runs: list[tuple[str, list[Any], list[Operation]]] = []
    for op in ops:
        handler = HANDLERS[type(op)]
        if handler.channel is None:
            raise RuntimeError(f"an operation the limit cannot batch: {op}")
        if not runs or runs[-1][0] != handler.channel:
            runs.append((handler.channel, [], []))
        made = handler.run(kernel, op)
        runs[-1][1].extend(made if handler.many else [made])
        runs[-1][2].append(op)
    return runs


def encoded(
    runs: Sequence[tuple[str, list[Any], list[Operation]]], mac: bytes
) -> tuple[list[tuple[int, int, bytes]], list[tuple[int, bytes]], Counter[str]]:
    """The runs as the limit's process sends them: one datagram per netlink run as the helper
    frames it (the last request acked), the frames for one sendmmsg, and the requests per
    channel."""
    datagrams, frames, seq, counts = [], [], 1, Counter[str]()
    for channel, requests, _ops in runs:
        counts[channel] += len(requests)
        if channel == "frames":
            for _dev, kind, addr in requests:
                na = kind == arp.NA
                frames.append(
                    (nd.ETH_P_IPV6, nd.frame(addr, mac))
                    if na
                    else (arp.ETH_P_ARP, arp.frame(mac, addr, kind == arp.REPLY))
                )
            continue
        datagrams.append((PROTOCOLS[channel], seq + len(requests) - 1, datagram(requests, seq)))
        seq += len(requests)
    return datagrams, frames, counts


def _least(
    every: list[Operation],
    runs: list[tuple[str, list[Any], list[Operation]]],
    datagrams: list[tuple[int, int, bytes]],
    weights: tuple[str, int, int],
) -> dict[str, Any]:
    """What the least helper keeps while standby: the limit's datagrams but the one holding the
    real servers (None), and for that one its protocol and the requests before and after the
    real servers (`around`); the real servers' services and message type (the IPVS family's
    id); the log lines of `every` operation before and after theirs; (self, its weight, the
    others')."""
    dests = [i for i, op in enumerate(every) if isinstance(op, AddDest)]
    if dests != list(range(dests[0], dests[-1] + 1)):
        raise RuntimeError("the least helper expects the real servers in one run")
    kept: list[tuple[int, int, bytes] | None] = []
    for (_channel, requests, ops), sent in zip((r for r in runs if r[0] != "frames"), datagrams):
        at = [i for i, op in enumerate(ops) if isinstance(op, AddDest)]
        kept.append(None if at else sent)
        if at:
            around = (sent[0], requests[: at[0]], requests[at[-1] + 1 :])
            family = requests[at[0]][0]
    return {
        "datagrams": kept,
        "around": around,
        "family": family,
        "keys": tuple(dict.fromkeys(every[i].dest.service for i in dests)),
        "log": (
            b"".join(map(logged, every[: dests[0]])),
            b"".join(map(logged, every[dests[-1] + 1 :])),
        ),
        "weights": weights,
    }


def kind(command: str) -> str:
    w = command.split()
    if w[0] == "ipvsadm":
        return "ipvsadm daemon" if "daemon" in w[1] else f"ipvsadm {w[1]}"
    return " ".join(w[:3]) if w[0] == "ip" else w[0]


def segments(cmds: Sequence[str], full: bool) -> list[tuple[str, list[str], list[str]]]:
    """(kind, commands, those run) per run of one kind up to the first arping; a sample keeps
    prerequisites (a real server is only added to a sampled service)."""
    segs: list[tuple[str, list[str], list[str]]] = []
    for c in cmds[: next(i for i, c in enumerate(cmds) if c.startswith("arping ")) + 1]:
        if not segs or segs[-1][0] != kind(c):
            segs.append((kind(c), [], []))
        segs[-1][1].append(c)
    services: set[tuple[str, ...]] = set()
    for k, cs, run in segs:
        if k == "ipvsadm -a" and not full:
            cs = [c for c in cs if tuple(c.split()[2:4]) in services]
        run += cs if full or k not in SAMPLE_CAPS else cs[: SAMPLE_CAPS[k]]
        services |= {tuple(c.split()[2:4]) for c in run if k == "ipvsadm -A"}
    return segs


def classic(vipfile: str, cmds: list[str], full: bool) -> dict[str, Any]:
    """The classic way from standby: the first ARP measured, or extrapolated per kind of command
    (a long list sampled, SAMPLE_CAPS); the state left when run in full."""
    segs = segments(cmds, full)
    with standby("cls", vipfile) as (helper, fe, client), tempfile.TemporaryDirectory() as tmp:
        helper.kill()  # its standby state stays
        script, marks, errors = (Path(tmp, n) for n in ("run.sh", "marks", "err"))
        lines = [f"exec 3>{marks}"]  # $EPOCHREALTIME (no fork) marks the start of each kind
        for i, (k, _cs, run) in enumerate(segs):
            lines += [
                f'echo "{i} $EPOCHREALTIME" >&3',
                *([f"exec {run[0]}"] if k == "arping" else run),
            ]
        script.write_text("\n".join(lines) + "\n")
        ran = sum(len(run) for _k, _cs, run in segs)
        watch = ArpWatch(client.ns, fe.mac, vips_in(vipfile))
        with in_netns(fe.ns), open(errors, "w") as err:
            proc = subprocess.Popen(["bash", "-e", script], stdout=subprocess.DEVNULL, stderr=err)
        try:
            arp_at = watch.first(timeout=30 + 2.0 * ran)
        finally:
            proc.kill()
            proc.wait(30)
        stamps = [float(line.split()[1]) for line in marks.read_text().splitlines()]
        if arp_at is None or len(stamps) != len(segs):
            raise RuntimeError(f"classic script failed: {errors.read_text()[-500:]!r}")
        state = snapshot(fe) if full else None
    ends = [*stamps[1:], arp_at]
    each = {k: (ends[i] - stamps[i]) / len(run) for i, (k, _cs, run) in enumerate(segs)}
    total = sum(len(cs) for _k, cs, _r in segs)
    guess = sum(each[k] * (1 if k == "arping" else len(cs)) for k, cs, _r in segs)
    how = f"all {total} commands" if full else f"extrapolated from {ran} of {total} commands"
    arp_s = arp_at - stamps[0] if full else guess
    return {"arp_s": arp_s, "how": how, "each_s": each, "state": state}


def steers(command: str) -> bool:
    """A change of the steering: tc, or an IPVS firewall-mark service or server."""
    return command.startswith("tc ") or " -f " in command


def steering_alone(vipfile: str, path: str, members: list[str], reps: int) -> list[list[float]]:
    """From standby, the helper killed: the steering of the member map `path` (its owners' MACs
    known) applied and removed, each in one call, `reps` times (9 at least): the seconds of the
    apply, of an observe that reads tc and of one that does not."""
    vips, none, spent = vips_in(vipfile), frozenset(), [[], [], []]
    owners = load_members(path, [p for _, p in DEFAULT_PORTS], vips)
    settings = Settings(vipfile=vipfile, iface="eth0", member_map=path)
    # the owners' MACs as the neighbour table would give them: every range sent to its owner
    macs = frozenset((m.ip, f"02:00:00:00:ff:{i:02x}") for i, m in enumerate(owners))
    now = KernelState(tc=TcState(mac="02:00:00:00:ff:fe", neighbours=macs))
    ranges = MemberMap(path, tuple(owners), True)
    want = desired(settings, vips, Role.ACTIVE, members, FE_IP, none, ranges, now)
    want = attrs.evolve(want, services=none, dests=none)  # the steering changes alone
    undo = attrs.evolve(want, filters=none)
    with standby("stc", vipfile) as (helper, fe, _client), in_netns(fe.ns):
        helper.kill()
        kernel = NetlinkKernel()
        try:
            for _ in range(max(reps, 9)):
                ops = [op for op in plan(want, kernel.observe(none, "eth0")) if steers(str(op))]
                t0 = time.perf_counter()
                failures = kernel.apply_many(ops)
                t1 = time.perf_counter()
                busy = kernel.observe(none, "eth0")
                t2 = time.perf_counter()
                kernel.observe(none)
                for each, t in zip(spent, (t1 - t0, t2 - t1, time.perf_counter() - t2)):
                    each.append(t)
                if failures:
                    raise RuntimeError(f"steering changes failed: {failures[:3]}")
                kernel.apply_many([op for op in plan(undo, busy) if steers(str(op))])
        finally:
            kernel.close()
    return spent
