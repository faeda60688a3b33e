"""Benchmark 1 (inside UML): how soon after ACTIVATE the LAN can use the VIPs.

Helper: a real-mode helper already in standby in a fresh namespace; the clock starts when the
ACTIVATE line is written and stops at its `OK`, and at the first gratuitous ARP a client on the
same bridge receives (kernel timestamp of a packet socket).

Baseline ("classic"): the same kernel change made one process per change, as a shell script
would: the very commands the helper's -m mode prints for that ACTIVATE, run by bash in a fresh
namespace already in the same standby state, from the first command until the client sees the
first ARP. A /24 means thousands of forks at tens of ms each in this kernel, so where the list
is long a sample of every kind of command is run and the rest extrapolated per kind; the table
says so ("extrapolated from N of M commands"), and one fully measured case is extrapolated too,
as a check of the method.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import attrs

from cgp_ipvs_helper.helper import Helper
from cgp_ipvs_helper.memberfile import load_members
from cgp_ipvs_helper.model import Role, Settings
from cgp_ipvs_helper.netlink import NetlinkKernel
from cgp_ipvs_helper.outgoing import steer
from cgp_ipvs_helper.planner import DEFAULT_PORTS, desired_state, plan
from cgp_ipvs_helper.protocol import render
from tests.lab.driver import HelperProcess, commands, write_vipfile
from tests.lab.group import expand
from tests.lab.lan import Host
from tests.lab.netns import in_netns

from . import limit
from .lab import FE_IP, ArpWatch, Snapshot, fresh_lan, progress, snapshot
from .report import Table, Target, median, ms, ratio, result, secs, spread, times

VIP_COUNTS = (1, 8, 256)
MEMBER_COUNTS = (2, 4, 16)
VIP_ENTRIES = {1: ["203.0.113.1"], 8: ["203.0.113.8/29"], 256: ["203.0.113.0/24"]}
TARGET_CASE = (256, 4)
TARGET_MS = 100.0
TARGET_RATIO = 20.0
FULL_LIMIT = 300  # commands before the first ARP up to which the baseline runs them all
CHECK_CASE = (8, 16)  # measured in full and also extrapolated, to check the extrapolation
SAMPLE_CAPS = {"ipvsadm -A": 16, "ipvsadm -a": 64, "ip address add": 16}


def members_of(count: int) -> list[str]:
    """This frontend first, then addresses on the LAN that nobody holds (IPVS accepts them)."""
    return [FE_IP] + [f"192.0.2.{12 + i}" for i in range(count - 1)]


def kind(command: str) -> str:
    words = command.split()
    if words[0] == "ipvsadm":
        return "ipvsadm daemon" if "daemon" in words[1] else f"ipvsadm {words[1]}"
    if words[0] == "ip":
        return " ".join(words[:3])
    return words[0]


@dataclass
class Segment:
    """A run of commands of one kind, as the helper orders them; `run` is what is executed."""

    kind: str
    commands: list[str]
    run: list[str] = field(default_factory=list)


def segments(cmds: Sequence[str], full: bool) -> list[Segment]:
    """The commands up to the first arping, grouped by kind, with the part to run chosen.

    A sample keeps prerequisites: a real server is only added to a sampled service.
    """
    first_arp = next(i for i, c in enumerate(cmds) if c.startswith("arping "))
    segs: list[Segment] = []
    for c in cmds[: first_arp + 1]:
        k = kind(c)
        if not segs or segs[-1].kind != k:
            segs.append(Segment(k, []))
        segs[-1].commands.append(c)
    services: set[tuple[str, str]] = set()
    for seg in segs:
        if full or seg.kind not in SAMPLE_CAPS:
            seg.run = list(seg.commands)
        elif seg.kind == "ipvsadm -a":
            eligible = [c for c in seg.commands if tuple(c.split()[2:4]) in services]
            seg.run = eligible[: SAMPLE_CAPS[seg.kind]]
        else:
            seg.run = seg.commands[: SAMPLE_CAPS[seg.kind]]
        if seg.kind == "ipvsadm -A":
            services |= {(c.split()[2], c.split()[3]) for c in seg.run}
    return segs


def dry_run_commands(vipfile: str, member_counts: Sequence[int]) -> dict[int, list[str]]:
    """What `-m` prints for ACTIVATE from standby, per member count (one -m process)."""
    out: dict[int, list[str]] = {}
    with fresh_lan("dry") as (_lan, fe, _client):
        helper = HelperProcess(fe, "-m", "--drain", "0", "-f", vipfile, "-i", "eth0", timed=True)
        try:
            helper.wait_started(60)
            for m in member_counts:
                reply = helper.exchange("ACTIVATE " + " ".join(members_of(m)), 60)
                if " OK active" not in reply.line:
                    raise RuntimeError(f"-m ACTIVATE failed: {reply.line}")
                out[m] = commands(reply.before)
                helper.request("DEACTIVATE", 60)
                status = helper.request("STATUS", 60)
                if "role=standby" not in status:
                    raise RuntimeError(f"-m helper did not return to standby: {status}")
        finally:
            helper.kill()
    return out


def measure_helper(
    vipfile: str, vips: list[str], members: list[str], *options: str
) -> dict[str, Any]:
    """One ACTIVATE of a started real-mode helper in fresh namespaces."""
    with fresh_lan("act") as (_lan, fe, client):
        helper = HelperProcess(fe, "-f", vipfile, "-i", "eth0", *options, timed=True)
        try:
            helper.wait_started(timeout=180)
            with ArpWatch(client, fe.mac, vips) as watch:
                watch.clear()
                reply = helper.exchange("ACTIVATE " + " ".join(members), timeout=180)
                arp = watch.first(timeout=10)
            expected = f"OK active vips={len(vips)} members={len(members)}"
            if not reply.line.endswith(expected):
                raise RuntimeError(f"ACTIVATE answered {reply.line!r}")
            return {
                "ok_s": reply.seconds,
                "first_arp_s": None if arp is None else arp - reply.sent,
                "info_lines": len(reply.before),
                "steering_changes": len([c for c in commands(reply.before) if _steers(c)]),
                "state": snapshot(fe),
            }
        finally:
            helper.kill()


def standby(fe: Host, vipfile: str) -> None:
    """The standby state a started helper leaves (lo aliases, sysctls, backup sync daemon)."""
    with in_netns(fe.ns):
        kernel = NetlinkKernel()
        try:
            lines = render(Helper(Settings(vipfile=vipfile, iface="eth0"), kernel).start())
        finally:
            kernel.close()
    failed = [line for line in lines if "FAILED" in line or "ERROR" in line]
    if failed:
        raise RuntimeError(f"standby set-up failed: {failed[:3]}")


def _script(segs: Sequence[Segment], marks: str) -> str:
    """bash: the commands one process each; $EPOCHREALTIME marks (no fork) between kinds."""
    lines = [f"exec 3>{marks}"]
    for i, seg in enumerate(segs):
        lines.append(f'echo "{i} $EPOCHREALTIME" >&3')
        run = seg.run
        if seg.kind == "arping":
            lines.append(f"exec {run[0]}")  # the first ARP ends the measurement
        else:
            lines += run
    return "\n".join(lines) + "\n"


def measure_baseline(vipfile: str, vips: list[str], cmds: list[str], full: bool) -> dict[str, Any]:
    """The classic way in fresh namespaces; the first ARP measured, or extrapolated per kind."""
    segs = segments(cmds, full)
    with fresh_lan("cls") as (_lan, fe, client), tempfile.TemporaryDirectory() as tmp:
        standby(fe, vipfile)
        path, marks, errors = (os.path.join(tmp, n) for n in ("run.sh", "marks", "stderr"))
        with open(path, "w") as f:
            f.write(_script(segs, marks))
        ran = sum(len(s.run) for s in segs)
        with ArpWatch(client, fe.mac, vips) as watch, open(errors, "w") as err:
            watch.clear()
            with in_netns(fe.ns):
                proc = subprocess.Popen(["bash", "-e", path], stdout=subprocess.DEVNULL, stderr=err)
            try:
                arp = watch.first(timeout=30 + 2.0 * ran)
            finally:
                proc.kill()
                proc.wait(30)
        stamps: dict[int, float] = {}
        with open(marks) as f:
            for line in f:
                index, stamp = line.split()
                stamps[int(index)] = float(stamp)
        if arp is None or len(stamps) != len(segs):
            with open(errors) as f:
                raise RuntimeError(f"classic script failed: {f.read()[-500:]!r}")
        state = snapshot(fe) if full else None
    per_kind: dict[str, float] = {}
    estimate = 0.0
    for i, seg in enumerate(segs):
        end = arp if seg.kind == "arping" else stamps[i + 1]
        per_command = (end - stamps[i]) / len(seg.run)
        per_kind[seg.kind] = per_command
        estimate += per_command * (1 if seg.kind == "arping" else len(seg.commands))
    return {
        "first_arp_s": (arp - stamps[0]) if full else estimate,
        "measured": full,
        "ran": ran,
        "total": sum(len(s.commands) for s in segs),
        "per_command_s": per_kind,
        "state": state,
    }


def run(reps: int) -> dict[str, Any]:
    """Every scenario `reps` times, helper and classic alternately; medians in the table."""
    t_start = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="bench-act-")
    files = {v: write_vipfile(os.path.join(tmp, f"vips{v}"), VIP_ENTRIES[v]) for v in VIP_COUNTS}
    progress("activation: commands that -m prints for each scenario")
    dry = {v: dry_run_commands(files[v], MEMBER_COUNTS) for v in VIP_COUNTS}
    cases = [(v, m) for v in VIP_COUNTS for m in MEMBER_COUNTS]
    helper: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    classic: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    limits: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    check: list[float] = []
    for rep in range(reps):
        for v, m in cases:
            vips, cmds = expand(VIP_ENTRIES[v]), dry[v][m]
            pre_arp = next(i for i, c in enumerate(cmds) if c.startswith("arping ")) + 1
            h = measure_helper(files[v], vips, members_of(m))
            c = measure_baseline(files[v], vips, cmds, full=pre_arp <= FULL_LIMIT)
            lim = limit.measure(files[v], vips, members_of(m))
            helper[(v, m)].append(h)
            classic[(v, m)].append(c)
            limits[(v, m)].append(lim)
            if (v, m) == CHECK_CASE:
                check.append(measure_baseline(files[v], vips, cmds, full=False)["first_arp_s"])
            progress(
                f"activation {v}x{m} rep {rep + 1}/{reps}: helper OK {ms(h['ok_s'])} ms, "
                f"first ARP {ms(h['first_arp_s'])} ms; classic first ARP "
                f"{secs(c['first_arp_s'])} s ({'measured' if c['measured'] else 'extrapolated'}"
                f", {c['ran']} of {c['total']} commands run); limit {ms(lim['total_s'], 2)} ms"
            )
    out = _report(cases, dry, helper, classic, check, reps, time.monotonic() - t_start)
    versus, targets = limit.table(cases, helper, limits)
    out["tables"].append(versus.to_dict())
    out["targets"] += [t.to_dict() for t in targets]
    out["raw"]["limit"] = {
        f"{v}x{m}": [{k: x for k, x in r.items() if k != "state"} for r in limits[(v, m)]]
        for v, m in cases
    }
    if TARGET_CASE in helper:
        _steering(out, files[TARGET_CASE[0]], tmp, reps)
    return out


def _steers(command: str) -> bool:
    """A change of the steering (issue 9): tc, or an IPVS firewall-mark service or server."""
    return command.startswith("tc ") or " -f " in command


def _steering(out: dict[str, Any], vipfile: str, tmp: str, reps: int) -> None:
    """The target case with a member map of 4 ranges (one per member) and, alternately, without:
    OK and first ARP, and the steering's cost as the difference of the medians."""
    v, m = TARGET_CASE
    members = members_of(m)
    path = os.path.join(tmp, "cgp-ipvs-members")
    with open(path, "w") as f:
        f.writelines(
            f"{ip} {40000 + 5000 * i}-{44999 + 5000 * i}\n" for i, ip in enumerate(members)
        )
    runs, plain = [], []
    for rep in range(reps):
        plain.append(measure_helper(vipfile, expand(VIP_ENTRIES[v]), members))
        runs.append(measure_helper(vipfile, expand(VIP_ENTRIES[v]), members, "--member-map", path))
        progress(
            f"activation {v}x{m} with a {m}-range member map, rep {rep + 1}/{reps}: "
            f"OK {ms(runs[-1]['ok_s'])} ms (without the map {ms(plain[-1]['ok_s'])} ms)"
        )
    ok, ok0 = median([r["ok_s"] for r in runs]), median([h["ok_s"] for h in plain])
    arps = [r["first_arp_s"] for r in runs if r["first_arp_s"] is not None]
    arp = median(arps) if arps else None
    table = Table(
        f"Steering of outgoing connections (issue 9): ACTIVATE {v} VIPs x {m} members with a "
        f"member map of {m} ranges (inside user-mode Linux)",
        ["case", "steering changes", "helper OK ms", "helper 1st ARP ms"],
    )
    table.add("without a map", 0, f"{ms(ok0)} ({spread([h['ok_s'] for h in plain], 1000)})", "")
    table.add(
        f"with a {m}-range map",
        runs[0]["steering_changes"],
        f"{ms(ok)} ({spread([r['ok_s'] for r in runs], 1000)})",
        f"{ms(arp)} ({spread(arps, 1000)})",
    )
    table.add("difference of the medians", "", f"{ms(ok - ok0)}", "")
    alone = _steering_alone(vipfile, path, reps)
    table.add(
        "the steering changes alone (applied in one call)",
        runs[0]["steering_changes"],
        f"{ms(median(alone['apply_s']), 2)} ({spread(alone['apply_s'], 1000, 2)})",
        "",
    )
    extra = median(alone["observe_with_tc_s"]) - median(alone["observe_s"])
    table.add("reading tc in each observe (2 netlink dumps; difference of medians)", "",
              ms(extra, 2), "")  # fmt: skip
    table.notes.append(
        f"Median of {reps} runs each, with and without the map alternately, fresh namespaces "
        "(the changes alone and the reads: 9 or more runs in one namespace); "
        "the steering changes are 1 clsact "
        "qdisc, 1 tc filter per CIDR block of the VIPs, 2 per range, and per range one "
        "firewall-mark service and its real server; real mode sends them in the same netlink "
        "batches, no process."
    )
    out["tables"].append(table.to_dict())
    label = f"{v} VIPs x {m} members with a {m}-range member map"
    goal = f"< {TARGET_MS:.0f} ms"
    met = ok * 1000 < TARGET_MS
    target = Target(
        "activation", f"{label}: OK under {TARGET_MS:.0f} ms", goal, f"{ms(ok)} ms", met
    )
    out["targets"].append(target.to_dict())
    out["raw"]["steering"] = {
        "ok_s": [r["ok_s"] for r in runs],
        "first_arp_s": arps,
        "changes": runs[0]["steering_changes"],
        "difference_s": ok - ok0,
        **alone,
    }


