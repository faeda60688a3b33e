"""What basic operations cost on this machine, measured on the host and inside UML.

User-mode Linux turns every system call and page fault of its processes into work for the host
kernel (tens to hundreds of microseconds, against well under one on bare metal), and how much
varies from boot to boot on a shared virtual machine. Printing these figures next to the results
says which numbers are the helper's and which are the lab's.
"""

from __future__ import annotations

import mmap
import os
import subprocess
import time
from typing import Any

from .report import Table

LOOPS = 1000
FORKS = 20


def _per(fn: Any, n: int) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) / n


def _syscalls() -> None:
    fd = os.open(os.devnull, os.O_WRONLY)
    try:
        for _ in range(LOOPS):
            os.write(fd, b"x")
    finally:
        os.close(fd)


def _page_faults() -> None:
    area = mmap.mmap(-1, LOOPS * mmap.PAGESIZE)
    try:
        for offset in range(0, LOOPS * mmap.PAGESIZE, mmap.PAGESIZE):
            area[offset] = 1
    finally:
        area.close()


def _clock() -> None:
    for _ in range(LOOPS):
        time.perf_counter()


def _forks() -> None:
    loop = f"i=0; while [ $i -lt {FORKS} ]; do /bin/true; i=$((i+1)); done"
    subprocess.run(["sh", "-c", loop], check=True)


def measure() -> dict[str, float]:
    """Seconds per operation."""
    return {
        "syscall": _per(_syscalls, LOOPS),
        "clock": _per(_clock, LOOPS),
        "page_fault": _per(_page_faults, LOOPS),
        "fork_exec": _per(_forks, FORKS),
    }


LABELS = [
    ("syscall", "one system call (write 1 byte to /dev/null)"),
    ("clock", "one clock read (time.perf_counter)"),
    ("page_fault", "one page fault (first touch of a fresh page)"),
    ("fork_exec", "one fork + exec from sh (/bin/true)"),
]


def table(
    host: dict[str, float] | None,
    uml_start: dict[str, float] | None,
    uml_end: dict[str, float] | None,
    pinned_cpu: int | None = None,
) -> Table:
    t = Table(
        "The machine: cost of basic operations (us)",
        ["operation", "host", "inside UML, at boot", "inside UML, at the end"],
    )

    def cell(data: dict[str, float] | None, key: str) -> str:
        return f"{data[key] * 1e6:.1f}" if data and key in data else "-"

    for key, label in LABELS:
        t.add(label, cell(host, key), cell(uml_start, key), cell(uml_end, key))
    where = (
        f"This run pinned the boot to host CPU {pinned_cpu}."
        if pinned_cpu is not None
        else "This run did not pin the boot to a host CPU (--no-pin or a single CPU)."
    )
    t.notes.append(
        "Inside user-mode Linux every system call and page fault of a process is a hand-over "
        "between two host processes (the process and the UML kernel). Unpinned on a 2-CPU VM "
        "each hand-over tends to become a cross-CPU wake-up: 70-100 us per system call and "
        f"300-450 us per page fault were seen, against about 8 and 40 us on one CPU. {where} "
        "Compare runs with these figures in mind."
    )
    return t
