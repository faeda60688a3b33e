"""Traffic through the LAN: one-shot asks and long-lived pinged connections, in and out.

Incoming (a client to a VIP, answered by whichever frontend IPVS picks) and outgoing (a frontend
to a server on the LAN, from a VIP as source address with a port from the kernel's ephemeral
range: `bind((vip, 0))`, the way CGP relays mail or places calls) use the same tools: every
echo server (`echo.EchoService`) answers with its host's name, so each answer says who served it.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .lan import Host

_LINGER_RESET = struct.pack("ii", 1, 0)


def reset(sock: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0), not a FIN. A socket closed with data unacknowledged by
    a peer that is gone (a pulled cable) would linger as an orphan retransmitting for about two
    minutes, holding its namespace's device, and deleting the LAN would wait for it."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    except OSError:
        pass
    sock.close()


def _bound_socket(host: Host, kind: int, src: str | None, dst: str) -> socket.socket:
    """A socket of host for dst's family; bound to (src, 0) if src is given: the kernel picks
    an ephemeral port."""
    sock = host.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, kind)
    if src is not None:
        sock.bind((src, 0))
    return sock


def _first_line(sock: socket.socket, what: str) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"{what} closed without an answer")
        data += chunk
    return data.decode().split("\n", 1)[0].strip()


def tcp_ask(host: Host, dst: str, port: int, src: str | None = None, timeout: float = 3.0) -> str:
    """Open a TCP connection from host (source address src), send a line, return the answer."""
    with _bound_socket(host, socket.SOCK_STREAM, src, dst) as sock:
        sock.settimeout(timeout)
        sock.connect((dst, port))
        sock.sendall(b"?\n")
        return _first_line(sock, f"{dst}:{port}")


def udp_ask(
    host: Host,
    dst: str,
    port: int,
    src: str | None = None,
    timeout: float = 1.0,
    tries: int = 3,
) -> str:
    """Send one datagram from host (new source port each call); return the answer's text.

    Checks that the answer comes from dst:port (a DR real server must reply from the VIP).
    """
    with _bound_socket(host, socket.SOCK_DGRAM, src, dst) as sock:
        sock.settimeout(timeout)
        for _ in range(tries):
            sock.sendto(b"?\n", (dst, port))
            try:
                while True:
                    data, peer = sock.recvfrom(4096)
                    if peer[:2] == (dst, port):  # IPv6: (address, port, flow, scope)
                        return data.decode().strip()
            except socket.timeout:
                continue
        raise TimeoutError(f"no UDP answer from {dst}:{port} after {tries} tries")


@dataclass(frozen=True)
class Answered:
    """Outgoing exchanges of one frontend: how many of `total` per protocol got their answer."""

    tcp: int
    udp: int
    total: int

    @property
    def complete(self) -> bool:
        return self.tcp == self.udp == self.total

    def __str__(self) -> str:
        return f"TCP {self.tcp}/{self.total}, UDP {self.udp}/{self.total}"


def outgoing(
    hosts: Sequence[Host],
    vip: str,
    server: str,
    tcp_port: int,
    udp_port: int,
    count: int = 12,
    timeout: float = 2.0,
) -> dict[str, Answered]:
    """From every host, `count` TCP connections and `count` UDP exchanges from `vip` (source
    port from the kernel's ephemeral range) to `server`, all at once; answered per host name.

    A TCP connection counts when its line is answered, a UDP exchange when one datagram (no
    retry) is; a reply steered to another member is lost, so it waits out `timeout`.
    """

    def tcp(host: Host) -> bool:
        try:
            return bool(tcp_ask(host, server, tcp_port, src=vip, timeout=timeout))
        except OSError:
            return False

    def udp(host: Host) -> bool:
        try:
            return bool(udp_ask(host, server, udp_port, src=vip, timeout=timeout, tries=1))
        except OSError:
            return False

    jobs = [(h, ask) for h in hosts for ask in (tcp, udp) for _ in range(count)]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        done = list(pool.map(lambda job: (job[0].name, job[1].__name__, job[1](job[0])), jobs))
    tally = Counter((name, proto) for name, proto, ok in done if ok)
    return {h.name: Answered(tally[h.name, "tcp"], tally[h.name, "udp"], count) for h in hosts}


@dataclass(frozen=True)
class ConnStats:
    """What one long-lived connection saw."""

    index: int
    src: str | None
    frontend: str  # who answered first
    answers: Mapping[str, int]  # answers per responder name
    max_gap: float  # longest time without an answer, including the tail at stop
    error: str | None  # reset, closed, ...
    broken: bool  # error, or no answer within `broken_after` before stop


@dataclass(frozen=True)
class LongLivedStats:
    """The result of LongLived.stop() (or snapshot())."""

    conns: tuple[ConnStats, ...]
    duration: float

    @property
    def max_gap(self) -> float:
        return max((c.max_gap for c in self.conns), default=0.0)

    @property
    def broken(self) -> list[int]:
        return [c.index for c in self.conns if c.broken]

    @property
    def by_frontend(self) -> Counter:
        """How many connections each responder took first."""
        return Counter(c.frontend for c in self.conns)

    def summary(self) -> str:
        return (
            f"{len(self.conns) - len(self.broken)}/{len(self.conns)} kept, "
            f"longest gap {self.max_gap:.3f} s, by frontend {dict(self.by_frontend)}, "
            f"broken {self.broken}"
        )


class LongLived:
    """N TCP connections from `host` to dst:port, pinged every `interval` seconds (with `kind`
    SOCK_DGRAM: N UDP flows, each a connected socket of its own source port).

    Incoming: a client to a VIP; outgoing: a frontend to a LAN server with `sources=[vip]`.
    Records per connection who answered and the longest stretch without an answer, so a test can
    say "12 of 12 kept, longest gap 0.11 s" across a failover.
    """

    def __init__(
        self,
        host: Host,
        dst: str,
        port: int,
        count: int = 12,
        sources: Sequence[str | None] | None = None,
        interval: float = 0.02,
        broken_after: float = 1.0,
        connect_timeout: float = 3.0,
        kind: int = socket.SOCK_STREAM,
    ) -> None:
        """sources: source addresses used round robin (None: the host's primary)."""
        self.host, self.dst, self.port, self.kind = host, dst, port, kind
        self.count, self.interval, self.broken_after = count, interval, broken_after
        self.connect_timeout = connect_timeout
        self.sources: list[str | None] = list(sources) if sources else [None]
        self._socks: list[socket.socket | None] = []
        self._first: list[str] = []
        self._answers: list[Counter[str]] = []
        self._gap: list[float] = []
        self._error: list[str | None] = []
        self._last: list[float] = []
        self._bufs: list[bytes] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def __enter__(self) -> LongLived:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self.stop()

    def start(self) -> LongLived:
        """Connect all, get a first answer on each (who serves it), then ping in a thread."""
        try:
            for i in range(self.count):
                src = self.sources[i % len(self.sources)]
                sock = _bound_socket(self.host, self.kind, src, self.dst)
                self._socks.append(sock)
                sock.settimeout(self.connect_timeout)
                sock.connect((self.dst, self.port))
                sock.sendall(b"?\n")
                name = _first_line(sock, f"connection {i}")
                sock.setblocking(False)
                self._first.append(name)
                self._answers.append(Counter({name: 1}))
                self._gap.append(0.0)
                self._error.append(None)
                self._last.append(time.monotonic())
                self._bufs.append(b"")
        except BaseException:
            self._close()
            raise
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="long-lived", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        for i, sock in enumerate(self._socks):
            if sock is not None:
                sel.register(sock, selectors.EVENT_READ, i)
        next_ping = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_ping:
                for i, sock in enumerate(self._socks):
                    if sock is not None:
                        try:
                            sock.send(b"p\n")
                        except BlockingIOError:
                            pass
                        except OSError as exc:
                            self._fail(sel, i, exc.strerror or str(exc))
                next_ping = now + self.interval
            for key, _ in sel.select(timeout=max(0.0, next_ping - time.monotonic())):
                self._read(sel, key.data)
        sel.close()

    def _read(self, sel: selectors.BaseSelector, i: int) -> None:
        sock = self._socks[i]
        if sock is None:
            return
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(sel, i, exc.strerror or str(exc))
            return
        if not data:
            self._fail(sel, i, "closed by peer")
            return
        buf = self._bufs[i] + data
        *lines, self._bufs[i] = buf.split(b"\n")
        if not lines:
            return
        now = time.monotonic()
        with self._lock:
            self._gap[i] = max(self._gap[i], now - self._last[i])
            self._last[i] = now
            for line in lines:
                self._answers[i][line.decode(errors="replace").strip()] += 1

    def _fail(self, sel: selectors.BaseSelector, i: int, why: str) -> None:
        sock = self._socks[i]
        if sock is None:
            return
        try:
            sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        reset(sock)
        self._socks[i] = None
        with self._lock:
            self._error[i] = why

    def snapshot(self) -> LongLivedStats:
        """The stats so far, without stopping."""
        now = time.monotonic()
        with self._lock:
            conns = []
            for i, last in enumerate(self._last):
                tail = now - last
                error = self._error[i]
                conns.append(
                    ConnStats(
                        i,
                        self.sources[i % len(self.sources)],
                        self._first[i],
                        dict(self._answers[i]),
                        max(self._gap[i], tail),
                        error,
                        error is not None or tail > self.broken_after,
                    )
                )
        return LongLivedStats(tuple(conns), now - self._t0)

    def stop(self) -> LongLivedStats:
        """Stop pinging, close the connections, and return what each one saw."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        stats = self.snapshot()
        self._close()
        return stats

    def _close(self) -> None:
        for sock in self._socks:
            if sock is not None:
                reset(sock)
        self._socks = [None] * len(self._socks)
