"""What basic operations cost on this machine, measured on the host and inside UML.

User-mode Linux turns every system call and page fault of its processes into work for the host
kernel, and how much varies from boot to boot on a shared virtual machine: these figures beside
the results say which numbers are the helper's and which are the lab's.
"""

from __future__ import annotations

import mmap
import os
import subprocess
import time

from .report import Table, per

N, FORKS = 1000, 20
LABELS = {
    "syscall": "one system call (write 1 byte to /dev/null)",
    "clock": "one clock read (time.perf_counter)",
    "page_fault": "one page fault (first touch of a fresh page)",
    "fork_exec": "one fork + exec from sh (/bin/true)",
}


def measure() -> dict[str, float]:
    """Seconds per operation."""
    fd, area = os.open(os.devnull, os.O_WRONLY), mmap.mmap(-1, N * mmap.PAGESIZE)
    pages = range(0, N * mmap.PAGESIZE, mmap.PAGESIZE)
    loop = f"i=0; while [ $i -lt {FORKS} ]; do /bin/true; i=$((i+1)); done"
    try:
        return {
            "syscall": per(lambda: [os.write(fd, b"x") for _ in range(N)], N),
            "clock": per(lambda: [time.perf_counter() for _ in range(N)], N),
            "page_fault": per(lambda: [area.__setitem__(o, 1) for o in pages], N),
            "fork_exec": per(lambda: subprocess.run(["sh", "-c", loop], check=True), FORKS),
        }
    finally:
        os.close(fd)
        area.close()


def table(
    host: dict[str, float],
    start: dict[str, float] | None,
    end: dict[str, float] | None,
    cpu: int | None,
) -> Table:
    t = Table(
        "The machine: cost of basic operations (us)",
        ["operation", "host", "inside UML, at boot", "inside UML, at the end"],
    )
    for key, label in LABELS.items():
        t.add(label, *(f"{d[key] * 1e6:.1f}" if d else "-" for d in (host, start, end)))
    where = f"pinned the boot to host CPU {cpu}" if cpu is not None else "did not pin the boot"
    t.notes.append(
        "Inside user-mode Linux every system call and page fault of a process is a hand-over "
        "between two host processes (the process and the UML kernel). Unpinned on a 2-CPU VM "
        "each hand-over tends to become a cross-CPU wake-up: 70-100 us per system call and "
        f"300-450 us per page fault were seen, against about 8 and 40 us on one CPU. This run "
        f"{where}. Compare runs with these figures in mind."
    )
    return t
