"""Benchmark (inside UML): a member leaving or joining against a takeover, each beside the kernel's
own cost of its messages, at sizes up to 4,096 VIPs; start-up and memory at each size.

The helper (a process on its pipes, real mode): start -> INTF answered, ACTIVATE with every
member from standby (the takeover), without the last member (leaves), with every member again
(joins), each ACTIVATE -> OK. The limit, from the same standby in fresh namespaces: the helper's
own engine, in-process with a kernel that records instead of applying, plans each step; its
operations are encoded by the netlink kernel's HANDLERS and sent pre-encoded by the limit's
bare process (one datagram per channel run, the frames in one sendmmsg; its clock covers the
system calls only), and the state it leaves is compared with the helper's. There the refresh
(the kernel read back and planned in full, which every ACTIVATE to an active balancer did
before) is timed too.

The lab's IPv4 space holds 512 VIPs (203.0.113.0/24, 198.51.100.0/24); larger cases add IPv6
/120s (one per /64), with a member map giving each member an IPv6 address.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cgp_ipvs_helper.core.engine import Helper
from cgp_ipvs_helper.core.session import HANDOVER_S
from cgp_ipvs_helper.kernel.netlink.kernel import HANDLERS, NetlinkKernel
from cgp_ipvs_helper.plan.model import Settings
from cgp_ipvs_helper.plan.operations import Operation
from lab.driver import HelperProcess, helper_argv, write_vipfile
from lab.lan import Lan, unique
from lab.netns import in_netns
from lab.standby import FE_IP, activate, members_of, snapshot, standby, vips_in
from lab.ways import encoded, runs_of

from .report import Table, Target, median, mm, repeat, result

CASES = ((256, 4), (256, 64), (1024, 16), (4096, 4))
STEPS = ("takeover", "leave", "join")
LIMIT_CASES = ((256, 4), (4096, 4))  # a change within 2x of its limit at these
REPS = 3  # at most: a run of every case takes minutes (4,096 VIPs start and take over slowly)


def entries(vips: int) -> list[str]:
    v4 = ["203.0.113.0/24", "198.51.100.0/24"][: max(1, min(2, vips // 256))]
    return v4 + [f"2001:db8:10:{k:x}::/120" for k in range(vips // 256 - len(v4))]


def _files(tmp: str, vips: int, members: Sequence[str]) -> tuple[str, list[str], bool]:
    """The VIP file, the helper's options (a member map when there are IPv6 VIPs), IPv6 or not."""
    vipfile = write_vipfile(f"{tmp}/vips{vips}", entries(vips))
    if vips <= 512:
        return vipfile, [], False
    path = f"{tmp}/members{vips}x{len(members)}"
    with open(path, "w") as f:
        for i, ip in enumerate(members):
            f.write(f"{ip} {40000 + 300 * i}-{40299 + 300 * i} 2001:db8::{11 + i:x}\n")
    return vipfile, ["--member-map", path], True


def _steps(members: list[str]) -> list[tuple[str, list[str]]]:
    return list(zip(STEPS, (members, members[:-1], members)))


def _vm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def helper_run(vipfile: str, options: list[str], members: list[str], ipv6: bool) -> dict:
    """Start (until the INTF answer), then the three ACTIVATEs; times, states, memory."""
    out: dict[str, Any] = {"states": {}}
    with Lan(unique("mem"), ipv6=ipv6) as lan:
        fe = lan.add_host("fe", FE_IP)
        argv = [*helper_argv(), "-f", vipfile, "-i", "eth0", *options]
        t0 = time.time()
        helper = HelperProcess(fe, argv=argv, timed=True)
        try:
            out["start_s"] = helper.wait_started(timeout=600).answered - t0
            time.sleep(0.5)
            out["standby_kib"] = _vm_kib(helper.proc.pid)
            vips = len(vips_in(vipfile))
            for step, listed in _steps(members):
                out[step] = activate(helper, listed, vips).seconds
                if step == "takeover":  # its end (the backup daemon stops) comes first
                    time.sleep(HANDOVER_S + 0.5)
                out["states"][step] = snapshot(fe)
            time.sleep(2.5)  # the announcement repeats are done
            out["active_kib"] = _vm_kib(helper.proc.pid)
        finally:
            helper.kill()
    return out


class Recorder(NetlinkKernel):
    """The netlink kernel of real mode, but what the helper applies is only recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[Operation] = []

    def apply_many(self, ops: Sequence[Operation]) -> list:  # type: ignore[override]
        self.ops += ops
        return []


def encode(kernel: NetlinkKernel, ops: Sequence[Operation], mac: bytes) -> dict[str, Any]:
    """The operations as the netlink kernel encodes them, as the limit's process sends them."""
    datagrams, frames, counts = encoded(runs_of(kernel, ops), mac)
    messages = sum(n for channel, n in counts.items() if channel != "frames")
    return {"datagrams": datagrams, "frames": frames, "messages": messages, "sent": len(frames)}


