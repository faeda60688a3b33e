"""Benchmark 3 (inside UML): what a planned switch of the active balancer costs the clients.

Three frontends (echo servers on the VIPs, one helper each, as in
tests/kernel/test_scenarios.py) and a client with 12 long-lived TCP connections through a VIP,
each pinged every 20 ms. After the sync daemons settled, fe1 gets DEACTIVATE and fe2 ACTIVATE
at once (both lines written back to back; CGP sends them at about the same time, in no
guaranteed order). Measured: the longest time any connection went without an answer, and how
many connections still answer at the end of the window (the old balancer's drain plus 2 s).

Baseline: the "cut" order, the old balancer's state removed at once (helpers started with
`--drain 0`), measured the same way. Because the cut only hurts while clients still send to the
old balancer, both orders are also measured with the ACTIVATE arriving 0.5 s after the
DEACTIVATE, the case the drain exists for.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from tests.lab.group import Group

from .lab import lan_prefix, progress
from .report import Table, Target, median, ms, result, secs, spread

VIPS = ["198.51.100.10", "198.51.100.11"]
SOURCES = [f"192.0.2.{n}" for n in range(64, 76)]
CONNECTIONS = 12
DEFAULT_DRAIN_S = 5.0  # cgp_ipvs_helper's --drain default
AFTER_DRAIN_S = 2.0
TARGET_GAP_S = 1.0
LATE_S = 0.5
# (key, --drain value or None for the default, delay of the ACTIVATE after the DEACTIVATE)
VARIANTS: list[tuple[str, str | None, float]] = [
    ("drain", None, 0.0),
    ("cut", "0", 0.0),
    ("drain-late", None, LATE_S),
    ("cut-late", "0", LATE_S),
]


def one_run(drain: str | None, delay: float, window: float) -> dict[str, Any]:
    """One switch fe1 -> fe2 in fresh namespaces; what the 12 connections saw."""
    with Group(lan_prefix("fo"), VIPS, sources=SOURCES, udp=False) as g:
        args = ["-t", "3"] + ([] if drain is None else ["--drain", drain])
        helpers = g.start_all(*args, timeout=180)
        first = helpers[0].request(f"ACTIVATE {g.members()}", timeout=60)
        if not first.endswith("members=3"):
            raise RuntimeError(f"fe1 ACTIVATE answered {first!r}")
        move = g.switch(helpers[0], helpers[1], count=CONNECTIONS, delay=delay, window=window)
    if not (move.old_reply or "").endswith("OK standby") or " OK active" not in move.new_reply:
        raise RuntimeError(f"switch answered {move.old_reply!r} / {move.new_reply!r}")
    kept = [c for c in move.stats.conns if not c.broken]
    return {
        "kept": len(kept),
        "connections": len(move.stats.conns),
        "max_gap_s": move.stats.max_gap,
        "max_gap_kept_s": max((c.max_gap for c in kept), default=None),
        "new_ok_s": move.new_ok_s,
        "old_ok_s": move.old_ok_s,
        "by_frontend": dict(move.before),
        "broken_by_frontend": dict(move.lost),
        "summary": move.stats.summary(),
    }


def run(reps: int) -> dict[str, Any]:
    t_start = time.monotonic()
    window = DEFAULT_DRAIN_S + AFTER_DRAIN_S
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in VARIANTS}
    for rep in range(reps):
        for name, drain, delay in VARIANTS:
            r = one_run(drain, delay, window)
            runs[name].append(r)
            progress(f"failover {name} rep {rep + 1}/{reps}: {r['summary']}")
    return _report(runs, reps, window, time.monotonic() - t_start)


def _report(
    runs: dict[str, list[dict[str, Any]]], reps: int, window: float, seconds: float
) -> dict[str, Any]:
    table = Table(
        f"Failover gap: {CONNECTIONS} long-lived TCP connections, DEACTIVATE fe1 + ACTIVATE fe2 "
        "at once (inside user-mode Linux)",
        [
            "order",
            "connections kept",
            "longest gap, all (s)",
            "longest gap, kept (s)",
            "new balancer OK (ms)",
            "runs with losses",
            "lost, by first frontend",
        ],
    )
    labels = {
        "drain": f"at once: drain (helper default, --drain {DEFAULT_DRAIN_S:g})",
        "cut": "at once: baseline cut (--drain 0)",
        "drain-late": f"ACTIVATE {LATE_S:g} s late: drain",
        "cut-late": f"ACTIVATE {LATE_S:g} s late: baseline cut",
    }
    targets: list[Target] = []
    for name, _, _ in VARIANTS:
        rs = runs[name]
        kept = [float(r["kept"]) for r in rs]
        gaps = [r["max_gap_s"] for r in rs]
        kept_gaps = [r["max_gap_kept_s"] for r in rs if r["max_gap_kept_s"] is not None]
        new_ok = [r["new_ok_s"] for r in rs]
        lost: Counter[str] = Counter()
        for r in rs:
            lost.update(r["broken_by_frontend"])
        lossy = sum(1 for r in rs if r["kept"] < r["connections"])
        table.add(
            labels[name],
            f"{median(kept):.0f}/{CONNECTIONS} ({spread(kept)})",
            f"{secs(median(gaps))} ({spread(gaps, 1, 2)})",
            f"{secs(median(kept_gaps)) if kept_gaps else '-'} ({spread(kept_gaps, 1, 2)})",
            f"{ms(median(new_ok), 0)} ({spread(new_ok, 1000)})",
            f"{lossy} of {len(rs)}",
            ", ".join(f"{k}: {v}" for k, v in sorted(lost.items())) or "none",
        )
        if name == "drain":
            gap = median(gaps)
            targets.append(
                Target(
                    "failover",
                    f"longest failover gap under {TARGET_GAP_S:g} s (drain)",
                    f"< {TARGET_GAP_S:g} s",
                    f"{gap:.3f} s",
                    gap < TARGET_GAP_S,
                )
            )
    spread_txt = "; ".join(
        " ".join(f"{k}={v}" for k, v in sorted(r["by_frontend"].items())) for r in runs["drain"]
    )
    table.notes += [
        f"Median of {reps} runs (min-max in brackets), each with fresh namespaces and helpers "
        f"(-t 3); connections pinged every 20 ms; window {window:g} s after the ACTIVATE (the "
        f"default drain + {AFTER_DRAIN_S:g} s); a connection is lost when it errs or has no "
        "answer in the last second of the window, and then its gap runs to the window's end.",
        "new balancer OK: from writing its ACTIVATE to reading the OK (2 VIPs, 3 members).",
        f"Connections by first frontend before the switch (drain runs): {spread_txt}.",
        "lost, by first frontend: summed over all runs, the frontend that served each lost "
        "connection before the switch.",
    ]
    return result("failover", [table], targets, {"reps": reps, "runs": runs}, seconds)
