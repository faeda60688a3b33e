"""Tables, targets and their figures: plain data, to cross the UML boundary as JSON and be
rendered on the host as text and as Markdown (docs/benchmarks.md)."""

from __future__ import annotations

import statistics
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


def repeat(
    reps: int, cases: Mapping[K, Callable[[], T]], show: Callable[[K, T], str] | None = None
) -> dict[K, list[T]]:
    """Each case once a round for `reps` rounds (a drift of the machine hits all cases alike):
    every case's results, and a line of progress for each (`show`, or the case and its figures)."""
    out: dict[K, list[T]] = {case: [] for case in cases}
    for rep in range(reps):
        for case, fn in cases.items():
            run = fn()
            line = show(case, run) if show else f"{case}: {', '.join(figures(run))}"
            print(f"  {line} (run {rep + 1}/{reps})", flush=True)
            out[case].append(run)
    return out


def figures(run: Any, name: str = "") -> list[str]:
    """The seconds (keys ending in _s) of a run's record in ms."""
    if isinstance(run, dict):
        return [f for key, value in run.items() for f in figures(value, f"{name} {key}".strip())]
    if isinstance(run, float) and name.endswith("_s"):
        return [f"{name[:-2]} {run * 1000:.1f} ms"]
    return []


def pick(runs: Sequence[Any], *path: str | int) -> list[float]:
    """The figure at `path` of each run where it was measured (neither missing nor None)."""
    out = []
    for node in runs:
        try:
            for key in path:
                node = node[key]
        except (KeyError, IndexError, TypeError):
            continue
        if node is not None:
            out.append(float(node))
    return out


def median_of(runs: Sequence[Any], *path: str | int) -> float | None:
    values = pick(runs, *path)
    return median(values) if values else None


@dataclass
class Table:
    """A title, column names, rows of text cells, and notes under it; Markdown on the terminal
    too."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def markdown(self) -> str:
        rows = [self.columns, ["---"] * len(self.columns), *self.rows]
        lines = ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
        lines[1] = lines[1].replace(" ", "")
        notes = [""] + [f"- {note}" for note in self.notes] if self.notes else []
        return "\n".join([f"### {self.title}", "", *lines, *notes])


@dataclass
class Target:
    """A goal a benchmark checks and whether this run met it; `met` None: not measured."""

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
    name: str, tables: Sequence[Table], targets: Sequence[Target] = (), error: str = "", **raw: Any
) -> dict[str, Any]:
    """One benchmark's outcome as latest.json holds it (`error`: it could not run)."""
    tables_, targets_ = [asdict(t) for t in tables], [asdict(t) for t in targets]
    return dict(name=name, error=error, tables=tables_, targets=targets_, raw=raw)
