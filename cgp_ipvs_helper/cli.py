"""The command line and the only I/O loop: stdin lines in, stdout lines out, timers between.

Everything decided here is about I/O: which kernel to drive (-m: the in-memory dry run), reading
stdin in bounded pieces, flushing each line, and turning SIGTERM/SIGHUP into helper calls. The
options are options.py's; what the lines mean is the Helper's business.
"""

from __future__ import annotations

import fcntl
import gc
import os
import select
import signal
import sys
import time
from collections.abc import Sequence
from typing import BinaryIO, Callable

from cgp_ipvs_helper.config.options import parse_settings
from cgp_ipvs_helper.core.arpwatch import ArpListener
from cgp_ipvs_helper.core.engine import Helper
from cgp_ipvs_helper.core.hostaddrs import interface_exists
from cgp_ipvs_helper.core.protocol import MAX_LINE, Info, Reply, encoded
from cgp_ipvs_helper.errors import UsageError
from cgp_ipvs_helper.kernel.dryrun import dry_run_kernel
from cgp_ipvs_helper.kernel.interface import Kernel
from cgp_ipvs_helper.plan.model import Settings


def make_kernel(settings: Settings) -> tuple[Kernel, list[str]]:
    """The netlink kernel, or for -m an in-memory copy of what the kernel holds now."""
    if settings.dry_run:
        return dry_run_kernel(settings.iface)
    from cgp_ipvs_helper.kernel.netlink.kernel import NetlinkKernel

    return NetlinkKernel(), []


def iface_notes(iface: str) -> list[str]:
    """Say at start if -i names no interface: it may be a bond or VLAN brought up later, so the
    helper starts anyway, but an operator who mistyped it must see why nothing is balanced."""
    if not interface_exists(iface):
        return [f"-i {iface}: no such interface (yet); it is needed to balance"]
    return []


class LineReader:
    """Splits stdin bytes into lines; a line over MAX_LINE is cut to MAX_LINE + 1 bytes (so it
    is still answered, as too long) and the rest of it is dropped, keeping memory bounded."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.skipping = False

    def feed(self, data: bytes) -> list[bytes]:
        lines: list[bytes] = []
        start = 0
        while True:
            nl = data.find(b"\n", start)
            chunk = data[start:] if nl < 0 else data[start:nl]
            if not self.skipping:
                self.buf += chunk[: MAX_LINE + 1 - len(self.buf)]
            if nl < 0:
                if len(self.buf) > MAX_LINE and not self.skipping:
                    lines.append(bytes(self.buf))
                    self.buf.clear()
                    self.skipping = True
                return lines
            if not self.skipping:
                lines.append(bytes(self.buf))
            self.buf.clear()
            self.skipping = False
            start = nl + 1

    def finish(self) -> list[bytes]:
        """A last line without LF at end of input still counts."""
        rest = [bytes(self.buf)] if self.buf and not self.skipping else []
        self.buf.clear()
        return rest


class Output:
    """Renders each reply to its lines and writes them with one write(), then flushes; if CGP
    closed the pipe, stops writing quietly. One system call per reply, not per line: an ACTIVATE
    for a /24 logs thousands of lines. Nothing is ever left in the buffer while the helper waits.

    A dual-stack ACTIVATE logs more than a default pipe holds: the write would then wait for the
    reader in steps, each a switch between two processes. So the pipe is widened to PIPE_SIZE
    where the kernel allows it (Linux 2.6.35+, the default limit for any user)."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream, self.closed = stream, False
        widen_pipe(stream)

    def write(self, reply: Reply) -> None:
        if self.closed:
            return
        data = encoded(reply)
        if not data:
            return
        try:
            self.stream.write(data)
            self.stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            self.closed = True


PIPE_SIZE = 1 << 20  # /proc/sys/fs/pipe-max-size by default: allowed without privileges
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # the fcntl module has them from 3.10
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)


def widen_pipe(stream: object) -> None:
    """Let the pipe behind `stream` hold PIPE_SIZE bytes, if it is a pipe holding less and the
    kernel allows it; anything else stays as it is."""
    try:
        fd = stream.fileno()  # type: ignore[attr-defined]
        if fcntl.fcntl(fd, _F_GETPIPE_SZ) < PIPE_SIZE:
            fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)
    except (AttributeError, OSError, ValueError):
        pass  # not a pipe (a file, a terminal), an older kernel, or over a limit


POOL = 1 << 14  # pymalloc's pool of blocks of one size: 16 KiB since 3.10 (4 KiB in 3.9)
SPARE_POOLS = 4  # per block size (16 to 512 bytes): 2 MiB in all
SPARE_OBJECTS = 16384  # then small objects of 96 bytes: 1.5 MiB, more than one arena
SPARE_HEAP = 1 << 16  # the first, mapped piece is larger than the second, kept one


