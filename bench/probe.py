"""The helper with a stopwatch on its public seams, run by bench.hotspots in place of
`python -m cgp_ipvs_helper`.

    python -m bench.probe RESULT.json HELPER-OPTIONS...

The helper's own parts composed as cli.main composes them (options, kernel, Helper, gc.freeze,
Output, serve), timed where they meet: the kernel is wrapped in a `TimingKernel` (a Kernel like
any other), Helper.handle is timed by a subclass, and Output writes into a stream that records
what leaves. Nothing of the product is patched. The first ACTIVATE is timed phase by phase, then
the costly steps alone on its very operations and output, and everything goes to RESULT.json.

cProfile is not used: inside user-mode Linux every clock read is a system call (about 10 us),
and cProfile reads the clock twice per function call, which buries the real costs.
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
from cgp_ipvs_helper.executor import execute
from cgp_ipvs_helper.helper import Helper
from cgp_ipvs_helper.kernel import Kernel
from cgp_ipvs_helper.model import KernelState
from cgp_ipvs_helper.operations import Operation

KINDS = {"AddAddress": "addresses", "DelAddress": "addresses", "SendGarp": "garp"}
KINDS["SetSysctl"] = "sysctl"  # anything else is an IPVS request (generic netlink)


def minor_faults() -> int:
    """Page faults of this process so far: each costs tens of microseconds in UML."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def kind(op: Operation) -> str:
    return KINDS.get(type(op).__name__, "ipvs")


class TimingKernel:
    """A Kernel that times the kernel it wraps: observe, and apply_many in runs of one kind of
    operation (the runs the netlink kernel batches anyway), so each batch is timed alone."""

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
        return getattr(self.inner, "ipvs_problem", None)

    @contextmanager
    def _timed(self, label: str) -> Iterator[None]:
        f0, t0 = minor_faults(), time.perf_counter()
        self.started.setdefault(label, t0)
        try:
            yield
        finally:
            self.spent[label] += time.perf_counter() - t0
            self.faults[label] += minor_faults() - f0

    def observe(self, sysctls: frozenset[str]) -> KernelState:
        with self._timed("observe"):
            return self.inner.observe(sysctls)

    def apply(self, op: Operation) -> None:
        self.apply_many([op])

    def apply_many(self, ops: Iterable[Operation]) -> list[KernelError]:
        ops = list(ops)
        self.ops += ops
        failures: list[KernelError] = []
        for label, run in itertools.groupby(ops, key=kind):
            with self._timed(label):
                failures += execute(list(run), self.inner)
        return failures

    def prepare(self, ops: Sequence[Operation]) -> None:
        self.inner.prepare(ops)

    def close(self) -> None:
        self.inner.close()


class Recorder:
    """The stream Output writes to: passes everything on, keeps the last batch written, and
    calls `after` once it is flushed."""

    def __init__(self, inner: BinaryIO) -> None:
        self.inner, self.writes, self.last = inner, 0, b""
        self.after: Callable[[], None] = lambda: None

    def write(self, data: bytes) -> int:
        self.writes += 1
        self.last = bytes(data)  # (the helper reuses its buffer)
        return int(self.inner.write(data))

    def flush(self) -> None:
        self.inner.flush()
        self.after()


def per_item(fn: Callable[[], Any], items: int) -> dict[str, float]:
    t0 = time.perf_counter()
    fn()
    spent = time.perf_counter() - t0
    return {"items": items, "seconds": spent, "each_us": spent / max(items, 1) * 1e6}


def components(ops: Sequence[Operation], lines: Sequence[bytes]) -> dict[str, Any]:
    """The costly steps again, each alone, on the same operations and output lines."""
    out: dict[str, Any] = {"render": per_item(lambda: [str(op) for op in ops], len(ops))}
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

    out["pipe_per_line"] = per_item(per_line, len(lines))
    out["pipe_joined"] = per_item(joined, 1)
    pipe.close()
    reader.wait(30)
    out["lines"] = len(lines)
    out["bytes"] = sum(len(line) + 1 for line in lines)
    return out


class Probe(Helper):
    """The helper, with its first ACTIVATE timed from handle() to the end of its output; the
    record is completed and written when the next request arrives."""

    def arm(self, kernel: TimingKernel, stream: Recorder, result_path: str) -> None:
        self.timing, self.stream, self.result_path = kernel, stream, result_path
        self.mark: dict[str, Any] = {}
        self.ops: list[Operation] = []
        self.lines: list[bytes] = []

    def handle(self, line: str | bytes) -> Any:
        text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
        if "record" in self.mark:  # the request after the ACTIVATE: nothing else runs now
            self.save()
        if " ACTIVATE" not in text or self.mark:
            return super().handle(line)
        self.timing.reset()
        self.mark = {"f0": minor_faults(), "t0": time.perf_counter()}
        reply = super().handle(line)
        self.mark.update(f1=minor_faults(), t1=time.perf_counter(), writes=self.stream.writes)
        return reply

    def written(self) -> None:
        """After each output batch: the ACTIVATE's record once its output is out."""
        m = self.mark
        if "t1" not in m or "done" in m:
            return
        t2, f2 = time.perf_counter(), minor_faults()
        m["done"] = 1.0
        k = self.timing
        kernel_s = sum(k.spent.values())
        phases = {key: k.spent.get(key, 0.0) for key in ("observe", "ipvs", "addresses")}
        phases.update(sysctl=k.spent.get("sysctl", 0.0), garp=k.spent.get("garp", 0.0))
        phases["engine"] = max(0.0, m["t1"] - m["t0"] - kernel_s)
        phases["output"] = t2 - m["t1"]
        faults = dict(k.faults)
        faults["handle"] = int(m["f1"] - m["f0"])
        faults["output"] = f2 - int(m["f1"])
        faults["engine"] = faults["handle"] - sum(k.faults.values())
        lines = self.stream.last.rstrip(b"\n").split(b"\n")
        record = {
            "phases": phases,
            "faults": faults,
            "handle": m["t1"] - m["t0"],
            "total": t2 - m["t0"],
            "first_garp": k.started["garp"] - m["t0"] if "garp" in k.started else None,
            "ops": len(k.ops),
            "output_writes": self.stream.writes - int(m["writes"]),
            "reply": lines[-1].decode(),
        }
        self.mark["record"] = record
        self.ops, self.lines = list(k.ops), lines

    def save(self) -> None:
        """The steps alone (not while the reader still reads the ACTIVATE's output), then the
        record to RESULT.json."""
        record: dict[str, Any] = self.mark.pop("record")
        record["components"] = components(self.ops, self.lines)
        with open(self.result_path, "w") as f:
            json.dump(record, f)


def main(argv: Sequence[str]) -> int:
    """cli.main's composition, with the timed kernel, helper and output stream."""
    result_path, settings = argv[0], cli.parse_settings(argv[1:])
    inner, notes = cli.make_kernel(settings)
    kernel = TimingKernel(inner)
    stream = Recorder(sys.stdout.buffer)
    helper = Probe(settings, kernel, clock=time.monotonic)
    helper.arm(kernel, stream, result_path)
    stream.after = helper.written
    gc.freeze()
    try:
        cli.serve(helper, sys.stdin.fileno(), cli.Output(stream), notes)  # type: ignore[arg-type]
    finally:
        kernel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
