"""The limit of benchmark 1 (inside UML): what the kernel itself needs for an ACTIVATE.

A bare process makes the same kernel changes as the helper's ACTIVATE from standby: the
messages the helper's netlink kernel encodes (its `HANDLERS`) for the helper's plan, one
datagram per channel run acked once, then the gratuitous ARP frames in one sendmmsg; all built
and every socket open before its clock starts, which covers only the system calls. The state it
leaves is compared with the helper's. The frames are then sent again with one sendto() each.
Behind the helper's pipe (`--piped`), the same process stands where the helper stands and is
timed as the helper is; as the least helper (`--least`) it also does there what depends on the
ACTIVATE's members, as any helper must once the line is read. So the distance to the limit
splits into the pipe's part, the request's own work, and what the helper does beyond that.
The process itself is bench/bare.py.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cgp_ipvs_helper.core.protocol import logged
from cgp_ipvs_helper.kernel.frames import arp, nd
from cgp_ipvs_helper.kernel.netlink.kernel import HANDLERS, NetlinkKernel
from cgp_ipvs_helper.kernel.netlink.sockets import (
    datagram,
)
from cgp_ipvs_helper.plan.model import Role, Settings
from cgp_ipvs_helper.plan.operations import AddDest, Operation
from cgp_ipvs_helper.plan.planner import (
    _weight,
    announce,
    desired_state,
    plan,
    sysctl_paths,
)
from lab.driver import HelperProcess, commands
from lab.lan import Host
from lab.netns import in_netns
from lab.sniff import ArpWatch
from lab.standby import FE_IP, activate, snapshot, standby, vips_in

from .bare import PROTOCOLS
from .report import Table, Target, median, mm, ms

LIMIT_CASES = ((256, 4), (8, 4))  # ACTIVATE within 2x of the limit for these
PAIRS = 15  # helper and limit runs of those cases at least (their medians decide the target)
PARTS = ("netlink_s", "frames_s", "frames_one_send_each_s")  # the columns after the limit
Runs = dict[tuple[int, int], list[dict[str, Any]]]


def build(vipfile: str, members: list[str], mac: bytes) -> dict[str, Any]:
    """In the frontend's namespace, in standby: the helper's ACTIVATE, encoded by its kernel;
    and for the least helper (`least`) the same less what depends on the members (`_least`)."""
    vips, kernel, runs = vips_in(vipfile), NetlinkKernel(), []
    settings = Settings(vipfile=vipfile, iface="eth0")
    try:
        desired = desired_state(settings, vips, Role.ACTIVE, members, FE_IP)
        ops = plan(desired, kernel.observe(sysctl_paths("eth0"))) + announce(vips, "eth0")
        for op in ops:
            channel = HANDLERS[type(op)].channel
            if channel is None:
                raise RuntimeError(f"an operation the limit cannot batch: {op}")
            if not runs or runs[-1][0] != channel:
                runs.append((channel, [], []))
            runs[-1][1].append(HANDLERS[type(op)].run(kernel, op))
            runs[-1][2].append(op)
    finally:
        kernel.close()
    own, others = (_weight(settings, Role.ACTIVE, is_self) for is_self in (True, False))
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
        last = seq + len(requests) - 1  # one datagram as the helper frames it, the last acked
        datagrams.append((PROTOCOLS[channel], last, datagram(requests, seq)))
        seq = last + 1
    return {
        "datagrams": datagrams,
        "frames": frames,
        "counts": dict(counts),
        "vips": len(vips),
        "least": _least(runs, datagrams, (FE_IP, own, others)),
    }


def _least(
    runs: list[tuple[str, list[Any], list[Operation]]],
    datagrams: list[tuple[int, int, bytes]],
    weights: tuple[str, int, int],
) -> dict[str, Any]:
    """What the least helper keeps while standby: the limit's datagrams but the one holding the
    real servers (None), and for that one its protocol and the requests before and after the
    real servers (`around`); the real servers' services and message type (the IPVS family's
    id); the log lines before and after theirs; (self, its weight, the others')."""
    every = [op for _channel, _requests, ops in runs for op in ops]
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


@contextmanager
def _from_standby(
    tag: str, vipfile: str, members: list[str]
) -> Iterator[tuple[Host, Host, Path, dict[str, Any]]]:
    """(fe, client, path, data): the helper's standby with the helper killed (its state stays),
    and the limit's data built there, pickled at `path` for the bare process."""
    with standby(tag, vipfile) as (helper, fe, client), tempfile.TemporaryDirectory() as tmp:
        helper.kill()
        path = Path(tmp, "limit.pickle")
        with in_netns(fe.ns):
            data = build(vipfile, members, bytes.fromhex(fe.mac.replace(":", "")))
        path.write_bytes(pickle.dumps(data))
        yield fe, client, path, data


def measure(vipfile: str, members: list[str]) -> dict[str, Any]:
    """One limit run from the helper's standby; its times and the state."""
    with _from_standby("lim", vipfile, members) as (fe, _client, path, data):
        argv = [sys.executable, "-m", "bench.bare", str(path)]
        out = fe.call(lambda: subprocess.run(argv, capture_output=True, text=True))
        if out.returncode != 0:
            raise RuntimeError(f"bench.limit failed: {out.stderr[-500:]}")
        return {**json.loads(out.stdout), "counts": data["counts"], "state": snapshot(fe)}


def measure_piped(vipfile: str, members: list[str], least: bool = False) -> dict[str, Any]:
    """The limit answering over the helper's pipe (`piped`), or the least helper, from the
    helper's standby, timed as the helper's ACTIVATE is, ARP watch included: its OK, its first
    ARP, the state and the lines before its OK."""
    with _from_standby("lst" if least else "pip", vipfile, members) as (fe, client, path, data):
        argv = [sys.executable, "-m", "bench.bare", str(path), "--least" if least else "--piped"]
        bare_ = HelperProcess(fe, argv=argv, timed=True)
        try:
            bare_.wait_started(timeout=60)
            watch = ArpWatch(client.ns, fe.mac, vips_in(vipfile))
            reply = activate(bare_, members, data["vips"])
            arp_at = watch.first()
            bare_.close_stdin()
            bare_.wait(30)
        finally:
            bare_.kill()
        errors = json.loads(Path(f"{path}.json").read_text())["errors"]
        arp_s = arp_at and arp_at - reply.sent
        return {
            "ok_s": reply.seconds,
            "arp_s": arp_s,
            "errors": errors,
            "state": snapshot(fe),
            "cmds": commands(reply.before),
        }


def table(runs: Runs, pairs: Runs) -> tuple[Table, list[Target]]:
    """The helper's ACTIVATE -> OK beside the limit, per case, with more `pairs` of both for
    some; the targets of LIMIT_CASES."""
    t = Table(
        "ACTIVATE against the kernel's own limit (inside user-mode Linux)",
        "VIPs x members | runs | messages (IPVS + address) | frames | limit ms | "
        "of it netlink ms | of it frames ms (sendmmsg) | frames ms, one sendto() each | "
        "helper OK ms | helper / limit | same state".split(" | "),
    )
    targets = []
    for (v, m), rs in runs.items():
        rs = rs + pairs.get((v, m), [])
        ls, hs = [r["limit"] for r in rs], [r["helper"] for r in rs]
        total, ok, n = [x["total_s"] for x in ls], [h["ok_s"] for h in hs], ls[0]["counts"]
        ratio = median(ok) / median(total)
        cells = [f"{v} x {m}", len(rs), f"{n.get('genl', 0)} + {n.get('rtnl', 0)}"]
        cells.append(n.get("frames", 0))
        cells += [mm(total, 1000, 2, 1), *(ms(median([x[k] for x in ls]), 2) for k in PARTS)]
        same = all(x["state"] == h["state"] for x in ls for h in hs)
        t.add(*cells, mm(ok, 1000, 2, 1), f"{ratio:.2f}x", "yes" if same else "NO")
        if (v, m) in LIMIT_CASES:
            name = f"{v} VIPs x {m} members: OK within 2x of the limit"
            targets.append(Target("activation", name, "<= 2x", f"{ratio:.2f}x", ratio <= 2))
    t.notes += [
        "limit = a bare process making the same kernel changes as the helper's ACTIVATE from "
        "the same standby state: the messages the helper's netlink kernel encodes for the "
        "helper's plan, one datagram per protocol acked once, then the gratuitous ARP frames "
        "in one sendmmsg; its clock covers only the system calls (bench/limit.py).",
        "same state: the limit's IPVS services, real servers, sync daemons and addresses equal "
        "the helper's in every run. helper OK: from writing ACTIVATE to reading OK, so it also "
        "holds the pipe both ways, the plan, the encoding, the log lines and their write.",
        "frames, one sendto() each: the same frames again after the timed part.",
        f"runs: medians of the bench's runs of every case, and of at least {PAIRS} for the "
        "target cases (more helper and limit runs in turn): their ratio is the target, as a "
        "median of a few runs moves between runs of the bench.",
    ]
    return t, targets


def piped_table(runs: Runs, pairs: Runs) -> Table:
    """LIMIT_CASES: the helper against the limit, the limit behind the helper's pipe and
    the least helper behind it, so the distance splits into the pipe's part, the part any
    Python helper spends on the request, and the helper's own beyond that."""
    cases = [vm for vm in LIMIT_CASES if vm in runs]
    t = Table(
        "Where the distance to the limit goes: the limit and the least helper behind the "
        "helper's pipe (inside user-mode Linux)",
        ["ms (median, min-max)", *(f"{v} x {m}" for v, m in cases)],
    )
    rows: dict[str, list[str]] = {}
    for vm in cases:
        rs = runs[vm] + pairs.get(vm, [])
        lim = median([r["limit"]["total_s"] for r in rs])
        times = {k: [r[k]["ok_s"] for r in rs] for k in ("piped", "least", "helper")}
        pipe, least, ok = (median(times[k]) for k in ("piped", "least", "helper"))
        parts = {
            "limit: the system calls alone": _span([r["limit"]["total_s"] for r in rs]),
            "the limit behind the pipe: ACTIVATE written -> OK read": _span(times["piped"]),
            "the least helper behind the pipe: ACTIVATE written -> OK read": _span(times["least"]),
            "helper: ACTIVATE written -> OK read": _span(times["helper"]),
            "of the helper's: the pipe, the wake-up, the read (limit behind the pipe - limit)": (
                ms(pipe - lim, 2)
            ),
            "of the helper's: the request's own work in Python (least helper - limit behind "
            "the pipe)": ms(least - pipe, 2),
            "of the helper's: its own beyond the least helper": ms(ok - least, 2),
            **{
                f"first gratuitous ARP after: {name}": _span(
                    [r[k]["arp_s"] for r in rs if r[k]["arp_s"]]
                )
                for k, name in (
                    ("piped", "the limit behind the pipe"),
                    ("least", "the least helper"),
                    ("helper", "the helper"),
                )
            },
            "the limit behind the pipe / limit": f"{pipe / lim:.2f}x",
            "the least helper / limit": f"{least / lim:.2f}x",
            "helper / limit": f"{ok / lim:.2f}x",
            "same state, and the least helper logs the helper's lines (every run)": "yes"
            if all(
                r[k]["state"] == r["helper"]["state"] and r[k]["errors"] == 0
                for r in rs
                for k in ("piped", "least")
            )
            and all(r["least"]["cmds"] == r["helper"]["cmds"] for r in rs)
            else "NO",
        }
        for name, cell in parts.items():
            rows.setdefault(name, []).append(cell)
    for name, cells in rows.items():
        t.add(name, *cells)
    t.notes += [
        "the limit behind the pipe = the limit's process (bench/limit.py --piped) standing "
        "where the helper stands: started from the same standby, it answers the INTF, waits "
        "idle in read() like the helper in select(), reads the ACTIVATE line, sends the "
        "same prebuilt messages and frames, writes OK, and waits for the end of input; timed "
        "by the same reader as the helper, from writing ACTIVATE to reading OK (the same runs "
        "as the table above). No helper behind CGP's pipe answers sooner.",
        "the least helper (--least) = the same process, but with only what does not depend on "
        "the members kept while standby, as the helper keeps it: once the line is read it "
        "splits it, orders the members (checking each is an address), makes the real "
        "servers' requests (the helper's encoder and kept parts) and their log lines, joins "
        "them to the kept messages and lines, sends, and writes the log and OK. It skips what "
        "the helper checks: the interface, the members against the VIPs and the host's "
        "addresses, the device's MAC; and its state. The smallest Python answer to this "
        "request we could write: its distance to the limit is not the helper's to close.",
    ]
    return t


def _span(seconds: list[float]) -> str:
    return mm(seconds, 1000, 2, 2)
