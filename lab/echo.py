"""The echo servers of the lab: every TCP line and UDP datagram is answered with the host's name.

On the frontends they stand for CGP's services on the VIPs (incoming traffic); on a server host
of the LAN they are the far end of connections a frontend opens from a VIP (outgoing traffic).
"""

from __future__ import annotations

import os
import selectors
import socket
import threading
from collections import Counter
from collections.abc import Sequence

from .lan import Host
from .traffic import reset

IP_FREEBIND = 15  # not exported by the socket module of every Python we support
IPV6_FREEBIND = 78


def _family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


class EchoService:
    """Answer every TCP line and UDP datagram with the frontend's name (b'fe1\\n').

    TCP listens on 0.0.0.0:port (a reply leaves from the address the client reached), and on an
    IPv6 LAN on [::]:port too. UDP binds each VIP separately so that replies come from the VIP,
    as a DR real server must answer; the bind is IP_FREEBIND, so the VIP need not be configured
    yet. One background thread serves all hosts through a selector.
    """

    def __init__(
        self,
        hosts: Sequence[Host],
        vips: Sequence[str],
        tcp_ports: Sequence[int] = (),
        udp_ports: Sequence[int] = (),
    ) -> None:
        self.hosts = list(hosts)
        self.vips = list(vips)
        self.tcp_ports = list(tcp_ports)
        self.udp_ports = list(udp_ports)
        self.served: Counter[str] = Counter()  # answers sent, per host name
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None
        self._stop = False
        self._buffers: dict[socket.socket, bytes] = {}

    def __enter__(self) -> EchoService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> EchoService:
        """Open every socket (in the hosts' namespaces), then serve in a thread."""
        try:
            for host in self.hosts:
                reply = host.name.encode() + b"\n"
                anys = ["0.0.0.0", "::"] if host.ip6 else ["0.0.0.0"]
                for port in self.tcp_ports:
                    for any_ in anys:
                        sock = host.socket(_family(any_), socket.SOCK_STREAM)
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                        if ":" in any_:
                            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                        sock.bind((any_, port))
                        sock.listen(128)
                        sock.setblocking(False)
                        data = ("listen", host.name, reply)
                        self._sel.register(sock, selectors.EVENT_READ, data)
                for port in self.udp_ports:
                    for addr in [*self.vips, host.ip, *([host.ip6] if host.ip6 else [])]:
                        if ":" in addr and not host.ip6:
                            continue  # an IPv6 VIP on a LAN without IPv6
                        sock = host.socket(_family(addr), socket.SOCK_DGRAM)
                        if ":" in addr:
                            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
                        else:
                            sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
                        sock.bind((addr, port))
                        sock.setblocking(False)
                        self._sel.register(sock, selectors.EVENT_READ, ("udp", host.name, reply))
        except BaseException:
            self._close_all()
            raise
        self._sel.register(self._wake_r, selectors.EVENT_READ, ("wake", "", b""))
        self._thread = threading.Thread(target=self._serve, name="echo-service", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stop:
            for key, _ in self._sel.select(timeout=1.0):
                kind, name, reply = key.data
                sock = key.fileobj
                try:
                    if kind == "listen":
                        conn, _ = sock.accept()  # type: ignore[union-attr]
                        conn.setblocking(False)
                        self._buffers[conn] = b""
                        self._sel.register(conn, selectors.EVENT_READ, ("conn", name, reply))
                    elif kind == "udp":
                        while True:
                            _data, peer = sock.recvfrom(65536)  # type: ignore[union-attr]
                            sock.sendto(reply, peer)  # type: ignore[union-attr]
                            self.served[name] += 1
                    elif kind == "conn":
                        self._on_data(sock, name, reply)  # type: ignore[arg-type]
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    if kind == "conn":
                        self._drop(sock)  # type: ignore[arg-type]

    def _on_data(self, conn: socket.socket, name: str, reply: bytes) -> None:
        data = conn.recv(65536)
        if not data:
            self._drop(conn)
            return
        buf = self._buffers.get(conn, b"") + data
        lines = buf.count(b"\n")
        self._buffers[conn] = buf.rsplit(b"\n", 1)[-1] if lines else buf
        if lines:
            conn.sendall(reply * lines)
            self.served[name] += lines

    def _drop(self, conn: socket.socket) -> None:
        try:
            self._sel.unregister(conn)
        except (KeyError, ValueError):
            pass
        self._buffers.pop(conn, None)
        conn.close()

    def _close_all(self) -> None:
        for key in list(self._sel.get_map().values()):
            if key.fileobj is self._wake_r:
                continue
            try:
                self._sel.unregister(key.fileobj)
            except (KeyError, ValueError):
                pass
            reset(key.fileobj)  # type: ignore[arg-type]
        self._buffers.clear()

    def stop(self) -> None:
        """Stop the thread and close every socket (established connections are reset)."""
        self._stop = True
        if self._thread is not None:
            os.write(self._wake_w, b"x")
            self._thread.join(timeout=5)
            self._thread = None
        self._close_all()
        self._sel.close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
