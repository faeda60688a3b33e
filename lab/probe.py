"""`python -m lab.probe RESULT.json HELPER-OPTIONS...`: the helper with a stopwatch on its
public seams (a timing Kernel, Helper.handle, the stream Output writes to), composed as cli.main
composes it; nothing of the product is patched. Its first ACTIVATE is timed phase by phase; at
the next request (the reader has read it all) its costly steps are timed alone on its very
operations and lines, and the record goes to RESULT.json. `profiled`: cProfile's view of one
ACTIVATE in-process; `machine_costs`: what basic operations cost where it runs."""

from __future__ import annotations

import cProfile
import functools
import gc
import itertools
import json
import mmap
import os
import pstats
import resource
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from cgp_ipvs_helper import cli
from cgp_ipvs_helper.core.engine import Helper
from cgp_ipvs_helper.core.protocol import Commands, logged, parse_line
from cgp_ipvs_helper.errors import KernelError
from cgp_ipvs_helper.kernel.interface import Kernel
from cgp_ipvs_helper.kernel.netlink.kernel import HANDLERS
from cgp_ipvs_helper.plan.model import KernelState
from cgp_ipvs_helper.plan.operations import AddDests, Operation, each

LINE = b"00002 ACTIVATE 192.0.2.11 192.0.2.12 192.0.2.13 192.0.2.14"
# the phase of an operation, by the channel the netlink kernel sends it on (None: /proc)
KINDS = {"genl": "ipvs", "rtnl": "rtnetlink", "frames": "garp", None: "sysctl"}


def per(fn: Callable[[], object], items: int) -> float:
    """Seconds per item of one call of `fn` that handles `items` items."""
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) / max(items, 1)


def machine_costs(n: int = 1000) -> dict[str, float]:
    """Seconds per basic operation here, on the host or inside UML (the benchmarks' table The
    machine): which of the figures are the lab's. Python's is the parse of an ACTIVATE line,
    warm and as the first thing after a sleep (`woken`)."""
    fd, area = os.open(os.devnull, os.O_WRONLY), mmap.mmap(-1, n * mmap.PAGESIZE)
    forks = ["sh", "-c", "i=0; while [ $i -lt 20 ]; do /bin/true; i=$((i+1)); done"]
    try:
        return {
            "syscall": per(lambda: [os.write(fd, b"x") for _ in range(n)], n),
            "clock": per(lambda: [time.perf_counter() for _ in range(n)], n),
            "page_fault": per(
                lambda: [area.__setitem__(i * mmap.PAGESIZE, 1) for i in range(n)], n
            ),
            "fork_exec": per(lambda: subprocess.run(forks, check=True), 20),
            "python_warm": per(lambda: [parse_line(LINE) for _ in range(n)], n),
            "python_woken": woken(lambda: parse_line(LINE)) - woken(lambda: None),
        }
    finally:
        os.close(fd)
        area.close()


def woken(fn: Callable[[], object], samples: int = 21) -> float:
    """Median seconds of `fn` as the first thing after a sleep, as a helper handles a request."""
    spent = []
    for _ in range(samples):
        time.sleep(0.02)
        spent.append(per(fn, 1))
    return statistics.median(spent)