def _steering_alone(vipfile: str, path: str, reps: int) -> dict[str, list[float]]:
    """What the steering itself costs a real-mode kernel, free of the noise of a whole
    ACTIVATE: its changes for the target case applied (and removed) in one apply_many each,
    and the extra of an observe that also reads tc (qdiscs and filters)."""
    v, m = TARGET_CASE
    settings = Settings(vipfile=vipfile, iface="eth0", member_map=path)
    members = load_members(path, [p for _, p in DEFAULT_PORTS], expand(VIP_ENTRIES[v]))
    base = desired_state(settings, expand(VIP_ENTRIES[v]), Role.ACTIVE, members_of(m), FE_IP)
    apply_s: list[float] = []
    read_s: list[float] = []  # observe with tc
    plain_s: list[float] = []  # observe without
    with fresh_lan("stc") as (_lan, fe, _client):
        standby(fe, vipfile)
        with in_netns(fe.ns):
            kernel = NetlinkKernel()
            try:
                for _ in range(max(reps, 9)):
                    idle = kernel.observe(frozenset(), "eth0")
                    want = attrs.evolve(base, services=frozenset(), dests=frozenset())
                    want = steer(want, members, True, expand(VIP_ENTRIES[v]), None)
                    ops = plan(want, idle)
                    ops = [op for op in ops if _steers(str(op))]
                    t0 = time.perf_counter()
                    failed = kernel.apply_many(ops)
                    apply_s.append(time.perf_counter() - t0)
                    if failed:
                        raise RuntimeError(f"steering changes failed: {failed[:3]}")
                    t0 = time.perf_counter()
                    kernel.observe(frozenset())
                    t1 = time.perf_counter()
                    busy = kernel.observe(frozenset(), "eth0")
                    plain_s.append(t1 - t0)
                    read_s.append(time.perf_counter() - t1)
                    undo = attrs.evolve(want, services=frozenset(), dests=frozenset(),
                                        filters=frozenset())  # fmt: skip
                    kernel.apply_many([op for op in plan(undo, busy) if _steers(str(op))])
            finally:
                kernel.close()
    return {"apply_s": apply_s, "observe_with_tc_s": read_s, "observe_s": plain_s}