def limit_run(vipfile: str, options: list[str], members: list[str], ipv6: bool) -> dict:
    """Each step planned by the helper's engine in-process and sent pre-encoded by the bare
    process, from the helper's standby; then the refresh (read back, planned in full) timed."""
    out: dict[str, Any] = {"states": {}, "messages": {}}
    settings = Settings(vipfile=vipfile, iface="eth0", member_map=(options or ["", ""])[1])
    with standby("mlim", vipfile, *options, ipv6=ipv6) as (helper, fe, _client):
        helper.kill()  # its standby stays
        mac = bytes.fromhex(fe.mac.replace(":", ""))
        with tempfile.TemporaryDirectory() as tmp, in_netns(fe.ns):
            kernel, now = Recorder(), [1000.0]
            engine = Helper(settings, kernel, clock=lambda: now[0], link_exists=lambda _dev: True)
            engine.start()
            for i, (step, listed) in enumerate(_steps(members)):
                kernel.ops = []
                reply = engine.handle(f"{i + 1} ACTIVATE " + " ".join(listed))
                if reply.response is None or reply.response.kind != "OK":
                    raise RuntimeError(f"{step}: {reply.response}")
                # what has no netlink channel (a sysctl) the bare process writes to /proc
                direct = [op for op in kernel.ops if HANDLERS[type(op)].channel is None]
                batched = [op for op in kernel.ops if op not in direct]
                data = encode(kernel, batched, mac) | {"sysctls": [op.sysctl for op in direct]}
                path = Path(tmp, f"{step}.pickle")
                path.write_bytes(pickle.dumps(data))
                argv = [sys.executable, "-m", "lab.bare", str(path), "limit"]
                done = subprocess.run(argv, capture_output=True, text=True)
                if done.returncode != 0:
                    raise RuntimeError(f"lab.bare failed: {done.stderr[-500:]}")
                sent = json.loads(done.stdout)
                if sent["errors"]:
                    raise RuntimeError(f"{step}: the kernel refused {sent['errors']} messages")
                out[step], out["messages"][step] = sent["total_s"], (data["messages"], data["sent"])
                if step == "takeover":  # its end, done as the helper does it, off the clock
                    kernel.ops, now[0] = [], now[0] + HANDOVER_S + 0.5
                    engine.tick()
                    NetlinkKernel.apply_many(kernel, kernel.ops)
                out["states"][step] = snapshot(fe)
            now[0] += settings.timeout + 1
            t0 = time.perf_counter()
            engine.tick()
            out["refresh"] = time.perf_counter() - t0
            engine.kernel.close()
    return out


def run(reps: int) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="bench-mem-")
    files = {vm: _files(tmp, vm[0], members_of(vm[1])) for vm in CASES}

    def case(vm: tuple[int, int]) -> dict[str, Any]:
        vipfile, options, ipv6 = files[vm]
        members = members_of(vm[1])
        helper = helper_run(vipfile, options, members, ipv6)
        limit = limit_run(vipfile, options, members, ipv6)
        same = helper.pop("states") == limit.pop("states")  # (tens of MB at 4,096 VIPs)
        return {"helper": helper, "limit": limit, "same": same}

    def show(vm: tuple[int, int], r: dict[str, Any]) -> str:
        h, lim = r["helper"], r["limit"]
        cells = ", ".join(f"{s} {h[s] * 1e3:.1f} ms (limit {lim[s] * 1e3:.1f})" for s in STEPS)
        return f"membership {vm[0]}x{vm[1]}: {cells}"

    reps = min(reps, REPS)
    runs = repeat(reps, {vm: (lambda vm=vm: case(vm)) for vm in CASES}, show)
    return result("membership", *tables(runs, reps))


