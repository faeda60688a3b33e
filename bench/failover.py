"""Benchmark (inside UML): what a planned switch of the active balancer (CGP sends DEACTIVATE and
ACTIVATE at about the same time) costs the clients, with the drain and with a cut at once."""

from __future__ import annotations

from collections import Counter
from typing import Any

from lab.group import Group
from lab.lan import unique

from .report import Table, median, mm, repeat, result, spread, under

VIPS = ["198.51.100.10", "198.51.100.11"]
SOURCES = [f"192.0.2.{n}" for n in range(64, 76)]
CONNECTIONS = 12
WINDOW_S = 5.0 + 2.0  # the helper's --drain default, plus 2 s
VARIANTS = {  # label: (--drain option, delay of the ACTIVATE after the DEACTIVATE)
    "at once: drain (helper default, --drain 5)": ((), 0.0),
    "at once: baseline cut (--drain 0)": (("--drain", "0"), 0.0),
    "ACTIVATE 0.5 s late: drain": ((), 0.5),
    "ACTIVATE 0.5 s late: baseline cut": (("--drain", "0"), 0.5),
}


def switch(drain: tuple[str, ...], delay: float) -> dict[str, Any]:
    """One switch fe1 -> fe2 in fresh namespaces; what the 12 connections saw."""
    with Group(unique("fo"), VIPS, sources=SOURCES, udp=False) as g:
        fe1, fe2, _fe3 = g.start_all("-t", "3", *drain, timeout=180)
        first = fe1.request(f"ACTIVATE {g.members()}", timeout=60)
        if not first.endswith("members=3"):
            raise RuntimeError(f"fe1 ACTIVATE answered {first!r}")
        move = g.switch(fe1, fe2, count=CONNECTIONS, delay=delay, window=WINDOW_S)
    if not (move.old_reply or "").endswith("OK standby") or " OK active" not in move.new_reply:
        raise RuntimeError(f"switch answered {move.old_reply!r} / {move.new_reply!r}")
    kept = [c.max_gap for c in move.stats.conns if not c.broken]
    return {
        "kept": len(kept),
        "gap_s": move.stats.max_gap,
        "kept_gap_s": max(kept, default=None),
        "ok_s": move.new_ok_s,
        "before": dict(move.before),
        "lost": dict(move.lost),
    }


def run(reps: int) -> dict[str, Any]:
    cases = {name: lambda v=v: switch(*v) for name, v in VARIANTS.items()}
    runs = repeat(
        reps, cases, lambda name, r: f"failover {name}: {r['kept']} kept, gap {r['gap_s']:.3f} s"
    )
    table = Table(
        f"Failover gap: {CONNECTIONS} long-lived TCP connections, DEACTIVATE fe1 + ACTIVATE fe2 "
        "at once (inside user-mode Linux)",
        "order | connections kept | longest gap, all (s) | longest gap, kept (s) | "
        "new balancer OK (ms) | runs with losses | lost, by first frontend".split(" | "),
    )
    for name, rs in runs.items():
        kept = [float(r["kept"]) for r in rs]
        lost = sum((Counter(r["lost"]) for r in rs), Counter())
        table.add(
            name,
            f"{median(kept):.0f}/{CONNECTIONS} ({spread(kept)})",
            mm([r["gap_s"] for r in rs], 1, 2, 2),
            mm([r["kept_gap_s"] for r in rs if r["kept_gap_s"] is not None], 1, 2, 2),
            mm([r["ok_s"] for r in rs], 1000, 0),
            f"{sum(r['kept'] < CONNECTIONS for r in rs)} of {len(rs)}",
            ", ".join(f"{k}: {v}" for k, v in sorted(lost.items())) or "none",
        )
    drain = next(iter(runs.values()))
    before = "; ".join(" ".join(f"{k}={v}" for k, v in sorted(r["before"].items())) for r in drain)
    table.notes += [
        f"Median of {reps} runs (min-max in brackets), each with fresh namespaces and helpers "
        f"(-t 3), each connection pinged every 20 ms for {WINDOW_S:g} s after the ACTIVATE; one "
        "is lost when it errs or has no answer in the window's last second (its gap then runs "
        "to the end).",
        "new balancer OK: from writing its ACTIVATE to reading the OK (2 VIPs, 3 members).",
        f"Connections by first frontend before the switch (drain runs): {before}. lost, by "
        "first frontend: summed over all runs, who served each lost connection before.",
    ]
    gap = median([r["gap_s"] for r in drain])
    target = under("failover", "longest failover gap under 1 s (drain)", gap, 1, "s", 3)
    return result("failover", [table], [target], runs=runs)
