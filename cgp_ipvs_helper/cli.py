"""The command line and the only I/O loop: stdin lines in, stdout lines out, timers between.

Everything decided here is about I/O: options, which kernel to drive (-m: the in-memory dry
run), reading stdin in bounded pieces, flushing each line, and turning SIGTERM/SIGHUP into
helper calls. What the lines mean is the Helper's business.
"""

from __future__ import annotations

import argparse
import fcntl
import gc
import os
import re
import select
import signal
import socket
import sys
import time
from collections.abc import Iterable, Sequence
from typing import BinaryIO, Callable, NoReturn

from .arpwatch import ArpListener
from .dryrun import dry_run_kernel
from .errors import UsageError
from .helper import VERSION, Helper
from .kernel import Kernel
from .model import Settings
from .protocol import MAX_LINE, Info, Reply, lines_of, render
from .shown import quoted

_IFNAMSIZ = 15
_DIGITS = re.compile(r"[0-9]{1,10}")
_DECIMAL = re.compile(r"[0-9]{1,10}(\.[0-9]{0,9})?|\.[0-9]{1,9}")
DAY = 86400.0
# Each refresh reads the whole kernel state and, while active, re-announces every VIP, which
# Linux ignores within 1 s of the last announcement anyway; at -t 0.001 an idle standby burnt
# 6-9 % of a CPU.
MIN_REFRESH = 1.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    """ASCII digits only: int() would also take `1_0`, `+5`, ` 5` and an Arabic-Indic 5."""

    def parse(text: str) -> int:
        if not _DIGITS.fullmatch(text):
            raise argparse.ArgumentTypeError(f"not a whole number: {quoted(text)}")
        value = int(text)
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is not in {lo}..{hi}")
        return value

    return parse


def _seconds_in(lo: float, hi: float) -> Callable[[str], float]:
    """ASCII decimal seconds (`2`, `2.5`, `.5`): float() would also take `1_0`, `1e3`, `inf`."""

    def parse(text: str) -> float:
        if not _DECIMAL.fullmatch(text):
            raise argparse.ArgumentTypeError(f"not a number of seconds: {quoted(text)}")
        value = float(text)
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{text} is not in {lo:g}..{hi:g} seconds")
        return value

    return parse


def _iface(text: str) -> str:
    if (
        not 0 < len(text) <= _IFNAMSIZ
        or any(c in text for c in "/:% \t\n")
        or not text.isprintable()
        or text in (".", "..")
    ):
        raise argparse.ArgumentTypeError(f"not an interface name: {quoted(text)}")
    return text


def _ports(text: str) -> tuple[tuple[str, int], ...]:
    """`tcp:25,tcp:587,udp:5060`: the per-port services used with -p 0."""
    ports = []
    for item in text.split(","):
        proto, _, port = item.strip(" \t").partition(":")
        if proto not in ("tcp", "udp") or not _DIGITS.fullmatch(port) or not 0 < int(port) <= 65535:
            raise argparse.ArgumentTypeError(f"not PROTO:PORT (tcp:25, udp:5060): {quoted(item)}")
        if (proto, int(port)) not in ports:
            ports.append((proto, int(port)))
    return tuple(ports)


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="IPVSHelper.py",
        description="CommuniGate Pro load-balancer helper (IPVS, "
        "direct routing). Speaks CGP's helper protocol on stdin/stdout.",
    )
    p.add_argument(
        "-p",
        dest="persistence",
        type=_int_in(0, 2**31 - 1),
        default=15,
        metavar="N",
        help="persistence seconds; 0 = off (default 15)",
    )
    p.add_argument(
        "-i",
        dest="iface",
        type=_iface,
        default="eth0",
        metavar="IFACE",
        help="LAN interface for VIPs, ARP and sync (default eth0)",
    )
    p.add_argument(
        "-s",
        dest="syncid",
        type=_int_in(0, 255),
        default=0,
        metavar="N",
        help="SyncID of the sync daemons, 0-255 (default 0)",
    )
    p.add_argument(
        "-t",
        dest="timeout",
        type=_seconds_in(MIN_REFRESH, DAY),
        default=15.0,
        metavar="N",
        help=f"refresh after N seconds without a request, at least {MIN_REFRESH:g} (default 15)",
    )
    p.add_argument(
        "-f",
        dest="vipfile",
        default="/etc/sysconfig/vipaddrs",
        metavar="PATH",
        help="VIP list file (default /etc/sysconfig/vipaddrs)",
    )
    p.add_argument(
        "-r",
        dest="weight",
        type=_int_in(0, 65535),
        default=100,
        metavar="N",
        help="weight of this server when active, others 100 (default 100)",
    )
    p.add_argument(
        "-m",
        dest="dry_run",
        action="store_true",
        help="change nothing; log the equivalent shell commands",
    )
    p.add_argument(
        "--ports",
        type=_ports,
        default=(),
        metavar="LIST",
        help="with -p 0: services as tcp:25,udp:5060,... (default: CGP's port set)",
    )
    p.add_argument(
        "--drain",
        type=_seconds_in(0.0, DAY),
        default=5.0,
        metavar="SECONDS",
        help="keep forwarding this long after DEACTIVATE (default 5)",
    )
    p.add_argument(
        "--member-map",
        default="/etc/sysconfig/cgp-ipvs-members",
        metavar="PATH",
        help="source-port range of each member, for replies to connections opened from a VIP "
        "(default /etc/sysconfig/cgp-ipvs-members; missing: not steered)",
    )
    p.add_argument("--version", action="version", version=f"cgp-ipvs-helper {VERSION}")
    return p