def warm() -> None:
    """Leave the memory an ACTIVATE from standby will use touched while nothing waits.

    An ACTIVATE from standby makes thousands of small values at once (a /24 with 4 members:
    2,048 real servers, their operations, requests and log lines), and memory the process has
    never touched costs a page fault on first use, dear in a virtual machine. Python's
    small-object allocator hands out a block size's pool front to back,
    so a pool of each size is partly untouched until it fills, and a new pool comes from an
    arena (1 MiB since 3.10, 256 KiB in 3.9). Filling SPARE_POOLS pools of every size fills
    those in use; SPARE_OBJECTS more of one size, freed, leave touched pools and one touched,
    empty arena (CPython keeps one); either alone leaves faults behind. Objects without
    references: the collector sees none.
    """
    sizes = range(48, 513, 16)  # a bytes object of n bytes takes 33 + n
    spare: list[object] = [
        bytes(size - 33) for size in sizes for _ in range(SPARE_POOLS * POOL // size)
    ]
    spare += [object() for _ in range(SPARE_POOLS * POOL // 16)]  # 16 bytes
    spare += [(1 << 40) + i for i in range(SPARE_POOLS * POOL // 32)]  # 32 bytes
    del spare
    spare = [bytes(48) for _ in range(SPARE_OBJECTS)]
    del spare
    # The log of an ACTIVATE is joined into one piece of up to a few hundred KiB, which the C
    # allocator maps fresh (untouched) above its threshold (128 KiB). A freed mapped piece
    # raises the threshold to its size; a piece below it then comes from the heap, which keeps
    # what is freed at its top (up to twice the threshold) touched for the next one.
    for size in (PIPE_SIZE + SPARE_HEAP, PIPE_SIZE):
        piece = b"\1" * size  # (written, unlike bytes(size), which calloc may leave untouched)
        del piece


def serve(
    helper: Helper,
    stdin_fd: int,
    out: Output,
    notes: Sequence[str] = (),
    listen: Callable[[str], ArpListener] | None = None,
) -> None:
    """Run the helper until QUIT or end of input has been fully handled. With `listen`, ARP on
    -i is heard while the helper is active (a packet socket in this same select)."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    pending: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: pending.append(signum))
    reader = LineReader()
    ears = _Ears(helper, listen)
    eof = False
    out.write(helper.start(notes))
    gc.freeze()  # and what start-up planned ahead for an ACTIVATE (see main)
    warm()
    try:
        while not helper.finished:
            out.write(ears.follow())
            wait = max(0.0, helper.next_deadline() - helper.clock())
            fds = ([] if eof else [stdin_fd]) + [wake_r] + ears.fds()
            ready, _, _ = select.select(fds, [], [], wait)
            if wake_r in ready:
                os.read(wake_r, 512)
            while pending:
                signum = pending.pop(0)
                out.write(helper.reload() if signum == signal.SIGHUP else helper.end_of_input())
            if stdin_fd in ready:
                data = os.read(stdin_fd, 65536)
                lines = reader.feed(data) if data else reader.finish()
                for line in lines:
                    out.write(helper.handle(line))
                if not data:
                    eof = True
                    out.write(helper.end_of_input())
            if ears.ready(ready):
                out.write(ears.hear())
            out.write(helper.tick())
    finally:
        ears.close()


class _Ears:
    """The ARP listener's life: open while the helper is active (real mode), closed otherwise;
    a failure to open is said once per activation."""

    def __init__(self, helper: Helper, listen: Callable[[str], ArpListener] | None) -> None:
        self.helper, self.listen = helper, listen
        self.listener: ArpListener | None = None
        self.failed = False

    def follow(self) -> Reply:
        if self.listen is None or not self.helper.watching:
            self.failed = False
            self.close()
        elif self.listener is None and not self.failed:
            iface = self.helper.settings.iface
            try:
                self.listener = self.listen(iface)
            except OSError as exc:
                self.failed = True
                why = exc.strerror or str(exc)
                return Reply((Info(f"cannot hear ARP on {iface}, no split-brain warnings: {why}"),))
        return Reply()

    def fds(self) -> list[int]:
        return [] if self.listener is None else [self.listener.fileno()]

    def ready(self, ready: Sequence[int]) -> bool:
        return self.listener is not None and self.listener.fileno() in ready

    def hear(self) -> Reply:
        assert self.listener is not None
        try:
            claims = self.listener.claims()
        except OSError as exc:  # the device went away: heard again from the next ACTIVATE
            self.close()
            self.failed = True
            return Reply((Info(f"stopped hearing ARP: {exc.strerror or exc}"),))
        return self.helper.heard(claims)

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None


def main(argv: Sequence[str] | None = None) -> int:
    """The helper; `check OPTIONS` instead runs the preflight check of this frontend."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["check"]:
        from cgp_ipvs_helper.check import main as check

        return check(args[1:])
    try:
        settings = parse_settings(args)
    except UsageError as exc:
        print(f"IPVSHelper.py: {exc}", file=sys.stderr)
        return 2
    try:
        kernel, notes = make_kernel(settings)
    except Exception as exc:  # a fatal start-up reason: one line on stderr
        print(f"IPVSHelper.py: cannot open the kernel interface: {exc}", file=sys.stderr)
        return 1
    notes = [*notes, *iface_notes(settings.iface)]
    helper = Helper(settings, kernel, clock=time.monotonic)
    # What is loaded now lives as long as the process: keep the cyclic collector off it, so the
    # thousands of short-lived values of a /24 activation are not scanned against it.
    gc.freeze()
    try:
        listen = None if settings.dry_run else ArpListener
        serve(helper, sys.stdin.fileno(), Output(sys.stdout.buffer), notes, listen)
    finally:
        kernel.close()
    return 0
