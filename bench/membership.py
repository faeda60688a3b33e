"""Benchmark (inside UML): a member leaving or joining against a takeover, each beside the kernel's
own cost of its messages (the limit: `limit_run`), at sizes up to 4,096 VIPs; start-up and memory
at each size. The tables' notes say how each figure is taken."""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path
from typing import Any

from cgp_ipvs_helper.config.options import parse_settings
from cgp_ipvs_helper.core.engine import Helper
from cgp_ipvs_helper.core.session import HANDOVER_S
from lab.driver import HelperProcess, helper_argv, member_map, write_vipfile
from lab.lan import Lan, unique
from lab.netns import in_netns
from lab.standby import FE_IP, activate, members_of, snapshot, standby, vips_in
from lab.ways import Recorder

from .report import Table, Target, median, mm, ms, pick, repeat, result

CASES = ((256, 4), (256, 64), (1024, 16), (4096, 4))
STEPS = ("takeover", "leave", "join")
LIMIT_CASES = ((256, 4), (4096, 4))  # a change within 2x of its limit at these
REPS = 3  # at most: a run of every case takes minutes (4,096 VIPs start and take over slowly)


def _files(tmp: str, vips: int, members: list[str]) -> tuple[str, list[str]]:
    """The VIP file and the helper's options: past the lab's 512 IPv4 VIPs IPv6 /120s (one per
    /64), with a member map giving each member an IPv6 address."""
    v4 = ["203.0.113.0/24", "198.51.100.0/24"][: max(1, min(2, vips // 256))]
    v6 = [f"2001:db8:10:{k:x}::/120" for k in range(vips // 256 - len(v4))]
    vipfile = write_vipfile(f"{tmp}/vips{vips}", v4 + v6)
    if not v6:
        return vipfile, []
    path = Path(tmp, f"members{vips}x{len(members)}")
    six = [(m, f"2001:db8::{11 + i:x}") for i, m in enumerate(members)]
    path.write_text(member_map(six, 40000, 300))
    return vipfile, ["--member-map", str(path)]


def _rss_kib(pid: int) -> int:
    return int(re.findall(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())[0])


def helper_run(vipfile: str, options: list[str], steps: list[tuple[str, list[str]]]) -> dict:
    """Start (until the INTF answer), then each step's ACTIVATE: times, states, memory."""
    out: dict[str, Any] = {"states": {}}
    with Lan(unique("mem"), ipv6=bool(options)) as lan:
        fe = lan.add_host("fe", FE_IP)
        argv = [*helper_argv(), "-f", vipfile, "-i", "eth0", *options]
        t0 = time.time()
        helper = HelperProcess(fe, argv=argv, timed=True)
        try:
            out["start_s"] = helper.wait_started(timeout=600).answered - t0
            time.sleep(0.5)
            out["standby_kib"] = _rss_kib(helper.proc.pid)
            for step, listed in steps:
                out[step] = activate(helper, listed, len(vips_in(vipfile))).seconds
                if step == "takeover":  # its end (the backup daemon stops) comes first
                    time.sleep(HANDOVER_S + 0.5)
                out["states"][step] = snapshot(fe)
            time.sleep(2.5)  # the announcement repeats are done
            out["active_kib"] = _rss_kib(helper.proc.pid)
        finally:
            helper.kill()
    return out


def limit_run(vipfile: str, options: list[str], steps: list[tuple[str, list[str]]]) -> dict:
    """From the helper's standby, each step planned by its engine in-process (its options) and
    sent by the limit's process; then the refresh (read back, planned in full) timed."""
    out: dict[str, Any] = {"states": {}, "messages": {}}
    settings = parse_settings(["-f", vipfile, "-i", "eth0", *options])
    with standby("mlim", vipfile, *options, ipv6=bool(options)) as (helper, fe, _client):
        helper.kill()  # its standby stays
        with in_netns(fe.ns):
            kernel, now = Recorder(bytes.fromhex(fe.mac.replace(":", ""))), [1000.0]
            engine = Helper(settings, kernel, clock=lambda: now[0], link_exists=lambda _dev: True)
            engine.start()
            kernel.ops = []  # what start() would redo: the killed helper's standby is there
            for i, (step, listed) in enumerate(steps):
                reply = engine.handle(f"{i + 1} ACTIVATE " + " ".join(listed)).response
                if reply is None or reply.kind != "OK":
                    raise RuntimeError(f"{step}: {reply}")
                sent = kernel.send()
                out[step] = sent["total_s"]
                out["messages"][step] = sent["messages"], sent["frames"]
                if step == "takeover":  # its end, done as the helper does it, off the clock
                    now[0] += HANDOVER_S + 0.5
                    engine.tick()
                    kernel.send()
                out["states"][step] = snapshot(fe)
            now[0] += settings.timeout + 1
            t0 = time.perf_counter()
            engine.tick()
            out["refresh"] = time.perf_counter() - t0
            kernel.close()
    return out


def run(reps: int) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="bench-mem-")

    def case(vips: int, count: int) -> dict[str, Any]:
        members = members_of(count)
        files = _files(tmp, vips, members)
        steps = list(zip(STEPS, (members, members[:-1], members)))
        helper, limit = helper_run(*files, steps), limit_run(*files, steps)
        same = helper.pop("states") == limit.pop("states")  # (tens of MB at 4,096 VIPs)
        return {"helper": helper, "limit": limit, "same": same}

    def show(vm: tuple[int, int], r: dict[str, Any]) -> str:
        cells = ", ".join(f"{s} {ms(r['helper'][s])} ms (limit {ms(r['limit'][s])})" for s in STEPS)
        return f"membership {vm[0]}x{vm[1]}: {cells}"

    reps = min(reps, REPS)
    runs = repeat(reps, {vm: (lambda vm=vm: case(*vm)) for vm in CASES}, show)
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
    goals: list[tuple[str, str, str, bool]] = []  # each a Target's name, goal, value and met
    takeovers = {}
    for (v, m), rs in runs.items():
        h, lim = ({s: median(pick(rs, way, s)) for s in STEPS} for way in ("helper", "limit"))
        takeovers[v, m] = h["takeover"], lim["takeover"]
        counts = "; ".join(f"{a:,} + {b:,}" for a, b in rs[0]["limit"]["messages"].values())
        cells = [mm(pick(rs, way, s), 1000, 1, 1) for s in STEPS for way in ("helper", "limit")]
        ratios = {s: f"{h[s] / lim[s]:.2f}x" for s in ("leave", "join")}
        same = "yes" if all(r["same"] for r in rs) else "NO"
        refresh = mm(pick(rs, "limit", "refresh"), 1000, 1)
        t.add(f"{v} x {m}", counts, *cells, *ratios.values(), refresh, same)
        rss = [f"{median(pick(rs, 'helper', k)) / 1024:.1f}" for k in ("standby_kib", "active_kib")]
        mem.add(f"{v} x {m}", mm(pick(rs, "helper", "start_s"), 1000, 0), *rss)
        for s, ing in (("leave", "leaving"), ("join", "joining")):
            name, took = f"{v} x {m}: a member {ing}", f"{ms(h[s])} ms vs {ms(h['takeover'])} ms"
            goals.append((f"{name}: at most the takeover", "<=", took, h[s] <= h["takeover"]))
            if (v, m) in LIMIT_CASES:
                met = h[s] <= 2 * lim[s]
                goals.append((f"{name}: within 2x of its limit", "<= 2x", ratios[s], met))
    if {(256, 4), (4096, 4)} <= takeovers.keys():
        (big, big_limit), (small, small_limit) = takeovers[4096, 4], takeovers[256, 4]
        value = f"{big / small:.1f}x (the limit's: {big_limit / small_limit:.1f}x)"
        name = "takeover 4096 x 4 at most 20x the 256 x 4 one"
        goals.append((name, "<= 20x", value, big <= 20 * small))
    t.notes += [
        f"Median of {reps} runs (min-max in brackets), each in fresh namespaces from the helper's "
        "standby: ACTIVATE with every member (from standby), without the last (member leaves, "
        f"after the takeover's end {HANDOVER_S:g} s later), with all again (member joins). "
        "Members other than the frontend are LAN addresses nobody holds. 256 VIPs: "
        "203.0.113.0/24; 1,024 and 4,096: also 198.51.100.0/24 and IPv6 /120s, with a member map "
        "giving every member an IPv6 address (the lab's IPv4 space holds 512 VIPs).",
        "limit = the same step planned by the helper's engine in-process, encoded by the netlink "
        "kernel's HANDLERS and made by the limit's process (lab/bare.py: sysctls, datagrams, "
        "frames; its clock covers the system calls only); same state: its IPVS services, real "
        "servers, daemons, addresses and reset guard after each step equal the helper's. Every "
        "ACTIVATE announces every VIP again "
        "(docs/protocol.md): each step's frames are in its limit too.",
        "Where the time went: a member change used to read the whole IPVS table back (one dump "
        "per service) and plan every real server again (the refresh column); now the helper "
        "plans against the kernel as it last made it (the real servers that change, one value "
        "per family) and the refresh repairs what changed behind its back. With a member map "
        "(1,024 and 4,096 VIPs) the members nobody holds never answer ARP, so the takeover drops "
        "their ranges; such a refresh a second later, looking at their MACs again, held up the "
        "next ACTIVATE: now the neighbour table alone does (only the filters it changes). The "
        f"takeover's end ({HANDOVER_S:g} s after it: the backup sync daemon stops, the reset "
        "guards go) no longer reads the IPVS table; the -t refresh (15 s after the last request) "
        "still does: a step it overlaps waits for it. The rest is the helper's own: its log "
        "lines (every real server that changes, the announcement's kept), the requests' encoding.",
        "Adding IPv6 addresses costs the kernel more than linearly (each one walks every IPv6 "
        "address of the namespace: the dual-stack benchmark's table of that cost): the 4,096-VIP "
        "takeovers hold 3,584 IPv6 VIPs on lo and eth0, so even the limit's 4,096 x 4 takeover is "
        "many times 16 of its 256 x 4 one.",
    ]
    mem.notes.append(
        "start -> INTF answered: from spawning `python -m cgp_ipvs_helper` to reading its INTF "
        "answer (CGP waits for it): the VIP file, the state read, the VIPs on lo, standby "
        "converged and the takeover planned ahead. VmRSS: 0.5 s after that answer (standby), "
        "and active after the three ACTIVATEs and their announcement repeats."
    )
    return [t, mem], [Target("membership", *goal) for goal in goals]