def _same(hs: list[dict[str, Any]], cs: list[dict[str, Any]]) -> bool | None:
    states: list[Snapshot] = [c["state"] for c in cs if c["state"] is not None]
    if not states:
        return None
    return all(s == h["state"] for s in states for h in hs)


def _report(
    cases: list[tuple[int, int]],
    dry: dict[int, dict[int, list[str]]],
    helper: dict[tuple[int, int], list[dict[str, Any]]],
    classic: dict[tuple[int, int], list[dict[str, Any]]],
    check: list[float],
    reps: int,
    seconds: float,
) -> dict[str, Any]:
    table = Table(
        "Activation latency (inside user-mode Linux): ACTIVATE -> OK and -> first gratuitous ARP",
        [
            "VIPs x members",
            "kernel changes",
            "helper OK ms",
            "helper 1st ARP ms",
            "classic 1st ARP s",
            "classic measured how",
            "speed-up 1st ARP",
            "speed-up vs OK",
            "same state",
        ],
    )
    raw: dict[str, Any] = {"reps": reps, "cases": {}}
    targets: list[Target] = []
    per_kind: dict[str, list[float]] = defaultdict(list)
    for v, m in cases:
        hs, cs = helper[(v, m)], classic[(v, m)]
        ok = [h["ok_s"] for h in hs]
        arp = [h["first_arp_s"] for h in hs if h["first_arp_s"] is not None]
        base = [c["first_arp_s"] for c in cs]
        for c in cs:
            for k, s in c["per_command_s"].items():
                per_kind[k].append(s)
        ok_med, base_med = median(ok), median(base)
        arp_med = median(arp) if arp else None
        c0 = cs[0]
        how = (
            f"all {c0['total']} commands"
            if c0["measured"]
            else f"extrapolated from {c0['ran']} of {c0['total']} commands"
        )
        same = _same(hs, cs)
        changes = len([c for c in dry[v][m] if not c.startswith("arping ")])
        table.add(
            f"{v} x {m}",
            changes,
            f"{ms(ok_med)} ({spread(ok, 1000)})",
            f"{ms(arp_med)} ({spread(arp, 1000)})",
            f"{secs(base_med)} ({spread(base, 1, 2)})",
            how,
            times(ratio(base_med, arp_med)),
            times(ratio(base_med, ok_med)),
            {True: "yes", False: "NO", None: "n/a (sample)"}[same],
        )
        raw["cases"][f"{v}x{m}"] = {
            "vips": v,
            "members": m,
            "kernel_changes": changes,
            "helper_ok_s": ok,
            "helper_first_arp_s": [h["first_arp_s"] for h in hs],
            "helper_info_lines": [h["info_lines"] for h in hs],
            "classic_first_arp_s": base,
            "classic_measured": c0["measured"],
            "classic_commands_run": c0["ran"],
            "classic_commands_total": c0["total"],
            "classic_per_command_s": [c["per_command_s"] for c in cs],
            "same_kernel_state": same,
            "helper_state": hs[0]["state"].summary,
        }
        if (v, m) == TARGET_CASE:
            targets += _targets(ok_med, arp_med, base_med)
    kinds = ", ".join(f"{k} {median(s) * 1000:.0f} ms" for k, s in per_kind.items())
    table.notes += [
        f"Median of {reps} runs (min-max in brackets), each in fresh namespaces, helper started "
        "and in standby before the clock starts; members other than the frontend are LAN "
        "addresses nobody holds (IPVS accepts them).",
        "classic = the commands `cgp-ipvs-helper -m` prints for that ACTIVATE, run by bash one "
        "process each from the same standby state, until the client receives the first ARP "
        "(the remaining arping calls come after it and are not run).",
        f"classic cost per command here (median): {kinds} (arping: start until the ARP is "
        "seen). Extrapolated rows: per-kind cost of the sampled commands x the number of "
        "commands of that kind.",
        "speed-up vs OK compares the classic first ARP with the helper's OK, which also covers "
        "its whole first ARP round (2 frames per VIP) and logging every change.",
        "same state: after a fully measured classic run, IPVS services, real servers, sync "
        "daemons and addresses equal those the helper made.",
        "Forks are slower in user-mode Linux than on bare metal: ratios are for this kernel.",
    ]
    raw["classic_per_command_median_s"] = {k: median(s) for k, s in per_kind.items()}
    if check and CHECK_CASE in classic:
        full = median([c["first_arp_s"] for c in classic[CHECK_CASE]])
        sample = classic[CHECK_CASE][0]
        ran = sum(len(seg.run) for seg in segments(dry[CHECK_CASE[0]][CHECK_CASE[1]], False))
        table.notes.append(
            f"Check of the extrapolation: {CHECK_CASE[0]} x {CHECK_CASE[1]} measured in full "
            f"({sample['total']} commands) {full:.2f} s; extrapolated the same way from {ran} of "
            f"them {median(check):.2f} s ({median(check) / full - 1:+.0%})."
        )
        raw["extrapolation_check"] = {"full_s": full, "extrapolated_s": check, "ran": ran}
    return result("activation", [table], targets, raw, seconds)


def _targets(ok: float, arp: float | None, base: float) -> list[Target]:
    label = f"{TARGET_CASE[0]} VIPs x {TARGET_CASE[1]} members"
    out = []
    for what, value in (("first ARP", arp), ("OK", ok)):
        met = None if value is None else value * 1000 < TARGET_MS
        goal = f"< {TARGET_MS:.0f} ms"
        out.append(
            Target(
                "activation",
                f"{label}: {what} under {TARGET_MS:.0f} ms",
                goal,
                f"{ms(value)} ms",
                met,
            )
        )
    for what, value in (("first ARP", arp), ("OK", ok)):
        r = ratio(base, value)
        than = "sooner than classic" if what == "first ARP" else "sooner than classic first ARP"
        goal = f">= {TARGET_RATIO:.0f}x"
        met = None if r is None else r >= TARGET_RATIO
        out.append(
            Target("activation", f"{label}: {what} {TARGET_RATIO:.0f}x {than}", goal, times(r), met)
        )
    return out
