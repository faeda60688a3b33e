"""Tables, targets and the figures in them, shared by the host and the in-UML half.

Results cross the UML boundary as JSON, so tables and targets are plain data (`asdict` and
back), rendered only on the host: as text for the terminal and as Markdown for the README.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Callable


def median(values: Sequence[float]) -> float:
    """Every figure is the median of the repetitions, so one noisy run cannot rule."""
    return float(statistics.median(values))


def spread(values: Sequence[float], scale: float = 1.0, digits: int = 0) -> str:
    """'min-max' of the repetitions, to show how far a median can be trusted."""
    if len(values) < 2:
        return "-"
    return f"{min(values) * scale:.{digits}f}-{max(values) * scale:.{digits}f}"


def mm(values: Sequence[float], scale: float = 1000.0, digits: int = 1, low: int = 0) -> str:
    """'median (min-max)', by default of seconds in milliseconds."""
    mid = f"{median(values) * scale:.{digits}f}" if values else "-"
    return f"{mid} ({spread(values, scale, low)})"


def ms(seconds: float | None, digits: int = 1) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.{digits}f}"


def times(slow: float | None, fast: float | None) -> str:
    """How many times `fast` is shorter than `slow`."""
    if slow is None or not fast:
        return "-"
    r = slow / fast
    return f"{r:.0f}x" if r >= 10 else f"{r:.1f}x"


def per(fn: Callable[[], object], items: int) -> float:
    """Seconds per item of one call of `fn` that handles `items` items."""
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) / max(items, 1)


@dataclass
class Table:
    """One table: a title, column names, rows of text cells, and notes under it."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def text(self) -> str:
        widths = [
            max(len(r[i]) for r in [self.columns, *self.rows]) for i in range(len(self.columns))
        ]
        lines = [self.title, "=" * len(self.title)]
        for row in [self.columns, ["-" * w for w in widths], *self.rows]:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        return "\n".join(lines + [f"  * {note}" for note in self.notes])

    def markdown(self) -> str:
        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

        lines = [f"### {self.title}", "", line(self.columns)]
        lines += ["|" + "|".join("---" for _ in self.columns) + "|", *map(line, self.rows)]
        return "\n".join(lines + ([""] if self.notes else []) + [f"- {n}" for n in self.notes])


@dataclass
class Target:
    """A goal of issue 5 (or 11, 12) and whether this run met it; `met` None: not measured."""

    benchmark: str
    name: str
    goal: str
    value: str
    met: bool | None

    @property
    def verdict(self) -> str:
        return {True: "met", False: "NOT MET", None: "not measured"}[self.met]


def under(bench: str, name: str, value: float | None, limit: float, unit: str, digits: int = 1):
    """The target `name`: `value` (in `unit`) below `limit`."""
    shown = "-" if value is None else f"{value:.{digits}f}"
    met = None if value is None else value < limit
    return Target(bench, name, f"< {limit:g} {unit}", f"{shown} {unit}", met)


def result(name: str, tables: Sequence[Table], targets: Sequence[Target] = (), **raw: Any):
    """The JSON form of one benchmark's outcome (what latest.json holds per benchmark)."""
    return {
        "name": name,
        "ok": True,
        "tables": [asdict(t) for t in tables],
        "targets": [asdict(t) for t in targets],
        "raw": raw,
    }


def failed(name: str, error: str) -> dict[str, Any]:
    """A benchmark that could not run: recorded, so the others still count."""
    return {"name": name, "ok": False, "error": error, "tables": [], "targets": [], "raw": {}}
