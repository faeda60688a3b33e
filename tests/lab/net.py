"""A LAN of network namespaces and a traffic kit, for tests that run INSIDE user-mode Linux.

Everything lives in documentation ranges (LAN 192.0.2.0/24, VIPs 198.51.100.0/24) on a bridge
in the UML root namespace that has no uplink: nothing here can reach the host's network.

Namespaces, veth pairs, the bridge, addresses and routes are made over netlink (pyroute2), with
no process per operation: forked tools cost 0.1-0.3 s each in this kernel. Sockets for a host
are made by switching only the calling thread into its namespace (``in_netns``); a socket keeps
the namespace it was created in, so the traffic threads can run from the root namespace.

Typical use::

    with Lan("t1") as lan:
        fe1 = lan.add_host("fe1", "192.0.2.11")
        client = lan.add_host("client", "192.0.2.100", extra_ips=["192.0.2.64"])
        fe1.add_address("198.51.100.1", dev="lo")
        with EchoService([fe1], ["198.51.100.1"], tcp_ports=[25]):
            assert tcp_ask(client, "198.51.100.1", 25) == "fe1"
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import selectors
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from pyroute2 import IPRoute

LAN_NET = ipaddress.ip_network("192.0.2.0/24")
VIP_NET = ipaddress.ip_network("198.51.100.0/24")
NETNS_DIR = Path("/run/netns")

CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 1 << 20
MNT_DETACH = 2
IP_FREEBIND = 15  # not exported by the socket module of every Python we support
# Neighbour states that carry no usable link-layer address.
NUD_INCOMPLETE = 0x01
NUD_FAILED = 0x20
NUD_NOARP = 0x40

_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


def _check(result: int, what: str) -> None:
    """Turn a libc -1 into OSError with errno, as os.* calls do."""
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _setns(fd: int) -> None:
    """Move the calling thread (only it) into the network namespace behind fd."""
    _check(_libc.setns(fd, CLONE_NEWNET), "setns")


def _mount(source: str, target: str, fstype: str, flags: int) -> None:
    _check(
        _libc.mount(source.encode(), target.encode(), fstype.encode(), flags, None),
        f"mount {target}",
    )


@contextmanager
def in_netns(ns: str) -> Iterator[None]:
    """Run the body with the calling thread in netns `ns` (as named in /run/netns).

    Only this thread moves (setns acts per thread), so other threads keep working where they
    are. Sockets and netlink connections opened in the body stay in `ns` for their whole life;
    processes forked in the body start in `ns`.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(str(NETNS_DIR / ns), os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


def _share_netns_dir() -> None:
    """Make /run/netns a shared mount point, as `ip netns add` does, so deletions propagate."""
    NETNS_DIR.mkdir(parents=True, exist_ok=True)
    try:
        _mount("", str(NETNS_DIR), "none", MS_SHARED | MS_REC)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # EINVAL: not a mount point yet
            raise
        _mount(str(NETNS_DIR), str(NETNS_DIR), "none", MS_BIND | MS_REC)
        _mount("", str(NETNS_DIR), "none", MS_SHARED | MS_REC)


def create_netns(ns: str) -> None:
    """Create a named netns like `ip netns add`, without a fork: unshare in this thread only."""
    _share_netns_dir()
    path = NETNS_DIR / ns
    os.close(os.open(str(path), os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _check(_libc.unshare(CLONE_NEWNET), "unshare")
        try:
            _mount("/proc/thread-self/ns/net", str(path), "none", MS_BIND)
        finally:
            _setns(own)
    except BaseException:
        path.unlink()
        raise
    finally:
        os.close(own)


def delete_netns(ns: str) -> None:
    """Remove a named netns like `ip netns del` (it dies once no process or socket holds it)."""
    path = NETNS_DIR / ns
    _libc.umount2(str(path).encode(), MNT_DETACH)
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _sysctl_path(name: str) -> str:
    """'net.ipv4.conf.all.arp_ignore' -> '/proc/sys/net/ipv4/conf/all/arp_ignore'."""
    return "/proc/sys/" + name.replace(".", "/")


@dataclass(eq=False)
class Host:
    """One namespace on the LAN: `eth0` on the bridge, `lo` up, address ip/24."""

    lan: Lan
    name: str
    ns: str
    ip: str
    mac: str
    extra_ips: tuple[str, ...] = ()
    _ipr: IPRoute | None = field(default=None, repr=False)

    @property
    def ipr(self) -> IPRoute:
        """A netlink socket bound to this host's namespace (opened on first use).

        pyroute2 keeps per-thread state: use it from the thread that opened it.
        """
        if self._ipr is None:
            with in_netns(self.ns):
                self._ipr = IPRoute()
        return self._ipr

    def ifindex(self, dev: str = "eth0") -> int:
        """Interface index of `dev` in this namespace."""
        found = self.ipr.link_lookup(ifname=dev)
        if not found:
            raise LookupError(f"{self.name}: no interface {dev}")
        return int(found[0])

    def run(
        self, argv: Sequence[str], check: bool = True, timeout: float = 60.0, **kw: Any
    ) -> subprocess.CompletedProcess:
        """Run a tool in this namespace through `ip netns exec`; text output captured.

        `ip netns exec` also remounts /sys for the namespace, so every tool sees its own
        interfaces; it costs ~15 ms more than forking from a thread inside the namespace.
        """
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self._exec(argv), check=check, timeout=timeout, **kw)

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen:
        """Start a tool in this namespace (see run); its pid is the tool's own."""
        return subprocess.Popen(self._exec(argv), **kw)

    def _exec(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def call(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """Call fn with this thread inside the namespace: what it opens stays there.

        E.g. ``fe1.call(IPVS)`` is an IPVS netlink socket of fe1.
        """
        with in_netns(self.ns):
            return fn(*args, **kw)

    def socket(self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """A socket that lives in this host's namespace."""
        with in_netns(self.ns):
            return socket.socket(family, kind)

    def link_down(self, dev: str = "eth0") -> None:
        """Take an interface down, e.g. to make this host vanish from the LAN at once."""
        self.ipr.link("set", index=self.ifindex(dev), state="down")

    def link_up(self, dev: str = "eth0") -> None:
        """Bring an interface back up."""
        self.ipr.link("set", index=self.ifindex(dev), state="up")

    def sysctl(self, name: str) -> str:
        """Read a sysctl as this namespace sees it ('net.ipv4.vs.backup_only')."""
        with in_netns(self.ns), open(_sysctl_path(name)) as fh:
            return fh.read().strip()

    def set_sysctl(self, name: str, value: object) -> None:
        """Write a sysctl in this namespace."""
        with in_netns(self.ns), open(_sysctl_path(name), "w") as fh:
            fh.write(f"{value}\n")

    def addresses(self, dev: str = "eth0") -> list[str]:
        """IPv4 addresses on `dev` as 'a.b.c.d/len', primary first."""
        out = []
        for msg in self.ipr.get_addr(family=socket.AF_INET, index=self.ifindex(dev)):
            out.append(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
        return out

    def add_address(self, addr: str, dev: str = "lo", prefixlen: int = 32) -> None:
        """Add an IPv4 address (a VIP /32 on lo by default)."""
        self.ipr.addr("add", index=self.ifindex(dev), address=addr, prefixlen=prefixlen)

    def del_address(self, addr: str, dev: str = "eth0", prefixlen: int = 32) -> None:
        """Remove an IPv4 address."""
        self.ipr.addr("del", index=self.ifindex(dev), address=addr, prefixlen=prefixlen)

    def neigh(self, ip: str, dev: str = "eth0") -> str | None:
        """The MAC this host's ARP cache holds for ip on dev, or None (absent or unresolved)."""
        for msg in self.ipr.get_neighbours(
            family=socket.AF_INET, dst=ip, ifindex=self.ifindex(dev)
        ):
            lladdr = msg.get_attr("NDA_LLADDR")
            if lladdr and not msg["state"] & (NUD_INCOMPLETE | NUD_FAILED | NUD_NOARP):
                return str(lladdr)
        return None

    def flush_neigh(self, dev: str = "eth0") -> None:
        """Forget every ARP entry on dev, so the next packet asks again."""
        idx = self.ifindex(dev)
        for msg in self.ipr.get_neighbours(family=socket.AF_INET, ifindex=idx):
            dst = msg.get_attr("NDA_DST")
            if dst:
                try:
                    self.ipr.neigh("del", dst=dst, ifindex=idx)
                except OSError:
                    pass

    def dr_real_server(self, vips: Iterable[str] = ()) -> None:
        """Make this host a direct-routing real server: VIPs on lo, ARP for them silenced.

        The helper under test does this itself; tests that set IPVS up by hand call it.
        """
        for name in ("all", "eth0"):
            self.set_sysctl(f"net.ipv4.conf.{name}.arp_ignore", 1)
            self.set_sysctl(f"net.ipv4.conf.{name}.arp_announce", 2)
        for vip in vips:
            self.add_address(vip, dev="lo")

    def close(self) -> None:
        """Close the netlink socket (the namespace itself is the Lan's to delete)."""
        if self._ipr is not None:
            try:
                self._ipr.close()
            finally:
                self._ipr = None


class Lan:
    """A bridge in the UML root namespace and hosts (namespaces) hanging off it.

    Cleanup deletes every namespace and the bridge, also after a failure half-way.
    """

    def __init__(self, prefix: str = "lab", vip_route: str | None = str(VIP_NET)) -> None:
        """prefix names everything (netns '<prefix>-<host>', links '<prefix>br', '<prefix>v<n>').

        vip_route: a prefix every host routes on-link out of eth0 (so a client ARPs for VIPs);
        None for no such route.
        """
        if not prefix or len(prefix) > 8 or not prefix.replace("-", "").isalnum():
            raise ValueError(f"bad Lan prefix {prefix!r}: 1-8 letters, digits, '-'")
        self.prefix = prefix
        self.vip_route = vip_route
        self.bridge = f"{prefix}br"
        self.hosts: dict[str, Host] = {}
        self._ipr: IPRoute | None = None
        self._made_ns: list[str] = []
        self._made_links: list[str] = []  # veth ends in the root namespace, then the bridge

    def __enter__(self) -> Lan:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Create the bridge (STP off, so ports forward at once; multicast flooded)."""
        self._ipr = IPRoute()
        try:
            self._ipr.link(
                "add", ifname=self.bridge, kind="bridge", br_stp_state=0, br_mcast_snooping=0
            )
            self._made_links.append(self.bridge)
            self._ipr.link("set", index=self._ipr.link_lookup(ifname=self.bridge)[0], state="up")
        except BaseException:
            self.close()
            raise

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def add_host(self, name: str, ip: str, extra_ips: Iterable[str] = ()) -> Host:
        """Create netns '<prefix>-<name>' with eth0 on the bridge, lo up, ip/24 (+ extra /24s)."""
        assert self._ipr is not None, "use Lan as a context manager"
        addrs = [ip, *extra_ips]
        for addr in addrs:
            if ipaddress.ip_address(addr) not in LAN_NET:
                raise ValueError(f"{addr} is outside the lab LAN {LAN_NET}")
        if name in self.hosts:
            raise ValueError(f"host {name} exists")
        index = len(self._made_ns)
        last = int(ipaddress.ip_address(ip)) & 0xFF
        # Locally administered, unique per host, and readable: 02:00:00:<lan#>:<n>:<last octet>.
        mac = f"02:00:00:00:{index:02x}:{last:02x}"
        ns = f"{self.prefix}-{name}"
        outer = f"{self.prefix}v{index}"
        create_netns(ns)
        self._made_ns.append(ns)
        host = Host(self, name, ns, ip, mac, tuple(extra_ips))
        self.hosts[name] = host
        ipr = self._ipr
        fd = os.open(str(NETNS_DIR / ns), os.O_RDONLY)
        try:
            ipr.link(
                "add",
                ifname=outer,
                kind="veth",
                peer={"ifname": "eth0", "address": mac, "net_ns_fd": fd},
            )
        finally:
            os.close(fd)
        self._made_links.insert(0, outer)
        bridge_idx = ipr.link_lookup(ifname=self.bridge)[0]
        outer_idx = ipr.link_lookup(ifname=outer)[0]
        ipr.link("set", index=outer_idx, master=bridge_idx, state="up")
        # IPv6 off: no DAD or router solicitations on the LAN, nothing to wait for.
        for scope in ("all", "default"):
            host.set_sysctl(f"net.ipv6.conf.{scope}.disable_ipv6", 1)
        inner = host.ipr
        inner.link("set", index=host.ifindex("lo"), state="up")
        eth0 = host.ifindex("eth0")
        inner.link("set", index=eth0, state="up")
        for addr in addrs:
            inner.addr("add", index=eth0, address=addr, prefixlen=LAN_NET.prefixlen)
        if self.vip_route:
            inner.route("add", dst=self.vip_route, oif=eth0, scope="link")
        return host

    def close(self) -> None:
        """Delete namespaces (their veths go with them) and the bridge; keep going on errors."""
        for host in self.hosts.values():
            try:
                host.close()
            except Exception:
                pass
        for ns in reversed(self._made_ns):
            try:
                delete_netns(ns)
            except Exception:
                pass
        self._made_ns.clear()
        self.hosts.clear()
        if self._ipr is not None:
            # A veth whose namespace is still held (a leaked socket) would outlive the netns
            # file and block the next Lan of this prefix: delete our links explicitly.
            for name in self._made_links:
                try:
                    for idx in self._ipr.link_lookup(ifname=name):
                        self._ipr.link("del", index=idx)
                except Exception:
                    pass
            self._made_links.clear()
            self._ipr.close()
            self._ipr = None


def ipvsadm(host: Host, *args: str) -> str:
    """Run ipvsadm in host's namespace; return stdout (raises CalledProcessError on failure)."""
    return host.run(["ipvsadm", *args]).stdout


# --- traffic ---------------------------------------------------------------------------------


class EchoService:
    """Answer every TCP line and UDP datagram with the frontend's name (b'fe1\\n').

    TCP listens on 0.0.0.0:port (a reply leaves from the address the client reached). UDP binds
    each VIP separately so that replies come from the VIP, as a DR real server must answer; the
    bind is IP_FREEBIND, so the VIP need not be configured yet. One background thread serves all
    hosts through a selector.
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
                for port in self.tcp_ports:
                    sock = host.socket(socket.AF_INET, socket.SOCK_STREAM)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind(("0.0.0.0", port))
                    sock.listen(128)
                    sock.setblocking(False)
                    self._sel.register(sock, selectors.EVENT_READ, ("listen", host.name, reply))
                for port in self.udp_ports:
                    for addr in [*self.vips, host.ip]:
                        sock = host.socket(socket.AF_INET, socket.SOCK_DGRAM)
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
            key.fileobj.close()  # type: ignore[union-attr]
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


def _bound_socket(client: Host, kind: int, src: str | None) -> socket.socket:
    sock = client.socket(socket.AF_INET, kind)
    if src is not None:
        sock.bind((src, 0))
    return sock


def tcp_ask(client: Host, vip: str, port: int, src: str | None = None, timeout: float = 3.0) -> str:
    """Open a TCP connection from client (source address src), send a line, return the answer."""
    with _bound_socket(client, socket.SOCK_STREAM, src) as sock:
        sock.settimeout(timeout)
        sock.connect((vip, port))
        sock.sendall(b"?\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"{vip}:{port} closed without an answer")
            data += chunk
        return data.decode().strip()


def udp_ask(
    client: Host,
    vip: str,
    port: int,
    src: str | None = None,
    timeout: float = 1.0,
    tries: int = 3,
) -> str:
    """Send one datagram from client (new source port each call); return the answer's text.

    Checks that the answer comes from vip:port (a DR real server must reply from the VIP).
    """
    with _bound_socket(client, socket.SOCK_DGRAM, src) as sock:
        sock.settimeout(timeout)
        for _ in range(tries):
            sock.sendto(b"?\n", (vip, port))
            try:
                while True:
                    data, peer = sock.recvfrom(4096)
                    if peer == (vip, port):
                        return data.decode().strip()
            except socket.timeout:
                continue
        raise TimeoutError(f"no UDP answer from {vip}:{port} after {tries} tries")


@dataclass
class ConnStats:
    """What one long-lived connection saw."""

    index: int
    src: str | None
    frontend: str | None  # who answered first
    answers: Counter = field(default_factory=Counter)  # answers per frontend name
    max_gap: float = 0.0  # longest time without an answer, including the tail at stop
    error: str | None = None  # reset, closed, ...
    broken: bool = False  # error, or no answer within `broken_after` before stop


@dataclass
class LongLivedStats:
    """The result of LongLived.stop()."""

    conns: list[ConnStats]
    duration: float

    @property
    def max_gap(self) -> float:
        return max((c.max_gap for c in self.conns), default=0.0)

    @property
    def broken(self) -> list[int]:
        return [c.index for c in self.conns if c.broken]

    @property
    def by_frontend(self) -> Counter:
        """How many connections each frontend took first."""
        return Counter(c.frontend for c in self.conns)

    def summary(self) -> str:
        return (
            f"{len(self.conns) - len(self.broken)}/{len(self.conns)} kept, "
            f"longest gap {self.max_gap:.3f} s, by frontend {dict(self.by_frontend)}, "
            f"broken {self.broken}"
        )


class LongLived:
    """N TCP connections from a client through vip:port, pinged every `interval` seconds.

    Records per connection who answered and the longest stretch without an answer, so a test can
    say "12 of 12 kept, longest gap 0.11 s" across a failover.
    """

    def __init__(
        self,
        client: Host,
        vip: str,
        port: int,
        count: int = 12,
        sources: Sequence[str | None] | None = None,
        interval: float = 0.02,
        broken_after: float = 1.0,
        connect_timeout: float = 3.0,
    ) -> None:
        """sources: source addresses used round robin (None: the client's primary)."""
        self.client, self.vip, self.port = client, vip, port
        self.count, self.interval, self.broken_after = count, interval, broken_after
        self.connect_timeout = connect_timeout
        self.sources: list[str | None] = list(sources) if sources else [None]
        self._socks: list[socket.socket | None] = []
        self._stats: list[ConnStats] = []
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
                sock = _bound_socket(self.client, socket.SOCK_STREAM, src)
                self._socks.append(sock)
                sock.settimeout(self.connect_timeout)
                sock.connect((self.vip, self.port))
                sock.sendall(b"?\n")
                first = b""
                while not first.endswith(b"\n"):
                    chunk = sock.recv(4096)
                    if not chunk:
                        raise ConnectionError(f"connection {i} closed before its first answer")
                    first += chunk
                name = first.decode().split("\n", 1)[0].strip()
                sock.setblocking(False)
                self._stats.append(ConnStats(i, src, name, Counter({name: 1})))
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
            st = self._stats[i]
            st.max_gap = max(st.max_gap, now - self._last[i])
            self._last[i] = now
            for line in lines:
                st.answers[line.decode(errors="replace").strip()] += 1

    def _fail(self, sel: selectors.BaseSelector, i: int, why: str) -> None:
        sock = self._socks[i]
        if sock is None:
            return
        try:
            sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()
        self._socks[i] = None
        with self._lock:
            self._stats[i].error = why

    def snapshot(self) -> LongLivedStats:
        """The stats so far, without stopping."""
        now = time.monotonic()
        with self._lock:
            conns = []
            for st, last in zip(self._stats, self._last):
                tail = now - last
                conns.append(
                    ConnStats(
                        st.index,
                        st.src,
                        st.frontend,
                        Counter(st.answers),
                        max(st.max_gap, tail),
                        st.error,
                        st.error is not None or tail > self.broken_after,
                    )
                )
        return LongLivedStats(conns, now - self._t0)

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
                sock.close()
        self._socks = [None] * len(self._socks)
