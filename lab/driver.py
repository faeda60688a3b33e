"""Drive the helper the way CommuniGate Pro does: lines on stdin, lines on stdout.

The one process driver of the tests, the demo and the benchmarks (any line-protocol process,
the helper by default). It is started from a thread inside the host's namespace (no `ip netns
exec` in between), so its pid is the process's own; with no host it runs where the caller is.
Every line read is kept (`log`), so a test can assert on the info lines (what CGP's log would
show) as well as on the responses.

Two readers: by default a thread drains stdout as lines come, so a test may leave a helper
alone for seconds; `timed=True` reads in large chunks from the calling thread only while it
waits, so the clock stops when the response arrives, not when a reader thread gets scheduled
(the benchmarks' choice).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from .lan import Host
from .uml import REPO_ROOT

_Line = tuple[str, float]  # a line and time.time() when the chunk holding it was read


def helper_argv(*options: str) -> list[str]:
    return [sys.executable, "-m", "cgp_ipvs_helper", *options]


def host_options() -> list[str]:
    """-m (a helper on the host: no kernel change), and as -i an interface with an IPv4 address
    (the helper's own) other than lo."""
    out = subprocess.run(["ip", "-4", "-o", "address", "show"], capture_output=True, text=True)
    for words in map(str.split, out.stdout.splitlines()):
        if len(words) > 3 and words[1] != "lo" and not words[3].startswith("127."):
            return ["-m", "-i", words[1].split("@")[0]]
    return ["-m", "-i", "lo"]


def write_vipfile(path: str, entries: Sequence[str]) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(f"{e}\n" for e in entries))
    return path


def member_map(
    members: Sequence[tuple[str, str | None]], first: int = 50000, width: int = 5000
) -> str:
    """A member map's text: per (LAN address, IPv6 address or None) a port range of `width`
    ports, the first from `first` on, each next right after the one before."""
    lines = []
    for i, (ip, ip6) in enumerate(members):
        low = first + i * width
        lines.append(f"{ip} {low}-{low + width - 1}{f' {ip6}' if ip6 else ''}\n")
    return "".join(lines)


def commands(lines: Sequence[str]) -> list[str]:
    """The shell commands among a helper's info lines (what -m says real mode would run)."""
    tools = ("ip", "sysctl", "ipvsadm", "arping", "ndptool", "tc")
    return [ln[2:] for ln in lines if ln.startswith("* ") and ln[2:].split(" ", 1)[0] in tools]


@dataclass(frozen=True)
class Response:
    line: str
    sent: float  # time.time() just before the request was written
    answered: float  # time.time() right after the chunk holding the response was read
    before: tuple[str, ...]  # the lines the process wrote between request and response

    @property
    def seconds(self) -> float:
        return self.answered - self.sent