def parse_settings(argv: Sequence[str]) -> Settings:
    ns = parser().parse_args(list(argv))
    return Settings(
        persistence=ns.persistence,
        iface=ns.iface,
        syncid=ns.syncid,
        timeout=ns.timeout,
        vipfile=ns.vipfile,
        weight=ns.weight,
        dry_run=ns.dry_run,
        ports=ns.ports,
        drain=ns.drain,
        member_map=ns.member_map,
    )


def make_kernel(settings: Settings) -> tuple[Kernel, list[str]]:
    """The netlink kernel, or for -m an in-memory copy of what the kernel holds now."""
    if settings.dry_run:
        return dry_run_kernel(settings.iface)
    from .netlink import NetlinkKernel

    return NetlinkKernel(), []


def iface_notes(iface: str) -> list[str]:
    """Say at start if -i names no interface: it may be a bond or VLAN brought up later, so the
    helper starts anyway, but an operator who mistyped it must see why nothing is balanced."""
    try:
        socket.if_nametoindex(iface)
    except OSError:
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
    for a /24 logs thousands of lines, and a write per line cost 0.37 s of its 0.6 s in the
    user-mode kernel. Nothing is ever left in the buffer while the helper waits.

    A pipe holds 64 KiB by default, and a dual-stack ACTIVATE (a /24 and a /120) logs about
    400 KB: the write then waits for the reader in steps, each a switch between two processes
    (in the user-mode kernel that halved the time to OK). So the pipe is widened to PIPE_SIZE
    where the kernel allows it (Linux 2.6.35+, the default limit for any user)."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream, self.closed = stream, False
        widen_pipe(stream)

    def write(self, reply: Reply) -> None:
        if self.closed:
            return
        if not reply.infos:  # most replies: a response alone
            lines = render(reply)
            if not lines:
                return
            data: bytes | bytearray = lines[0].encode("utf-8", "replace") + b"\n"
        else:
            data = encoded(lines_of(reply))
        try:
            self.stream.write(data)
            self.stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            self.closed = True


def encoded(lines: Iterable[str]) -> bytearray:
    """The lines in UTF-8, each ended by a newline, encoded one by one as they come: the
    thousands of lines of an ACTIVATE never exist as strings all at once, nor joined and then
    encoded again (in the user-mode kernel the page faults of those copies cost more than the
    rendering)."""
    data = bytearray()
    for line in lines:
        data += line.encode("utf-8", "replace")
        data += b"\n"
    return data


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


SPARE_OBJECTS = 16384  # small objects of 96 bytes: 1.5 MiB, more than one arena


def warm() -> None:
    """Leave Python's small-object allocator one touched, empty arena while nothing waits.

    An ACTIVATE from standby makes thousands of small values at once (a /24 with 4 members:
    2,048 real servers, their operations, requests and log lines), and memory the process has
    never touched costs a page fault on first use: 78 us each in the user-mode kernel, about 4
    on a host. Without this, about 120 of them (10 ms) were the largest cost of that ACTIVATE
    after its system calls; with it, under ten. CPython keeps one arena when all of them empty
    (1 MiB since 3.10, 256 KiB in 3.9), touched as it was; bytes, so the collector sees none.
    """
    spare = [bytes(48) for _ in range(SPARE_OBJECTS)]
    del spare


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
    try:
        settings = parse_settings(sys.argv[1:] if argv is None else argv)
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
    # thousands of short-lived values of a /24 activation are not scanned against it (-30%).
    gc.freeze()
    try:
        listen = None if settings.dry_run else ArpListener
        serve(helper, sys.stdin.fileno(), Output(sys.stdout.buffer), notes, listen)
    finally:
        kernel.close()
    return 0
