"""Tables, targets and small statistics shared by the host and the in-UML half.

Results cross the UML boundary as JSON, so tables and targets are plain data (`to_dict` /
`from_dict`) and are rendered only on the host, both as text for the terminal and as Markdown
for the README.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


def median(values: Sequence[float]) -> float:
    """Median of the repetitions; every figure reported is one, so one noisy run cannot rule."""
    return float(statistics.median(values))


def spread(values: Sequence[float], scale: float = 1.0, digits: int = 0) -> str:
    """'min-max' of the repetitions, to show how much a median can be trusted."""
    if len(values) < 2:
        return "-"
    return f"{min(values) * scale:.{digits}f}-{max(values) * scale:.{digits}f}"


def ms(seconds: float | None, digits: int = 1) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.{digits}f}"


def secs(seconds: float | None, digits: int = 2) -> str:
    return "-" if seconds is None else f"{seconds:.{digits}f}"


def ratio(slow: float | None, fast: float | None) -> float | None:
    if slow is None or not fast:
        return None
    return slow / fast


def times(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}x" if value >= 10 else f"{value:.1f}x"


@dataclass
class Table:
    """One benchmark's table: a title, column names, rows of text cells, and notes under it."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Table:
        return cls(data["title"], list(data["columns"]), data["rows"], data.get("notes", []))

    def text(self) -> str:
        widths = [len(c) for c in self.columns]
        for row in self.rows:
            widths = [max(w, len(cell)) for w, cell in zip(widths, row)]
        rule = "  ".join("-" * w for w in widths)
        lines = [self.title, "=" * len(self.title)]
        lines.append("  ".join(c.ljust(w) for c, w in zip(self.columns, widths)).rstrip())
        lines.append(rule)
        for row in self.rows:
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        lines += [f"  * {note}" for note in self.notes]
        return "\n".join(lines)

    def markdown(self) -> str:
        def esc(cell: str) -> str:
            return cell.replace("|", "\\|")

        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(esc(c) for c in self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        for row in self.rows:
            lines.append("| " + " | ".join(esc(c) for c in row) + " |")
        if self.notes:
            lines.append("")
            lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines)


@dataclass
class Target:
    """A goal of issue 5 and whether this run met it; `met` is None when it was not measured."""

    benchmark: str
    name: str
    goal: str
    value: str
    met: bool | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Target:
        return cls(data["benchmark"], data["name"], data["goal"], data["value"], data["met"])

    @property
    def verdict(self) -> str:
        return {True: "met", False: "NOT MET", None: "not measured"}[self.met]


def result(
    name: str,
    tables: Sequence[Table],
    targets: Sequence[Target] = (),
    raw: dict[str, Any] | None = None,
    seconds: float | None = None,
) -> dict[str, Any]:
    """The JSON form of one benchmark's outcome (what latest.json holds per benchmark)."""
    return {
        "name": name,
        "ok": True,
        "tables": [t.to_dict() for t in tables],
        "targets": [t.to_dict() for t in targets],
        "raw": raw or {},
        "seconds": seconds,
    }


def failed(name: str, error: str, seconds: float | None = None) -> dict[str, Any]:
    """A benchmark that could not run: recorded, so the others still count."""
    return {
        "name": name,
        "ok": False,
        "error": error,
        "tables": [],
        "targets": [],
        "raw": {},
        "seconds": seconds,
    }
