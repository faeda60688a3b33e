"""Benchmark 1 (inside UML): how soon after ACTIVATE the LAN can use the VIPs, against the
commands of the classic way and against the kernel's own limit (bench/limit.py)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from lab.driver import member_map, write_vipfile
from lab.standby import members_of
from lab.ways import WAYS, activate_by, classic, steering_alone, steers

from . import limit
from .report import Table, Target, median, mm, ms, pick, repeat, result, times, under

VIP_ENTRIES = {1: ["203.0.113.1"], 8: ["203.0.113.8/29"], 256: ["203.0.113.0/24"]}
CASES = [(v, m) for v in VIP_ENTRIES for m in (2, 4, 16)]
TARGET_CASE = (256, 4)
FULL_LIMIT = 300  # commands before the first ARP up to which the classic way runs them all
CHECK_CASE = (8, 16)  # measured in full and also extrapolated, to check the extrapolation


def run(reps: int) -> dict[str, Any]:
    """Every case `reps` times (every way in turn), the limit's cases again without the classic
    way up to PAIRS runs; then the steering."""
    tmp = tempfile.mkdtemp(prefix="bench-act-")
    files = {v: write_vipfile(os.path.join(tmp, f"vips{v}"), e) for v, e in VIP_ENTRIES.items()}
    cmds: dict[tuple[int, int], list[str]] = {}  # those of the first run of each case

    def case(v: int, m: int, with_classic: bool = True) -> dict[str, Any]:
        ways = WAYS if (v, m) in limit.LIMIT_CASES else WAYS[:2]
        out = {"helper": activate_by("helper", files[v], members_of(m))}
        if with_classic:
            todo = cmds.setdefault((v, m), out["helper"]["cmds"])
            full = next(i for i, c in enumerate(todo) if c.startswith("arping ")) < FULL_LIMIT
            out["classic"] = classic(files[v], todo, full)
            check = (v, m) == CHECK_CASE
            out["check_s"] = classic(files[v], todo, False)["arp_s"] if check else None
        return out | {way: activate_by(way, files[v], members_of(m)) for way in ways[1:]}

    runs = repeat(reps, {vm: lambda vm=vm: case(*vm) for vm in CASES})
    more = {vm: lambda vm=vm: case(*vm, False) for vm in limit.LIMIT_CASES}
    pairs = repeat(max(0, limit.PAIRS - reps), more)
    both = {vm: rs + pairs.get(vm, []) for vm, rs in runs.items()}
    (table, targets), (versus, more_targets) = latency(runs, reps), limit.table(both)
    steering, target = steering_runs(files[TARGET_CASE[0]], tmp, reps)
    tables = [table, versus, limit.piped_table(both), steering]
    return result("activation", tables, [*targets, *more_targets, target])


def latency(runs: limit.Runs, reps: int) -> tuple[Table, list[Target]]:
    table = Table(
        "Activation latency (inside user-mode Linux): ACTIVATE -> OK and -> first gratuitous ARP",
        "VIPs x members | kernel changes | helper OK ms | helper 1st ARP ms | classic 1st ARP s | "
        "classic measured how | speed-up 1st ARP | speed-up vs OK | same state".split(" | "),
    )
    targets: list[Target] = []
    for (v, m), rs in runs.items():
        ok, base, arp = (
            pick(rs, w, k)
            for w, k in (("helper", "ok_s"), ("classic", "arp_s"), ("helper", "arp_s"))
        )
        ok_m, base_m, arp_m = median(ok), median(base), median(arp) if arp else None
        states = [r["classic"]["state"] for r in rs if r["classic"]["state"] is not None]
        same = all(s == r["helper"]["state"] for s in states for r in rs)
        same_text = ("yes" if same else "NO") if states else "n/a (sample)"
        changes = sum(not c.startswith("arping ") for c in rs[0]["helper"]["cmds"])
        speed = [times(base_m, arp_m), times(base_m, ok_m), same_text]
        how = rs[0]["classic"]["how"]
        table.add(f"{v} x {m}", changes, mm(ok), mm(arp), mm(base, 1, 2, 2), how, *speed)
        for what, value in (("first ARP", arp_m), ("OK", ok_m)) if (v, m) == TARGET_CASE else ():
            name = f"{v} VIPs x {m} members: {what} under 100 ms"
            targets.append(under("activation", name, value and value * 1000, 100, "ms"))
            than = "classic first ARP" if what == "OK" else "classic"
            name = f"{v} VIPs x {m} members: {what} 20x sooner than {than}"
            met = None if not value else base_m / value >= 20
            targets.append(Target("activation", name, ">= 20x", times(base_m, value), met))
    targets = targets[::2] + targets[1::2]  # the two under 100 ms first
    each = [(k, s) for rs in runs.values() for r in rs for k, s in r["classic"]["each_s"].items()]
    kinds = ", ".join(
        f"{k} {median([s for j, s in each if j == k]) * 1e3:.0f} ms" for k in dict(each)
    )
    full, check = (median(pick(runs[CHECK_CASE], *k)) for k in (("classic", "arp_s"), ("check_s",)))
    table.notes += [
        f"Median of {reps} runs (min-max in brackets), each from standby in fresh namespaces; "
        "members other than the frontend are LAN addresses nobody holds (IPVS accepts them).",
        "classic = the commands the helper logs for that ACTIVATE (what -m prints), run by bash "
        "one process each from the same standby until the client receives the first ARP; per "
        f"command (median): {kinds}. Extrapolated: the sampled commands' cost per kind x their "
        f"number; {CHECK_CASE[0]} x {CHECK_CASE[1]} measured in full {full:.2f} s, extrapolated "
        f"{check:.2f} s ({check / full - 1:+.0%}).",
        "speed-up vs OK: against the helper's OK, which also covers its whole first ARP round "
        "(2 frames per VIP) and logging every change. same state: after a fully measured "
        "classic run, the kernel holds what the helper made.",
    ]
    return table, targets


def steering_runs(vipfile: str, tmp: str, reps: int) -> tuple[Table, Target]:
    """The target case with a member map of 4 ranges and, alternately, without."""
    (v, m), members = TARGET_CASE, members_of(TARGET_CASE[1])
    path = os.path.join(tmp, "cgp-ipvs-members")
    Path(path).write_text(member_map([(ip, None) for ip in members], first=40000))
    cases = {"without a map": (), "with a map": ("--member-map", path)}
    runs = repeat(
        reps, {k: lambda o=o: activate_by("helper", vipfile, members, *o) for k, o in cases.items()}
    )
    ok, plain = pick(runs["with a map"], "ok_s"), pick(runs["without a map"], "ok_s")
    changes = sum(map(steers, runs["with a map"][0]["cmds"]))
    alone, with_tc, without = steering_alone(vipfile, path, members, reps)
    table = Table(
        f"Steering of outgoing connections: ACTIVATE {v} VIPs x {m} members with a "
        f"member map of {m} ranges (inside user-mode Linux)",
        ["case", "steering changes", "helper OK ms", "helper 1st ARP ms"],
    )
    table.add("without a map", 0, mm(plain), "")
    table.add(f"with a {m}-range map", changes, mm(ok), mm(pick(runs["with a map"], "arp_s")))
    table.add("difference of the medians", "", ms(median(ok) - median(plain)), "")
    table.add("the steering changes alone (applied in one call)", changes, mm(alone, 1e3, 2, 2), "")
    tc_reads = "reading tc in each observe (2 netlink dumps; difference of medians)"
    table.add(tc_reads, "", ms(median(with_tc) - median(without), 2), "")
    table.notes.append(
        f"Median of {reps} runs each, with and without the map in turn (the changes alone and "
        "the reads: 9 or more in one namespace). The steering: 1 clsact qdisc, 1 tc filter per "
        "CIDR block of the VIPs and 2 per range (TCP, UDP: the owner's MAC written and the "
        "packet sent back out, or dropped while that MAC is unknown), in the same netlink "
        "batches; for the balancer's own range a firewall-mark service and its real server "
        "(none here: the balancer is not in this map)."
    )
    name = f"{v} VIPs x {m} members with a {m}-range member map: OK under 100 ms"
    return table, under("activation", name, median(ok) * 1000, 100, "ms")
