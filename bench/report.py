"""Tables, targets and the figures in them. Results cross the UML boundary as JSON, so tables and
targets are plain data, rendered on the host as text (terminal) and Markdown (README)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

K, T = TypeVar("K"), TypeVar("T")


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
    return f"{slow / fast:.0f}x" if slow / fast >= 10 else f"{slow / fast:.1f}x"


def per(fn: Callable[[], object], items: int) -> float:
    """Seconds per item of one call of `fn` that handles `items` items."""
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) / max(items, 1)


def repeat(
    reps: int, cases: Mapping[K, Callable[[], T]], show: Callable[[K, T], str]
) -> dict[K, list[T]]:
    """Each case once a round for `reps` rounds (a drift of the machine hits all cases alike):
    every case's results, and a line of progress for each."""
    out: dict[K, list[T]] = {case: [] for case in cases}
    for rep in range(reps):
        for case, fn in cases.items():
            out[case].append(fn())
            print(f"  {show(case, out[case][-1])} (run {rep + 1}/{reps})", flush=True)
    return out


@dataclass
class Table:
    """A title, column names, rows of text cells, and notes under it."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def text(self) -> str:
        rows = [self.columns, *self.rows]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.columns))]
        rows.insert(1, ["-" * w for w in widths])
        lines = [self.title, "=" * len(self.title)]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        return "\n".join(lines + [f"  * {note}" for note in self.notes])

    def markdown(self) -> str:
        rows = [self.columns, ["---"] * len(self.columns), *self.rows]
        lines = ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
        lines[1] = lines[1].replace(" ", "")
        notes = [""] + [f"- {note}" for note in self.notes] if self.notes else []
        return "\n".join([f"### {self.title}", "", *lines, *notes])


@dataclass
class Target:
    """A goal of a benchmark and whether this run met it; `met` None: not measured."""

    benchmark: str
    name: str
    goal: str
    value: str
    met: bool | None


def under(
    bench: str, name: str, value: float | None, limit: float, unit: str, digits: int = 1
) -> Target:
    """The target `name`: `value` (in `unit`) below `limit`."""
    shown = "-" if value is None else f"{value:.{digits}f}"
    met = None if value is None else value < limit
    return Target(bench, name, f"< {limit:g} {unit}", f"{shown} {unit}", met)


def result(
    name: str, tables: Sequence[Table], targets: Sequence[Target] = (), **raw: Any
) -> dict[str, Any]:
    """One benchmark's outcome as latest.json holds it."""
    tables_, targets_ = [asdict(t) for t in tables], [asdict(t) for t in targets]
    return dict(name=name, error="", tables=tables_, targets=targets_, raw=raw)


def failed(name: str, error: str) -> dict[str, Any]:
    """A benchmark that could not run: recorded, so the others still count."""
    return dict(name=name, error=error, tables=[], targets=[], raw={})
