"""A LAN of network namespaces: a bridge with no uplink, and hosts (namespaces) on it.

Everything lives in documentation ranges (LAN 192.0.2.0/24, VIPs 198.51.100.0/24; with
`ipv6=True` also LAN 2001:db8::/64 and IPv6 VIPs in 2001:db8:10::/64) on a bridge
in the UML root namespace that has no uplink: nothing here can reach the host's network.
Namespaces, veth pairs, the bridge, addresses and routes are made over netlink (pyroute2), with
no process per operation: a forked tool is dear in this kernel.

Typical use::

    with Lan("t1") as lan:
        fe1 = lan.add_host("fe1", "192.0.2.11")
        fe1.add_address("198.51.100.1", dev="lo")
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import socket
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from pyroute2.iproute import IPRoute

from .netns import NETNS_DIR, create_netns, delete_netns, in_netns

LAN_NET = ipaddress.ip_network("192.0.2.0/24")
VIP_NET = ipaddress.ip_network("198.51.100.0/24")
LAN6_NET = ipaddress.ip_network("2001:db8::/64")
VIP6_NET = ipaddress.ip_network("2001:db8:10::/64")
# Neighbour states that carry no usable link-layer address.
NUD_INCOMPLETE = 0x01
NUD_FAILED = 0x20
NUD_NOARP = 0x40
T = TypeVar("T")
_names = itertools.count()


def unique(tag: str) -> str:
    """A Lan prefix (or namespace name) no other run in this boot uses: `tag`'s first two
    characters, this process's id and a count, at most 8 characters."""
    return f"{tag[:2]}{os.getpid() % 1000}{next(_names)}"[:8]


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
    ip6: str | None = None  # 2001:db8::<last octet of ip> on an IPv6 LAN
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
        interfaces; it costs more than forking from a thread inside the namespace.
        """
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        argv = ["ip", "netns", "exec", self.ns, *argv]
        return subprocess.run(argv, check=check, timeout=timeout, **kw)

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

    def addresses6(self, dev: str = "eth0") -> list[str]:
        """Global IPv6 addresses on `dev` as 'addr/len'."""
        msgs = self.ipr.get_addr(family=socket.AF_INET6, index=self.ifindex(dev))
        return [f"{m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}" for m in msgs if m["scope"] == 0]

    def neigh(self, ip: str, dev: str = "eth0") -> str | None:
        """The MAC this host's ARP (IPv6: neighbour) cache holds for ip on dev, or None (absent
        or unresolved)."""
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        for msg in self.ipr.get_neighbours(family=family, dst=ip, ifindex=self.ifindex(dev)):
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

    def __init__(
        self, prefix: str = "lab", vip_route: str | None = str(VIP_NET), ipv6: bool = False
    ) -> None:
        """prefix names everything (netns '<prefix>-<host>', links '<prefix>br', '<prefix>v<n>').

        vip_route: a prefix every host routes on-link out of eth0 (so a client ARPs for VIPs);
        None for no such route. ipv6: hosts also get 2001:db8::<last octet>/64 and an on-link
        route to VIP6_NET (so a client solicits its neighbour for IPv6 VIPs); else IPv6 is off.
        """
        self.ipv6 = ipv6
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
        addrs = [a for a in [ip, *extra_ips] if ":" not in a]
        addrs6 = [a for a in extra_ips if ":" in a]
        if addrs6 and not self.ipv6:
            raise ValueError(f"{addrs6[0]}: IPv6 on a LAN made without ipv6=True")
        for addr in [*addrs, *addrs6]:
            net = LAN6_NET if ":" in addr else LAN_NET
            if ipaddress.ip_address(addr) not in net:
                raise ValueError(f"{addr} is outside the lab LAN {net}")
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
        ip6 = f"2001:db8::{last}" if self.ipv6 else None
        host = Host(self, name, ns, ip, mac, tuple(extra_ips), ip6)
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
        # IPv6 off: no DAD or router solicitations on the LAN, nothing to wait for. On an IPv6
        # LAN: no DAD (the addresses are usable at once) and no router solicitations either.
        if self.ipv6:
            for scope in ("all", "default", "eth0"):
                host.set_sysctl(f"net.ipv6.conf.{scope}.accept_dad", 0)
                host.set_sysctl(f"net.ipv6.conf.{scope}.router_solicitations", 0)
                host.set_sysctl(f"net.ipv6.conf.{scope}.accept_ra", 0)
        else:
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
        if ip6 is not None:
            batch = "".join(
                f"address add {a}/{LAN6_NET.prefixlen} dev eth0 nodad\n" for a in [ip6, *addrs6]
            )
            host.run(["ip", "-batch", "-"], input=batch + f"route add {VIP6_NET} dev eth0\n")
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
