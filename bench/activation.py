"""Benchmark 1 (inside UML): how soon after ACTIVATE the LAN can use the VIPs.

From standby (`lab.standby`): the helper's ACTIVATE -> OK and -> first gratuitous ARP at a
client; the classic way, the commands the helper logs for it run by bash one process each until
the client sees the first ARP (a long list sampled per kind of command and extrapolated); the
kernel's own limit (bench/limit.py), for the limit's cases also behind the helper's pipe, and
the least helper there; and the target case with a member map.
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

from cgp_ipvs_helper.config.memberfile import load_members
from cgp_ipvs_helper.kernel.netlink.kernel import NetlinkKernel
from cgp_ipvs_helper.plan.model import Role, Settings, TcState
from cgp_ipvs_helper.plan.outgoing import steer
from cgp_ipvs_helper.plan.planner import DEFAULT_PORTS, desired_state, plan
from lab.driver import commands, member_map, write_vipfile
from lab.netns import in_netns
from lab.sniff import ArpWatch
from lab.standby import FE_IP, activate, members_of, snapshot, standby, vips_in

from . import limit
from .report import Table, Target, median, mm, ms, repeat, result, times, under

VIP_ENTRIES = {1: ["203.0.113.1"], 8: ["203.0.113.8/29"], 256: ["203.0.113.0/24"]}
CASES = [(v, m) for v in VIP_ENTRIES for m in (2, 4, 16)]
TARGET_CASE = (256, 4)
FULL_LIMIT = 300  # commands before the first ARP up to which the classic way runs them all
CHECK_CASE = (8, 16)  # measured in full and also extrapolated, to check the extrapolation
SAMPLE_CAPS = {"ipvsadm -A": 16, "ipvsadm -a": 64, "ip address add": 16}
Runs = dict[tuple[int, int], list[dict[str, Any]]]


def helper_run(vipfile: str, members: list[str], *options: str) -> dict[str, Any]:
    """One ACTIVATE from standby: OK, first ARP, the commands logged, the state left."""
    vips = vips_in(vipfile)
    with standby("act", vipfile, *options) as (helper, fe, client):
        watch = ArpWatch(client.ns, fe.mac, vips)
        reply = activate(helper, members, len(vips))
        arp = watch.first()
        cmds, state = commands(reply.before), snapshot(fe)
    return {"ok_s": reply.seconds, "arp_s": arp and arp - reply.sent, "cmds": cmds, "state": state}


def steers(command: str) -> bool:
    """A change of the steering: tc, or an IPVS firewall-mark service or server."""
    return command.startswith("tc ") or " -f " in command


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


def classic_run(vipfile: str, cmds: list[str], full: bool) -> dict[str, Any]:
    """The classic way from standby: the first ARP measured, or extrapolated per kind."""
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
            arp = watch.first(timeout=30 + 2.0 * ran)
        finally:
            proc.kill()
            proc.wait(30)
        stamps = [float(line.split()[1]) for line in marks.read_text().splitlines()]
        if arp is None or len(stamps) != len(segs):
            raise RuntimeError(f"classic script failed: {errors.read_text()[-500:]!r}")
        state = snapshot(fe) if full else None
    ends = [*stamps[1:], arp]
    each = {k: (ends[i] - stamps[i]) / len(run) for i, (k, _cs, run) in enumerate(segs)}
    total = sum(len(cs) for _k, cs, _r in segs)
    guess = sum(each[k] * (1 if k == "arping" else len(cs)) for k, cs, _r in segs)
    how = f"all {total} commands" if full else f"extrapolated from {ran} of {total} commands"
    return {"arp_s": arp - stamps[0] if full else guess, "how": how, "each_s": each, "state": state}


def run(reps: int) -> dict[str, Any]:
    """Every case `reps` times (helper, classic, limit in turn); then the steering."""
    tmp = tempfile.mkdtemp(prefix="bench-act-")
    files = {v: write_vipfile(os.path.join(tmp, f"vips{v}"), e) for v, e in VIP_ENTRIES.items()}
    cmds: dict[tuple[int, int], list[str]] = {}  # those of the first run of each case

    def case(v: int, m: int) -> dict[str, Any]:
        h = helper_run(files[v], members_of(m))
        todo = cmds.setdefault((v, m), h["cmds"])
        full = next(i for i, c in enumerate(todo) if c.startswith("arping ")) < FULL_LIMIT
        c, lim = classic_run(files[v], todo, full), limit.measure(files[v], members_of(m))
        check = classic_run(files[v], todo, False)["arp_s"] if (v, m) == CHECK_CASE else None
        out = {"helper": h, "classic": c, "limit": lim, "check_s": check}
        if (v, m) in limit.LIMIT_CASES:
            out["piped"] = limit.measure_piped(files[v], members_of(m))
            out["least"] = limit.measure_piped(files[v], members_of(m), least=True)
        return out

    def show(vm: tuple[int, int], r: dict[str, Any]) -> str:
        h, c = r["helper"], r["classic"]
        return (
            f"activation {vm[0]}x{vm[1]}: helper OK {ms(h['ok_s'])} ms, first ARP "
            f"{ms(h['arp_s'])} ms; classic {c['arp_s']:.2f} s ({c['how']}); limit "
            f"{ms(r['limit']['total_s'], 2)} ms"
        )

    def pair(v: int, m: int) -> dict[str, Any]:
        return {
            "helper": helper_run(files[v], members_of(m)),
            "limit": limit.measure(files[v], members_of(m)),
            "piped": limit.measure_piped(files[v], members_of(m)),
            "least": limit.measure_piped(files[v], members_of(m), least=True),
        }

    def show_pair(vm: tuple[int, int], r: dict[str, Any]) -> str:
        h, lim, pipe = r["helper"]["ok_s"], r["limit"]["total_s"], r["piped"]["ok_s"]
        return (
            f"activation {vm[0]}x{vm[1]}: helper OK {ms(h, 2)} ms; limit {ms(lim, 2)} ms; "
            f"limit behind the pipe {ms(pipe, 2)} ms; least helper {ms(r['least']['ok_s'], 2)} ms"
        )

    runs = repeat(reps, {vm: lambda vm=vm: case(*vm) for vm in CASES}, show)
    more_pairs = {vm: lambda vm=vm: pair(*vm) for vm in limit.LIMIT_CASES}
    pairs = repeat(max(0, limit.PAIRS - reps), more_pairs, show_pair)
    (table, targets), (versus, more) = latency(runs, reps), limit.table(runs, pairs)
    piped = limit.piped_table(runs, pairs)
    steering, target = steering_runs(files[TARGET_CASE[0]], tmp, reps)
    return result("activation", [table, versus, piped, steering], [*targets, *more, target])


def latency(runs: Runs, reps: int) -> tuple[Table, list[Target]]:
    table = Table(
        "Activation latency (inside user-mode Linux): ACTIVATE -> OK and -> first gratuitous ARP",
        "VIPs x members | kernel changes | helper OK ms | helper 1st ARP ms | classic 1st ARP s | "
        "classic measured how | speed-up 1st ARP | speed-up vs OK | same state".split(" | "),
    )
    targets: list[Target] = []
    per_kind: dict[str, list[float]] = defaultdict(list)
    for (v, m), rs in runs.items():
        hs, cs = [r["helper"] for r in rs], [r["classic"] for r in rs]
        ok, base = [h["ok_s"] for h in hs], [c["arp_s"] for c in cs]
        arp = [h["arp_s"] for h in hs if h["arp_s"] is not None]
        for k, s in ((k, s) for c in cs for k, s in c["each_s"].items()):
            per_kind[k].append(s)
        ok_m, base_m, arp_m = median(ok), median(base), median(arp) if arp else None
        states = [c["state"] for c in cs if c["state"] is not None]
        same = all(s == h["state"] for s in states for h in hs)
        same_text = ("yes" if same else "NO") if states else "n/a (sample)"
        changes = sum(not c.startswith("arping ") for c in hs[0]["cmds"])
        speed = [times(base_m, arp_m), times(base_m, ok_m), same_text]
        table.add(f"{v} x {m}", changes, mm(ok), mm(arp), mm(base, 1, 2, 2), cs[0]["how"], *speed)
        for what, value in (("first ARP", arp_m), ("OK", ok_m)) if (v, m) == TARGET_CASE else ():
            name = f"{v} VIPs x {m} members: {what} under 100 ms"
            targets.append(under("activation", name, value and value * 1000, 100, "ms"))
            than = "classic first ARP" if what == "OK" else "classic"
            name = f"{v} VIPs x {m} members: {what} 20x sooner than {than}"
            met = None if not value else base_m / value >= 20
            targets.append(Target("activation", name, ">= 20x", times(base_m, value), met))
    targets = targets[::2] + targets[1::2]  # the two under 100 ms first
    kinds = ", ".join(f"{k} {median(s) * 1000:.0f} ms" for k, s in per_kind.items())
    full = median([r["classic"]["arp_s"] for r in runs[CHECK_CASE]])
    check = median([r["check_s"] for r in runs[CHECK_CASE]])
    table.notes += [
        f"Median of {reps} runs (min-max in brackets), each from standby in fresh namespaces; "
        "members other than the frontend are LAN addresses nobody holds (IPVS accepts them).",
        "classic = the commands the helper logs for that ACTIVATE (what -m prints), run by bash "
        "one process each from the same standby state until the client receives the first ARP; "
        f"cost per command (median): {kinds}. Extrapolated rows: per-kind cost of the sampled "
        f"commands x their number; for {CHECK_CASE[0]} x {CHECK_CASE[1]}, measured in full "
        f"{full:.2f} s, so extrapolated {check:.2f} s ({check / full - 1:+.0%}).",
        "speed-up vs OK compares the classic first ARP with the helper's OK, which also covers "
        "its whole first ARP round (2 frames per VIP) and logging every change. same state: "
        "after a fully measured classic run, the kernel holds what the helper made.",
    ]
    return table, targets


def steering_runs(vipfile: str, tmp: str, reps: int) -> tuple[Table, Target]:
    """The target case with a member map of 4 ranges and, alternately, without."""
    (v, m), members = TARGET_CASE, members_of(TARGET_CASE[1])
    path = os.path.join(tmp, "cgp-ipvs-members")
    Path(path).write_text(member_map([(ip, None) for ip in members], first=40000))
    runs = repeat(
        reps,
        {
            "without": lambda: helper_run(vipfile, members),
            "with": lambda: helper_run(vipfile, members, "--member-map", path),
        },
        lambda case, r: f"activation {v}x{m} {case} a {m}-range member map: OK {ms(r['ok_s'])} ms",
    )
    ok, plain = [r["ok_s"] for r in runs["with"]], [r["ok_s"] for r in runs["without"]]
    arps = [r["arp_s"] for r in runs["with"] if r["arp_s"] is not None]
    changes = sum(map(steers, runs["with"][0]["cmds"]))
    alone, with_tc, without = steering_alone(vipfile, path, reps)
    table = Table(
        f"Steering of outgoing connections: ACTIVATE {v} VIPs x {m} members with a "
        f"member map of {m} ranges (inside user-mode Linux)",
        ["case", "steering changes", "helper OK ms", "helper 1st ARP ms"],
    )
    table.add("without a map", 0, mm(plain), "")
    table.add(f"with a {m}-range map", changes, mm(ok), mm(arps))
    table.add("difference of the medians", "", ms(median(ok) - median(plain)), "")
    table.add("the steering changes alone (applied in one call)", changes, mm(alone, 1e3, 2, 2), "")
    tc_reads = "reading tc in each observe (2 netlink dumps; difference of medians)"
    table.add(tc_reads, "", ms(median(with_tc) - median(without), 2), "")
    table.notes.append(
        f"Median of {reps} runs each, with and without the map alternately (the changes alone "
        "and the reads: 9 or more runs in one namespace); the steering changes are 1 clsact "
        "qdisc, 1 tc filter per CIDR block of the VIPs and 2 per range (TCP, UDP: the "
        "owner's MAC written and the packet sent back out, or dropped while that MAC is not "
        "known), sent in the same netlink batches, and for the balancer's own range a "
        "firewall-mark service and its real server (none here: the balancer is not in this map)."
    )
    name = f"{v} VIPs x {m} members with a {m}-range member map: OK under 100 ms"
    return table, under("activation", name, median(ok) * 1000, 100, "ms")


def steering_alone(vipfile: str, path: str, reps: int) -> tuple[list[float], ...]:
    """From standby: the target case's steering changes applied (and removed) in one
    apply_many each, and an observe that reads tc against one that does not."""
    vips, spent = vips_in(vipfile), ([], [], [])
    members = load_members(path, [p for _, p in DEFAULT_PORTS], vips)
    settings = Settings(vipfile=vipfile, iface="eth0", member_map=path)
    want = desired_state(settings, vips, Role.ACTIVE, members_of(TARGET_CASE[1]), FE_IP)
    # the owners' MACs as the neighbour table would give them: every range sent to its owner
    macs = frozenset((m.ip, f"02:00:00:00:ff:{i:02x}") for i, m in enumerate(members))
    lan = TcState(mac="02:00:00:00:ff:fe", neighbours=macs)
    base = attrs.evolve(want, services=frozenset(), dests=frozenset())
    want = steer(base, members, True, vips, None, lan)
    undo = attrs.evolve(want, services=frozenset(), dests=frozenset(), filters=frozenset())
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
                t1 = time.perf_counter()
                kernel.observe(frozenset())
                t2 = time.perf_counter()
                busy = kernel.observe(frozenset(), "eth0")
                for times_, t in zip(spent, (t1 - t0, time.perf_counter() - t2, t2 - t1)):
                    times_.append(t)
                if failures:
                    raise RuntimeError(f"steering changes failed: {failures[:3]}")
                kernel.apply_many([op for op in plan(undo, busy) if steers(str(op))])
        finally:
            kernel.close()
    return spent
