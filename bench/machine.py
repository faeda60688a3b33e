"""The machine: what basic operations cost on the host and inside UML, to tell which of the
figures are the lab's."""

from __future__ import annotations

import mmap
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence

from cgp_ipvs_helper.core.protocol import parse_line
from lab.probe import per  # timed as the probe's steps are

from .report import Table

ROWS = {
    "syscall": "one system call (write 1 byte to /dev/null)",
    "clock": "one clock read (time.perf_counter)",
    "page_fault": "one page fault (first touch of a fresh page)",
    "fork_exec": "one fork + exec from sh (/bin/true)",
    "python_warm": "a Python call, warm: the parse of an ACTIVATE line (protocol.parse_line)",
    "python_woken": "the same call as the first thing after a 20 ms sleep",
}
LINE = b"00002 ACTIVATE 192.0.2.11 192.0.2.12 192.0.2.13 192.0.2.14"


def costs(n: int = 1000) -> dict[str, float]:
    """Seconds per operation of each row, here (on the host or inside UML)."""
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


def woken(fn: Callable[[], object], samples: int = 21, sleep: float = 0.02) -> float:
    """Median seconds of `fn` as the first thing after a sleep, as a helper handles a request."""
    spent = []
    for _ in range(samples):
        time.sleep(sleep)
        t0 = time.perf_counter()
        fn()
        spent.append(time.perf_counter() - t0)
    return statistics.median(spent)


def table(measured: Sequence[dict[str, float] | None]) -> Table:
    """The costs on the host, then inside UML at its boot and at its end."""
    t = Table(
        "The machine: cost of basic operations (us)",
        ["operation", "host", "inside UML, at boot", "inside UML, at the end"],
        notes=[
            "Inside user-mode Linux every system call and page fault is a hand-over between two "
            "host processes (the process, the UML kernel); unpinned (--no-pin), it tends to "
            "become a cross-CPU wake-up, many times dearer.",
            "The last two rows: the same Python warm, and as the first thing after a sleep "
            "(median of 21, less an empty clock pair), as a helper woken by its request runs "
            "it; the limit's clock starts warm, the limit behind the pipe wakes like a helper.",
        ],
    )
    for key, label in ROWS.items():
        cells = [f"{d[key] * 1e6:.1f}" if d else "-" for d in measured]
        t.add(label, *(cells + ["-", "-"])[:3])
    return t
