"""Benchmark 1 (inside UML): how soon after ACTIVATE the LAN can use the VIPs.

Helper: from standby in fresh namespaces (`lab.standby`), ACTIVATE -> OK and -> the first
gratuitous ARP a client on the bridge receives. Classic baseline: the commands the helper logs
for that ACTIVATE (what -m prints), run by bash one process each from the same standby state
until the client sees the first ARP; where the list is long, a sample of every kind of command
is run and the rest extrapolated per kind (one fully measured case is extrapolated too, as a
check). Beside both, the kernel's own limit (bench/limit.py), and the ACTIVATE with a member
map (steering, issue 9).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from cgp_ipvs_helper.memberfile import load_members
from cgp_ipvs_helper.model import Role, Settings
from cgp_ipvs_helper.netlink import NetlinkKernel
from cgp_ipvs_helper.outgoing import steer
from cgp_ipvs_helper.planner import DEFAULT_PORTS, desired_state, plan
from tests.lab.driver import commands, write_vipfile
from tests.lab.netns import in_netns

from . import limit
from .lab import FE_IP, ArpWatch, activate, members_of, progress, snapshot, standby, vips_in
from .report import Table, Target, median, mm, ms, per, result, times, under

VIP_ENTRIES = {1: ["203.0.113.1"], 8: ["203.0.113.8/29"], 256: ["203.0.113.0/24"]}
CASES = [(v, m) for v in VIP_ENTRIES for m in (2, 4, 16)]
TARGET_CASE = (256, 4)
FULL_LIMIT = 300  # commands before the first ARP up to which the baseline runs them all
CHECK_CASE = (8, 16)  # measured in full and also extrapolated, to check the extrapolation
SAMPLE_CAPS = {"ipvsadm -A": 16, "ipvsadm -a": 64, "ip address add": 16}


def helper_run(vipfile: str, members: list[str], *options: str) -> dict[str, Any]:
    """One ACTIVATE of the helper from standby: OK, first ARP, its commands, the state."""
    vips = vips_in(vipfile)
    with standby("act", vipfile, *options) as (helper, fe, client):
        watch = ArpWatch(client, fe.mac, vips)
        reply = activate(helper, members, len(vips))
        arp = watch.first()
        cmds = commands(reply.before)
        return {
            "ok_s": reply.seconds,
            "first_arp_s": None if arp is None else arp - reply.sent,
            "commands": cmds,
            "steering": sum(1 for c in cmds if steers(c)),
            "state": snapshot(fe),
        }


def steers(command: str) -> bool:
    """A change of the steering (issue 9): tc, or an IPVS firewall-mark service or server."""
    return command.startswith("tc ") or " -f " in command


def kind(command: str) -> str:
    words = command.split()
    if words[0] == "ipvsadm":
        return "ipvsadm daemon" if "daemon" in words[1] else f"ipvsadm {words[1]}"
    return " ".join(words[:3]) if words[0] == "ip" else words[0]


def segments(cmds: Sequence[str], full: bool) -> list[tuple[str, list[str], list[str]]]:
    """(kind, commands, those to run) for each run of one kind up to the first arping; a sample
    keeps prerequisites (a real server is only added to a sampled service)."""
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


def classic_run(vipfile: str, cmds: list[str], full: bool) -> dict[str, Any]:
    """The classic way from standby: the first ARP measured, or extrapolated per kind."""
    segs = segments(cmds, full)
    with standby("cls", vipfile) as (helper, fe, client), tempfile.TemporaryDirectory() as tmp:
        helper.kill()  # its standby state stays
        script, marks, errors = (os.path.join(tmp, n) for n in ("run.sh", "marks", "err"))
        with open(script, "w") as f:  # $EPOCHREALTIME (no fork) marks the start of each kind
            f.write(f"exec 3>{marks}\n")
            for i, (k, _cs, run) in enumerate(segs):
                f.write(f'echo "{i} $EPOCHREALTIME" >&3\n')
                f.write(f"exec {run[0]}\n" if k == "arping" else "".join(c + "\n" for c in run))
        ran = sum(len(run) for _k, _cs, run in segs)
        watch = ArpWatch(client, fe.mac, vips_in(vipfile))
        with in_netns(fe.ns), open(errors, "w") as err:
            proc = subprocess.Popen(["bash", "-e", script], stdout=subprocess.DEVNULL, stderr=err)
        try:
            arp = watch.first(timeout=30 + 2.0 * ran)
        finally:
            proc.kill()
            proc.wait(30)
        stamps = [float(line.split()[1]) for line in Path(marks).read_text().splitlines()]
        if arp is None or len(stamps) != len(segs):
            raise RuntimeError(f"classic script failed: {Path(errors).read_text()[-500:]!r}")
        state = snapshot(fe) if full else None
    per_kind = {
        k: ((stamps + [arp])[i + 1] - stamps[i]) / len(run) for i, (k, _, run) in enumerate(segs)
    }
    estimate = sum(per_kind[k] * (1 if k == "arping" else len(cs)) for k, cs, _ in segs)
    total = sum(len(cs) for _k, cs, _r in segs)
    return {
        "first_arp_s": arp - stamps[0] if full else estimate,
        "how": f"all {total} commands" if full else f"extrapolated from {ran} of {total} commands",
        "per_command_s": per_kind,
        "state": state,
    }


def run(reps: int) -> dict[str, Any]:
    """Every case `reps` times (helper, classic, limit in turn); then the steering."""
    tmp = tempfile.mkdtemp(prefix="bench-act-")
    files = {v: write_vipfile(os.path.join(tmp, f"vips{v}"), e) for v, e in VIP_ENTRIES.items()}
    helper, classic, limits = defaultdict(list), defaultdict(list), defaultdict(list)
    check: list[float] = []
    for rep in range(reps):
        for v, m in CASES:
            h = helper_run(files[v], members_of(m))
            cmds = helper[(v, m)][0]["commands"] if helper[(v, m)] else h["commands"]
            pre_arp = next(i for i, c in enumerate(cmds) if c.startswith("arping ")) + 1
            c = classic_run(files[v], cmds, full=pre_arp <= FULL_LIMIT)
            lim = limit.measure(files[v], members_of(m))
            helper[(v, m)].append(h)
            classic[(v, m)].append(c)
            limits[(v, m)].append(lim)
            if (v, m) == CHECK_CASE:
                check.append(classic_run(files[v], cmds, full=False)["first_arp_s"])
            progress(
                f"activation {v}x{m} rep {rep + 1}/{reps}: helper OK {ms(h['ok_s'])} ms, first "
                f"ARP {ms(h['first_arp_s'])} ms; classic {c['first_arp_s']:.2f} s ({c['how']}); "
                f"limit {ms(lim['total_s'], 2)} ms"
            )
    table, targets = latency(helper, classic, check, reps)
    versus, more = limit.table(CASES, helper, limits)
    steering, target = steering_runs(files[TARGET_CASE[0]], tmp, reps)
    raw = {
        f"{v}x{m}": {
            "helper_ok_s": [h["ok_s"] for h in helper[(v, m)]],
            "helper_first_arp_s": [h["first_arp_s"] for h in helper[(v, m)]],
            "classic_first_arp_s": [c["first_arp_s"] for c in classic[(v, m)]],
            "classic_per_command_s": [c["per_command_s"] for c in classic[(v, m)]],
            "limit": [{k: x for k, x in r.items() if k != "state"} for r in limits[(v, m)]],
        }
        for v, m in CASES
    }
    return result("activation", [table, versus, steering], [*targets, *more, target], **raw)


def latency(
    helper: dict[tuple[int, int], list[dict[str, Any]]],
    classic: dict[tuple[int, int], list[dict[str, Any]]],
    check: list[float],
    reps: int,
) -> tuple[Table, list[Target]]:
    table = Table(
        "Activation latency (inside user-mode Linux): ACTIVATE -> OK and -> first gratuitous ARP",
        ["VIPs x members", "kernel changes", "helper OK ms", "helper 1st ARP ms"]
        + ["classic 1st ARP s", "classic measured how", "speed-up 1st ARP", "speed-up vs OK"]
        + ["same state"],
    )
    targets: list[Target] = []
    per_kind: dict[str, list[float]] = defaultdict(list)
    for v, m in CASES:
        hs, cs = helper[(v, m)], classic[(v, m)]
        ok = [h["ok_s"] for h in hs]
        arp = [h["first_arp_s"] for h in hs if h["first_arp_s"] is not None]
        base = [c["first_arp_s"] for c in cs]
        for c in cs:
            for k, s in c["per_command_s"].items():
                per_kind[k].append(s)
        ok_m, base_m, arp_m = median(ok), median(base), median(arp) if arp else None
        states = [c["state"] for c in cs if c["state"] is not None]
        same = all(s == h["state"] for s in states for h in hs) if states else None
        table.add(
            f"{v} x {m}",
            sum(1 for c in hs[0]["commands"] if not c.startswith("arping ")),
            mm(ok),
            mm(arp),
            mm(base, 1, 2, 2),
            cs[0]["how"],
            times(base_m, arp_m),
            times(base_m, ok_m),
            {True: "yes", False: "NO", None: "n/a (sample)"}[same],
        )
        if (v, m) == TARGET_CASE:
            label = f"{v} VIPs x {m} members"
            for what, value in (("first ARP", arp_m), ("OK", ok_m)):
                name = f"{label}: {what} under 100 ms"
                targets.append(under("activation", name, value and value * 1000, 100, "ms"))
            for what, value in (("first ARP", arp_m), ("OK", ok_m)):
                than = "sooner than classic" + (" first ARP" if what == "OK" else "")
                met = None if not value else base_m / value >= 20
                name = f"{label}: {what} 20x {than}"
                targets.append(Target("activation", name, ">= 20x", times(base_m, value), met))
    kinds = ", ".join(f"{k} {median(s) * 1000:.0f} ms" for k, s in per_kind.items())
    table.notes += [
        f"Median of {reps} runs (min-max in brackets), each from standby in fresh namespaces; "
        "members other than the frontend are LAN addresses nobody holds (IPVS accepts them).",
        "classic = the commands the helper logs for that ACTIVATE (what -m prints), run by bash "
        "one process each from the same standby state until the client receives the first ARP; "
        f"cost per command (median): {kinds}. Extrapolated rows: per-kind cost of the sampled "
        "commands x the number of commands of that kind.",
        "speed-up vs OK compares the classic first ARP with the helper's OK, which also covers "
        "its whole first ARP round (2 frames per VIP) and logging every change.",
        "same state: after a fully measured classic run, IPVS services, real servers, sync "
        "daemons and addresses equal those the helper made.",
    ]
    if check and classic[CHECK_CASE]:
        full = median([c["first_arp_s"] for c in classic[CHECK_CASE]])
        v, m = CHECK_CASE
        table.notes.append(
            f"Check of the extrapolation: {v} x {m} measured in full {full:.2f} s; extrapolated "
            f"from a sample {median(check):.2f} s ({median(check) / full - 1:+.0%})."
        )
    return table, targets


def steering_runs(vipfile: str, tmp: str, reps: int) -> tuple[Table, Target]:
    """The target case with a member map of 4 ranges and, alternately, without."""
    v, m = TARGET_CASE
    members = members_of(m)
    path = os.path.join(tmp, "cgp-ipvs-members")
    with open(path, "w") as f:
        f.writelines(
            f"{ip} {40000 + 5000 * i}-{44999 + 5000 * i}\n" for i, ip in enumerate(members)
        )
    plain, runs = [], []
    for rep in range(reps):
        plain.append(helper_run(vipfile, members))
        runs.append(helper_run(vipfile, members, "--member-map", path))
        progress(
            f"activation {v}x{m} with a {m}-range member map, rep {rep + 1}/{reps}: "
            f"OK {ms(runs[-1]['ok_s'])} ms (without the map {ms(plain[-1]['ok_s'])} ms)"
        )
    ok, ok0 = [r["ok_s"] for r in runs], [r["ok_s"] for r in plain]
    arps = [r["first_arp_s"] for r in runs if r["first_arp_s"] is not None]
    alone, reads, plain_reads = steering_alone(vipfile, path, reps)
    table = Table(
        f"Steering of outgoing connections (issue 9): ACTIVATE {v} VIPs x {m} members with a "
        f"member map of {m} ranges (inside user-mode Linux)",
        ["case", "steering changes", "helper OK ms", "helper 1st ARP ms"],
    )
    changes = runs[0]["steering"]
    table.add("without a map", 0, mm(ok0), "")
    table.add(f"with a {m}-range map", changes, mm(ok), mm(arps))
    table.add("difference of the medians", "", ms(median(ok) - median(ok0)), "")
    table.add("the steering changes alone (applied in one call)", changes, mm(alone, 1e3, 2, 2), "")
    table.add(
        "reading tc in each observe (2 netlink dumps; difference of medians)",
        "",
        ms(median(reads) - median(plain_reads), 2),
        "",
    )
    table.notes.append(
        f"Median of {reps} runs each, with and without the map alternately (the changes alone "
        "and the reads: 9 or more runs in one namespace); the steering changes are 1 clsact "
        "qdisc, 1 tc filter per CIDR block of the VIPs, 2 per range, and per range one "
        "firewall-mark service and its real server, sent in the same netlink batches."
    )
    name = f"{v} VIPs x {m} members with a {m}-range member map: OK under 100 ms"
    return table, under("activation", name, median(ok) * 1000, 100, "ms")


def steering_alone(vipfile: str, path: str, reps: int) -> tuple[list[float], ...]:
    """The steering changes of the target case applied (and removed) in one apply_many each,
    and an observe with tc against one without, from standby."""
    vips = vips_in(vipfile)
    settings = Settings(vipfile=vipfile, iface="eth0", member_map=path)
    members = load_members(path, [p for _, p in DEFAULT_PORTS], vips)
    base = desired_state(settings, vips, Role.ACTIVE, members_of(TARGET_CASE[1]), FE_IP)
    want = steer(
        attrs.evolve(base, services=frozenset(), dests=frozenset()), members, True, vips, None
    )
    undo = attrs.evolve(want, services=frozenset(), dests=frozenset(), filters=frozenset())
    apply_s: list[float] = []
    read_s: list[float] = []
    plain_s: list[float] = []
    with standby("stc", vipfile) as (helper, fe, _client), in_netns(fe.ns):
        helper.kill()
        kernel = NetlinkKernel()
        try:
            for _ in range(max(reps, 9)):
                ops = [
                    op for op in plan(want, kernel.observe(frozenset(), "eth0")) if steers(str(op))
                ]
                t0 = time.perf_counter()
                failures = kernel.apply_many(ops)
                apply_s.append(time.perf_counter() - t0)
                if failures:
                    raise RuntimeError(f"steering changes failed: {failures[:3]}")
                plain_s.append(per(lambda: kernel.observe(frozenset()), 1))
                read_s.append(per(lambda: kernel.observe(frozenset(), "eth0"), 1))
                busy = kernel.observe(frozenset(), "eth0")
                kernel.apply_many([op for op in plan(undo, busy) if steers(str(op))])
        finally:
            kernel.close()
    return apply_s, read_s, plain_s
