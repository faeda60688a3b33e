"""The helper with a stopwatch on its public seams, run by bench.hotspots in place of
`python -m cgp_ipvs_helper`.

    python -m bench.probe RESULT.json HELPER-OPTIONS...

The helper's parts composed as cli.main composes them, timed where they meet: the kernel is
wrapped in a `TimingKernel` (a Kernel like any other), Helper.handle is timed by a subclass, and
Output writes into a stream that notes what leaves. Nothing of the product is patched. The
first ACTIVATE is timed phase by phase, then its costly steps alone on its very operations and
output lines; the record goes to RESULT.json. No cProfile: inside user-mode Linux every clock
read is a system call, and cProfile reads the clock twice per call.
"""

from __future__ import annotations

import gc
import itertools
import json
import resource
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, BinaryIO, Callable

from cgp_ipvs_helper import cli
from cgp_ipvs_helper.errors import KernelError
from cgp_ipvs_helper.helper import Helper
from cgp_ipvs_helper.kernel import Kernel
from cgp_ipvs_helper.model import KernelState
from cgp_ipvs_helper.operations import Operation

from .report import per

KINDS = {"AddAddress": "addresses", "DelAddress": "addresses", "SendGarp": "garp"}
KINDS["SetSysctl"] = "sysctl"  # anything else is an IPVS request (generic netlink)


def faults() -> int:
    """Minor page faults of this process so far: each costs tens of microseconds in UML."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class TimingKernel:
    """A Kernel timing the one it wraps: observe, and apply_many in runs of one kind of
    operation (the runs the netlink kernel batches anyway), each run timed alone."""

    def __init__(self, inner: Kernel) -> None:
        self.inner = inner
        self.reset()

    def reset(self) -> None:
        self.spent: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.started: dict[str, float] = {}  # perf_counter when each kind was first applied
        self.ops: list[Operation] = []

    @property
    def ipvs_problem(self) -> str | None:
        return self.inner.ipvs_problem

    @contextmanager
    def _timed(self, label: str) -> Iterator[None]:
        f0, t0 = faults(), time.perf_counter()
        self.started.setdefault(label, t0)
        try:
            yield
        finally:
            self.spent[label] += time.perf_counter() - t0
            self.faults[label] += faults() - f0

    def observe(self, sysctls: frozenset[str], tc_dev: str | None = None) -> KernelState:
        with self._timed("observe"):
            return self.inner.observe(sysctls, tc_dev)

    def apply(self, op: Operation) -> None:
        failures = self.apply_many([op])
        if failures:
            raise failures[0]

    def apply_many(self, ops: Iterable[Operation]) -> list[KernelError]:
        ops = list(ops)
        self.ops += ops
        failures: list[KernelError] = []
        for label, run in itertools.groupby(ops, key=lambda op: KINDS.get(type(op).__name__)):
            with self._timed(label or "ipvs"):
                failures += self.inner.apply_many(list(run))
        return failures

    def prepare(self, ops: Sequence[Operation]) -> None:
        self.inner.prepare(ops)

    def close(self) -> None:
        self.inner.close()


class Recorder:
    """The stream Output writes to: passes everything on, keeps the last batch, and calls
    `after` once it is flushed."""

    def __init__(self, inner: BinaryIO) -> None:
        self.inner, self.writes, self.last = inner, 0, b""
        self.after: Callable[[], None] = lambda: None

    def write(self, data: bytes) -> int:
        self.writes += 1
        self.last = data
        return int(self.inner.write(data))

    def flush(self) -> None:
        self.inner.flush()
        self.after()


def components(ops: Sequence[Operation], lines: Sequence[bytes]) -> dict[str, Any]:
    """The costly steps again, each alone, on the same operations and output lines: seconds
    per item."""
    reader = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    pipe = reader.stdin
    assert pipe is not None

    def per_line() -> None:
        for line in lines:
            pipe.write(line + b"\n")
            pipe.flush()

    def joined() -> None:
        pipe.write(b"".join(line + b"\n" for line in lines))
        pipe.flush()

    def step(fn: Callable[[], object], items: int) -> dict[str, float]:
        return {"items": items, "each_s": per(fn, items)}

    out = {
        "render": step(lambda: [str(op) for op in ops], len(ops)),
        "pipe_per_line": step(per_line, len(lines)),
        "pipe_joined": step(joined, 1),
        "lines": len(lines),
        "bytes": sum(len(line) + 1 for line in lines),
    }
    pipe.close()
    reader.wait(30)
    return out


class Probe(Helper):
    """The helper, its first ACTIVATE timed from handle() to the end of its output; the record
    is completed and written when the next request arrives (the reader has read it all)."""

    def arm(self, kernel: TimingKernel, stream: Recorder, path: str) -> None:
        self.timing, self.stream, self.path = kernel, stream, path
        self.mark: dict[str, Any] = {}
        stream.after = self.written

    def handle(self, line: str | bytes) -> Any:
        if "record" in self.mark:
            record = self.mark.pop("record")
            record["components"] = components(self.timing.ops, self.lines)
            with open(self.path, "w") as f:
                json.dump(record, f)
        text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
        if " ACTIVATE" not in text or self.mark:
            return super().handle(line)
        self.timing.reset()
        self.mark = {"f0": faults(), "t0": time.perf_counter()}
        reply = super().handle(line)
        self.mark.update(f1=faults(), t1=time.perf_counter(), writes=self.stream.writes)
        return reply

    def written(self) -> None:
        """After each output batch: the ACTIVATE's record, once its output is out."""
        m, k = self.mark, self.timing
        if "t1" not in m or "done" in m:
            return
        t2, f2 = time.perf_counter(), faults()
        m["done"] = True
        phases = {key: k.spent.get(key, 0.0) for key in ("observe", "ipvs", "addresses", "garp")}
        phases["engine"] = max(0.0, m["t1"] - m["t0"] - sum(k.spent.values()))
        phases["output"] = t2 - m["t1"]
        handle = m["f1"] - m["f0"]
        counts = {**k.faults, "handle": handle, "output": f2 - m["f1"]}
        counts["engine"] = handle - sum(k.faults.values())
        self.lines = self.stream.last.rstrip(b"\n").split(b"\n")
        m["record"] = {
            "phases": phases,
            "faults": counts,
            "total": t2 - m["t0"],
            "first_garp": k.started["garp"] - m["t0"] if "garp" in k.started else None,
            "output_writes": self.stream.writes - m["writes"],
        }


def main(argv: Sequence[str]) -> int:
    """cli.main's composition, with the timed kernel, helper and output stream."""
    path, settings = argv[0], cli.parse_settings(argv[1:])
    inner, notes = cli.make_kernel(settings)
    kernel, stream = TimingKernel(inner), Recorder(sys.stdout.buffer)
    helper = Probe(settings, kernel, clock=time.monotonic)
    helper.arm(kernel, stream, path)
    listen = None if settings.dry_run else cli.ArpListener
    gc.freeze()
    try:
        notes = [*notes, *cli.iface_notes(settings.iface)]
        cli.serve(helper, sys.stdin.fileno(), cli.Output(stream), notes, listen)  # type: ignore[arg-type]
    finally:
        kernel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