def faults() -> int:
    """Minor page faults of this process so far: each is dear in UML (The machine)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class TimingKernel:
    """A Kernel timing the one it wraps (the rest of the contract passes through): observe, and
    apply_many in runs of one kind of operation (those the netlink kernel batches anyway)."""

    def __init__(self, inner: Kernel) -> None:
        self.inner = inner
        self.reset()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def reset(self) -> None:
        self.spent, self.faults = Counter[str](), Counter[str]()
        self.started: dict[str, float] = {}  # when each kind was first applied
        self.ops: list[Operation] = []

    def _timed(self, label: str, fn: Callable[[], Any]) -> Any:
        f0, t0 = faults(), time.perf_counter()
        self.started.setdefault(label, t0)
        try:
            return fn()
        finally:
            self.spent[label] += time.perf_counter() - t0
            self.faults[label] += faults() - f0

    def observe(self, *args: Any, **kwargs: Any) -> KernelState:
        return self._timed("observe", lambda: self.inner.observe(*args, **kwargs))

    def apply(self, op: Operation) -> None:
        for failure in self.apply_many([op]):
            raise failure

    def apply_many(self, ops: Iterable[Operation]) -> list[KernelError]:
        ops = list(ops)
        self.ops += ops
        failures: list[KernelError] = []
        for kind, run in itertools.groupby(ops, lambda op: KINDS[HANDLERS[type(op)].channel]):
            failures += self._timed(kind, functools.partial(self.inner.apply_many, list(run)))
        return failures


def steps(ops: Sequence[Operation], lines: Sequence[bytes]) -> dict[str, Any]:
    """The costly steps again, each alone: (items, seconds each)."""
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

    # what an ACTIVATE from standby has kept: every line but its real servers' (AddDests)
    kept = {op: logged(op) for op in ops if not isinstance(op, AddDests)}
    out = {
        "render": (len(each(ops)), per(lambda: [str(op) for op in each(ops)], len(each(ops)))),
        "logged": (1, per(Commands(tuple(ops), kept).encoded, 1)),
        "pipe_per_line": (len(lines), per(per_line, len(lines))),
        "pipe_joined": (1, per(joined, 1)),
        "lines": len(lines),
        "bytes": sum(len(line) + 1 for line in lines),
    }
    pipe.close()
    reader.wait(30)
    return out


class Probe(Helper):
    """The helper, its first ACTIVATE timed from handle() until its output is flushed; also the
    stream its Output writes to (passed on to stdout, the last batch kept)."""

    def arm(self, kernel: TimingKernel, path: str) -> None:
        self.timing, self.path, self.mark, self.writes, self.last = kernel, path, {}, 0, b""

    def handle(self, line: str | bytes) -> Any:
        if "record" in self.mark:
            record = self.mark.pop("record")
            record["steps"] = steps(self.timing.ops, record.pop("lines"))
            with open(self.path, "w") as f:
                json.dump(record, f)
        if b" ACTIVATE" not in (line if isinstance(line, bytes) else line.encode()) or self.mark:
            return super().handle(line)
        self.timing.reset()  # only the ACTIVATE counts
        self.mark = {"f0": faults(), "t0": time.perf_counter()}
        reply = super().handle(line)
        self.mark.update(f1=faults(), t1=time.perf_counter(), writes=self.writes)
        return reply

    def write(self, data: bytes) -> int:
        if "t1" in self.mark and "tw" not in self.mark:
            self.mark["tw"] = time.perf_counter()  # the lines are encoded: the write starts
        self.writes, self.last = self.writes + 1, data
        return sys.stdout.buffer.write(data)

    def fileno(self) -> int:  # Output widens the pipe behind it, as for the helper
        return sys.stdout.buffer.fileno()

    def flush(self) -> None:
        """The output is out: the first time after the ACTIVATE, its record."""
        sys.stdout.buffer.flush()
        m, k, t2, f2 = self.mark, self.timing, time.perf_counter(), faults()
        if "t1" not in m or "t2" in m:
            return
        m["t2"], handle = t2, m["f1"] - m["f0"]
        phases = {key: k.spent[key] for key in ("observe", *KINDS.values())}
        phases["engine"] = max(0.0, m["t1"] - m["t0"] - sum(k.spent.values()))
        phases["output"] = m.get("tw", t2) - m["t1"]
        phases["write"] = t2 - m.get("tw", t2)
        counts = {**k.faults, "engine": handle - sum(k.faults.values()), "output": f2 - m["f1"]}
        m["record"] = {
            "phases": phases,
            "faults": {**counts, "total": handle + counts["output"]},
            "total": m.get("tw", t2) - m["t0"],
            "first_garp": k.started["garp"] - m["t0"] if "garp" in k.started else None,
            "output_writes": self.writes - m["writes"],
            "lines": self.last.rstrip(b"\n").split(b"\n"),
        }


def profiled(options: Sequence[str], members: Sequence[str]) -> list[tuple[str, int, float, float]]:
    """The 15 hottest functions by own time of one ACTIVATE in-process under cProfile (the
    helper with `options`, started): (where, calls, own seconds, cumulative seconds)."""
    settings = cli.parse_settings(list(options))
    helper = Helper(settings, cli.make_kernel(settings)[0])
    helper.start()
    with open(os.devnull, "wb") as sink, cProfile.Profile() as profile:
        cli.Output(sink).write(helper.handle("00002 ACTIVATE " + " ".join(members)))
    stats = pstats.Stats(profile).stats.items()  # type: ignore[attr-defined]
    rows = [(f"{_where(f)}:{n}({fn})", c, own, cum) for (f, n, fn), (_, c, own, cum, _) in stats]
    return sorted(rows, key=lambda r: -r[2])[:15]


def _where(file: str) -> str:
    """cgp_ipvs_helper/x.py, a module below site-packages, or the file's bare name."""
    if "cgp_ipvs_helper/" in file:
        return file[file.index("cgp_ipvs_helper/") :]
    return file.split("site-packages/")[1] if "site-packages/" in file else os.path.basename(file)


def main(argv: Sequence[str]) -> int:
    """cli.main's composition, with the timed kernel and the probe as helper and stream."""
    settings = cli.parse_settings(argv[1:])
    inner, notes = cli.make_kernel(settings)
    kernel = TimingKernel(inner)
    helper = Probe(settings, kernel, clock=time.monotonic)
    helper.arm(kernel, argv[0])
    gc.freeze()
    try:
        listen = None if settings.dry_run else cli.ArpListener
        notes = [*notes, *cli.iface_notes(settings.iface)]
        cli.serve(helper, sys.stdin.fileno(), cli.Output(helper), notes, listen)  # type: ignore[arg-type]
    finally:
        kernel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