def tables(runs: dict, reps: int) -> tuple[list[Table], list[Target]]:
    t = Table(
        "A member leaving or joining against a takeover, beside the kernel's own cost (inside "
        "user-mode Linux): ACTIVATE -> OK ms",
        "VIPs x members | messages + frames (takeover; leave; join) | from standby | limit | "
        "member leaves | limit | member joins | limit | leave / limit | join / limit | "
        "read back + planned in full (the refresh) | same state".split(" | "),
    )
    mem = Table(
        "Start-up and memory at each size (inside user-mode Linux, real mode)",
        ["VIPs x members", "start -> INTF answered ms", "VmRSS standby MB", "VmRSS active MB"],
    )
    targets: list[Target] = []
    takeover: dict[tuple[int, int], tuple[float, float]] = {}
    for (v, m), rs in runs.items():
        hs, ls = [r["helper"] for r in rs], [r["limit"] for r in rs]
        h = {s: median([x[s] for x in hs]) for s in STEPS}
        lim = {s: median([x[s] for x in ls]) for s in STEPS}
        takeover[v, m] = (h["takeover"], lim["takeover"])
        counts = "; ".join(f"{a:,} + {b:,}" for a, b in (ls[0]["messages"][s] for s in STEPS))
        same = all(r["same"] for r in rs)
        cells = [mm([x[s] for x in xs], 1000, 1, 1) for s in STEPS for xs in (hs, ls)]
        ratios = [f"{h[s] / lim[s]:.2f}x" for s in ("leave", "join")]
        refresh = mm([x["refresh"] for x in ls], 1000, 1)
        t.add(f"{v} x {m}", counts, *cells, *ratios, refresh, "yes" if same else "NO")
        mem.add(
            f"{v} x {m}",
            mm([x["start_s"] for x in hs], 1000, 0),
            f"{median([x['standby_kib'] for x in hs]) / 1024:.1f}",
            f"{median([x['active_kib'] for x in hs]) / 1024:.1f}",
        )
        for s in ("leave", "join"):
            name = f"{v} x {m}: a member {'leaving' if s == 'leave' else 'joining'}"
            value = f"{h[s] * 1e3:.1f} ms vs {h['takeover'] * 1e3:.1f} ms"
            at_most = h[s] <= h["takeover"]
            targets.append(
                Target("membership", f"{name}: at most the takeover", "<=", value, at_most)
            )
            if (v, m) in LIMIT_CASES:
                ratio = f"{h[s] / lim[s]:.2f}x"
                name += ": within 2x of its limit"
                targets.append(Target("membership", name, "<= 2x", ratio, h[s] <= 2 * lim[s]))
    if (256, 4) in takeover and (4096, 4) in takeover:
        (big, big_limit), (small, small_limit) = takeover[4096, 4], takeover[256, 4]
        name = "takeover 4096 x 4 at most 20x the 256 x 4 one"
        value = f"{big / small:.1f}x (the limit's: {big_limit / small_limit:.1f}x)"
        targets.append(Target("membership", name, "<= 20x", value, big <= 20 * small))
    t.notes += [
        f"Median of {reps} runs (min-max in brackets), each in fresh namespaces from the "
        "helper's standby: ACTIVATE with every member (from standby), without the last (member "
        "leaves; after the takeover's end, 3.5 s later), with every member again (member "
        "joins). Members other than the frontend are "
        "LAN addresses nobody holds. 256 VIPs: 203.0.113.0/24; 1,024 and 4,096: also "
        "198.51.100.0/24 and IPv6 /120s, with a member map giving every member an IPv6 address "
        "(the lab's IPv4 space holds 512 VIPs).",
        "limit = the same step planned by the helper's engine in-process, encoded by the netlink "
        "kernel's HANDLERS and sent pre-encoded by the limit's process (lab/bare.py; its clock "
        "covers the system calls only); same state: its IPVS services, real servers, daemons and "
        "addresses after each step equal the helper's. Every ACTIVATE announces every VIP "
        "again (docs/protocol.md), so each step's frames are in its limit too.",
        "Where the time went: a member change used to read the whole IPVS table back (one "
        "dump per service) and plan every real server again; the refresh column times that "
        "work. Now the helper plans against the kernel as it last made it (the real servers "
        "that change, one value per family); the refresh repairs what changed behind its back. "
        "With a member map (1,024 and 4,096 VIPs) the members nobody holds never answer ARP, "
        "so the takeover drops their ranges, and their MACs were looked at again a second "
        "later by such a refresh, which held up the next ACTIVATE: now by the neighbour table "
        "alone (only the filters it changes). So was the takeover's end (3.5 s after it: the "
        "backup sync daemon stops, the reset guards go): now it reads no IPVS table. The -t "
        "refresh (15 s after the last request) still is such a read: a step it overlaps waits "
        "for it. The rest is the helper's own: its log lines (every real server that changes, "
        "the announcement's kept) and the encoding of the requests.",
        "Adding IPv6 addresses costs the kernel more than linearly (each one added walks every "
        "IPv6 address of the namespace: the dual-stack benchmark's table of the kernel's cost "
        "per address): the 4,096-VIP takeovers hold 3,584 IPv6 VIPs on lo and eth0, so even "
        "the limit's 4,096 x 4 takeover is many times 16 of its 256 x 4 one.",
    ]
    mem.notes.append(
        "start -> INTF answered: from spawning `python -m cgp_ipvs_helper` to reading its INTF "
        "answer (CGP waits for it): the VIP file, the state read, the VIPs on lo, standby "
        "converged and the takeover planned ahead. VmRSS: 0.5 s after that answer (standby), "
        "and active after the three ACTIVATEs and their announcement repeats."
    )
    return [t, mem], targets