class HelperProcess:
    """`python -m cgp_ipvs_helper OPTIONS` (or `argv`) in `host`'s namespace, on pipes."""

    def __init__(
        self,
        host: Host | None,
        *options: str,
        argv: Sequence[str] | None = None,
        timed: bool = False,
    ) -> None:
        self.host = host
        self.argv = list(argv) if argv is not None else helper_argv(*options)

        def spawn() -> subprocess.Popen:
            pipe = subprocess.PIPE
            return subprocess.Popen(
                self.argv, stdin=pipe, stdout=pipe, stderr=pipe, cwd=str(REPO_ROOT)
            )

        self.proc = host.call(spawn) if host is not None else spawn()
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        self._raw_log: list[bytes] = []
        self._log: list[str] = []
        self._pending: deque[tuple[bytes, float]] = deque()
        self._ready = threading.Condition()
        self._partial = b""
        self._buffer = bytearray(1 << 20)
        self._through = bytearray((1 << 22) if timed else 0)  # see _read_through
        self.read_at = 0.0  # time.time() right after the last read returned
        self._at_end = False  # the reader saw the end of output
        self._seq = 0
        self._thread: threading.Thread | None = None
        if not timed:
            self._thread = threading.Thread(target=self._drain, daemon=True)
            self._thread.start()

    # --- reading ---------------------------------------------------------------------------

    def read_raw(self, timeout: float | None) -> list[bytes]:
        """The complete lines one read returns (waiting up to `timeout`), undecoded and not
        logged: for throughput runs, where any per-line work of the reader would be measured.
        Only with `timed=True`; EOFError at end of output."""
        if timeout is not None and not select.select([self.stdout], [], [], timeout)[0]:
            return []
        # into kept memory, as CGP's reader would: os.read's fresh buffer for each read would
        # charge the timed reader's page faults to the helper
        n = os.readv(self.stdout, [self._buffer])
        self.read_at = time.time()
        chunk = self._buffer[:n]
        if not chunk:
            raise EOFError(f"process exited with {self.proc.poll()}")
        parts = (self._partial + chunk).split(b"\n")
        self._partial = parts.pop()
        return parts

    def _read(self, timeout: float | None) -> None:
        """One read; its lines are queued as they are (decoding is the consumer's work, so a
        timed reader returns to the pipe at once while the helper still writes)."""
        try:
            parts = self.read_raw(timeout)
        except (EOFError, OSError):
            parts, self._at_end = [], True
        with self._ready:
            self._raw_log += parts
            self._pending.extend((part, self.read_at) for part in parts)
            self._ready.notify_all()

    def _drain(self) -> None:
        while not self._at_end:
            self._read(None)

    def _next(self, deadline: float) -> _Line | None:
        """The next line and when it was read; None at end of output; TimeoutError after the
        deadline (time.monotonic())."""
        while True:
            with self._ready:
                if self._pending:
                    raw, read_at = self._pending.popleft()
                    return raw.decode("utf-8", "replace"), read_at
                if self._at_end:
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                if self._thread is not None:
                    self._ready.wait(left)
                    continue
            self._read(left)

    @property
    def log(self) -> list[str]:
        """Every line read so far, in order."""
        with self._ready:
            new = self._raw_log[len(self._log) :]
        self._log += [raw.decode("utf-8", "replace") for raw in new]
        return self._log

    def lines(self, timeout: float) -> list[str]:
        """The lines that arrive within `timeout` (all that are there once one has)."""
        out: list[str] = []
        deadline = time.monotonic() + timeout
        try:
            while True:
                item = self._next(deadline)
                if item is None:
                    return out
                out.append(item[0])
                deadline = time.monotonic()
        except TimeoutError:
            return out

    # --- requests --------------------------------------------------------------------------

    def send(self, line: str) -> None:
        os.write(self.stdin, line.encode() + b"\n")

    def exchange(self, text: str, timeout: float = 20.0) -> Response:
        """Send `<seq> text`; the response with its timing and the lines before it."""
        self._seq += 1
        seq = f"{self._seq:05d}"
        sent = time.time()
        self.send(f"{seq} {text}")
        return self.wait_response(seq, timeout, sent)

    def request(self, text: str, timeout: float = 20.0) -> str:
        """Send `<seq> text`; return the response line (info lines go to `log` only)."""
        return self.exchange(text, timeout).line

    def wait_response(self, seq: str, timeout: float = 20.0, sent: float = 0.0) -> Response:
        """The response to `seq` (sent earlier with `send`)."""
        prefix = f"{seq} "
        before: list[str] = []
        deadline = time.monotonic() + timeout
        if self._thread is None:
            self._read_through(prefix.encode(), deadline)
        while True:
            try:
                item = self._next(deadline)
            except TimeoutError:
                raise TimeoutError(
                    f"no response to {seq} in {timeout}s; log: {self.log[-20:]}"
                ) from None
            if item is None:
                raise EOFError(f"helper exited before answering {seq}: {self.stderr()}")
            line, read_at = item
            if line.startswith(prefix):
                return Response(line, sent, read_at, tuple(before))
            before.append(line)

    def _read_through(self, marker: bytes, deadline: float) -> None:
        """Timed: read on into kept memory (`_through`), no line looked at, until a read
        returns `marker` (or the deadline, or the end); then queue the lines, all read at that
        last read. After a big ACTIVATE (tens of thousands of lines, megabytes) the reader's
        own work per read and per line, done between reads, would keep the pipe full and so
        delay the response's read, timed as the helper's: CGP's reader does no such work."""
        with self._ready:
            if any(raw.startswith(marker) for raw, _at in self._pending):
                return
        got = 0
        while not self._at_end:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.stdout], [], [], left)[0]:
                break
            if got == len(self._through):
                self._through += bytes(len(self._through))  # (rare: the memory is touched)
            with memoryview(self._through) as view:
                n = os.readv(self.stdout, [view[got:]])
            self.read_at = time.time()
            self._at_end = n == 0
            got += n
            if self._through.find(marker, max(0, got - n - len(marker)), got) >= 0:
                break
        parts = (self._partial + self._through[:got]).split(b"\n")  # (bytes + bytearray: bytes)
        self._partial = parts.pop()
        with self._ready:
            self._raw_log += parts
            self._pending.extend((part, self.read_at) for part in parts)
            self._ready.notify_all()

    def __enter__(self) -> HelperProcess:
        """Answering (its start waited for), and killed on leaving."""
        try:
            self.wait_started(timeout=180)
        except BaseException:
            self.kill()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def wait_started(self, timeout: float = 60.0) -> Response:
        """Wait until start-up converged (INTF is answered only after it). A minute: with
        several user-mode kernels on one CPU, a start can take tens of seconds."""
        response = self.exchange("INTF 1", timeout)
        if not response.line.endswith("INTF 1"):
            raise RuntimeError(f"helper did not start: {response.line}")
        return response

    def reload(self, timeout: float = 30.0) -> str:
        """SIGHUP (the helper re-reads the VIP file and the member map); its "reloaded" line."""
        seen = len(self.log)
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = [line for line in self.log[seen:] if line.startswith("* reloaded")]
            if done:
                return done[0]
            time.sleep(0.05)
        raise TimeoutError(f"no reload in {timeout}s; log: {self.log[-20:]}")

    def commands(self) -> list[str]:
        """The shell commands the helper logged, in order."""
        return commands(self.log)

    def pipelined(self, data: bytes, count: int) -> float:
        """Seconds from the first byte of `data` (`count` requests, written by a thread as fast
        as the pipe takes them) until the last answer is read (timed reader)."""
        view = memoryview(data)

        def feed() -> None:
            done = 0
            while done < len(view):
                done += os.write(self.stdin, view[done:])

        writer = threading.Thread(target=feed, daemon=True)
        t0, answered = time.perf_counter(), 0
        writer.start()
        while answered < count:
            got = self.read_raw(60.0)
            if not got:
                raise TimeoutError(f"{answered} of {count} answers after 60 s of silence")
            answered += sum(1 for raw in got if raw[:1].isdigit())
        spent = time.perf_counter() - t0
        writer.join(10)
        return spent

    # --- the process -----------------------------------------------------------------------

    def usage(self) -> tuple[float, int, dict[str, int]]:
        """(CPU seconds, minor faults, {VmRSS, VmHWM, ...: KiB}) of a single-threaded process
        (CPU from schedstat, in ns: utime counts 10 ms ticks)."""
        pid = self.proc.pid
        with open(f"/proc/{pid}/stat") as stat, open(f"/proc/{pid}/schedstat") as sched:
            faults, cpu = (
                int(stat.read().rsplit(")", 1)[1].split()[7]),
                int(sched.read().split()[0]),
            )
        with open(f"/proc/{pid}/status") as f:
            lines = (ln.partition(":") for ln in f)
            kib = {k: int(v.split()[0]) for k, _, v in lines if k.startswith("Vm")}
        return cpu / 1e9, faults, kib

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def wait(self, timeout: float = 20.0) -> int:
        code = self.proc.wait(timeout)
        if self._thread is not None:
            self._thread.join(timeout)
        return code

    def kill(self) -> None:
        """SIGKILL (if still running) and release the pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        if self._thread is not None:
            self._thread.join(10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None or self.proc.stderr.closed:
            return ""
        return self.proc.stderr.read().decode("utf-8", "replace")
