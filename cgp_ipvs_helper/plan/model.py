"""Small frozen values shared by the planner, the operations and the kernels.

Frozen attrs classes hash by value, so "desired minus observed" is a set difference; the
values a /24 plan holds thousands of keep their hash once computed (a plan hashes each often).
They hold configuration only, never counters, so equality means "nothing to change".
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping

from attrs import Factory, field, frozen
from attrs.validators import in_, instance_of

from cgp_ipvs_helper.plan.guard import Guard
from cgp_ipvs_helper.plan.steering import RangeFilter, VipFilter

PROTOCOLS = ("tcp", "udp")
DAEMON_STATES = ("master", "backup")


def _port(_obj: object, _attr: object, value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError(f"port out of range: {value}")


def is_ipv6(ip: str) -> bool:
    """Whether `ip` (a VIP, a member or a kernel address, spelled as the kernel spells it) is
    IPv6: every IPv6 spelling has a colon, no IPv4 one has."""
    return ":" in ip


def balanced_vips(vips: Iterable[str], members6: Collection[object]) -> list[str]:
    """The VIPs the active balancer takes on -i, balances and announces: every IPv4 VIP, and
    the IPv6 ones once a member's IPv6 address is known (`members6`: IPv6 direct routing
    needs it)."""
    return [v for v in vips if members6 or not is_ipv6(v)]


def host_prefixlen(ip: str) -> int:
    """The prefix length of one host: what every VIP is added with (/32, /128)."""
    return 128 if is_ipv6(ip) else 32


class Role(enum.Enum):
    """What this frontend is for the group, as the planner sees it; STOPPED is what QUIT leaves."""

    STANDBY = "standby"
    ACTIVE = "active"
    # active, and the backup sync daemon still takes the old balancer's last connection entries
    TAKING_OVER = "taking over"
    DRAINING = "draining"
    # standby after a drain shorter than the old master's flush: that master still sends
    FLUSHING = "flushing"
    STOPPED = "stopped"


@frozen
class Settings:
    """What the command line chose (see docs/protocol.md, "Options")."""

    persistence: int = 15
    iface: str = "eth0"
    syncid: int = 0
    timeout: float = 15.0
    vipfile: str = "/etc/sysconfig/vipaddrs"
    weight: int = 100
    dry_run: bool = False
    ports: tuple[tuple[str, int], ...] = ()
    drain: float = 5.0
    member_map: str = "/etc/sysconfig/cgp-ipvs-members"


@frozen(cache_hash=True)
class Address:
    """An address on a device; `prefixlen` is what the kernel holds (we add /32 or /128)."""

    ip: str
    dev: str
    prefixlen: int = field(default=Factory(lambda a: host_prefixlen(a.ip), takes_self=True))


@frozen
class Sysctl:
    """A /proc/sys setting; `path` uses "/" so interface names with dots stay intact."""

    path: str
    value: str

    @property
    def name(self) -> str:
        """The spelling `sysctl -w` accepts: dotted unless a component holds a dot."""
        parts = self.path.split("/")
        return self.path if any("." in p for p in parts) else ".".join(parts)


# Size of the caches keyed by service (the words and requests every real server of a service
# shares): every service of a big VIP file fits (4,096 VIPs with -p 0 have 77,824), since a
# smaller cache would miss on every lookup of an ACTIVATE. A cache holds only what was asked.
SERVICES_KEPT = 1 << 17
# Size of the caches keyed by real server (its address, port and weight): every member (IPv4
# and IPv6 address) on every port of CGP's set, weighted as self or not (128 x 2 x 19 x 2).
SERVERS_KEPT = 1 << 14


@frozen(cache_hash=True)
class ServiceKey:
    """What identifies an IPVS virtual service: protocol, address and port, or a firewall mark
    and an address family (then the kernel matches the mark alone and reports the protocol as
    TCP; `vip` is the family's unspecified address)."""

    proto: str = field(validator=in_(PROTOCOLS))
    vip: str = field(validator=instance_of(str))
    port: int = field(validator=_port)
    fwmark: int = 0

    @classmethod
    def for_mark(cls, mark: int, ipv6: bool = False) -> ServiceKey:
        """The firewall-mark service of `mark` for IPv4 packets, or for IPv6 ones."""
        return cls("tcp", "::" if ipv6 else "0.0.0.0", 0, mark)

    def __str__(self) -> str:
        if self.fwmark:
            return f"fwmark{'6' if is_ipv6(self.vip) else ''}/{self.fwmark}"
        return f"{self.proto}/{self.vip}:{self.port}"


@frozen(cache_hash=True)
class Service:
    """An IPVS virtual service; `persistence` 0 means not persistent."""

    key: ServiceKey
    scheduler: str = field(default="wlc", validator=instance_of(str))
    persistence: int = 0


@frozen(cache_hash=True)
class Dest:
    """A real server of a service; `method` is "dr" for everything this helper makes."""

    service: ServiceKey
    ip: str
    weight: int
    method: str = "dr"

    @property
    def port(self) -> int:
        """Direct routing cannot change the port: the real server's port is the service's."""
        return self.service.port


@frozen
class Daemon:
    """An IPVS connection-sync daemon."""

    state: str = field(validator=in_(DAEMON_STATES))
    iface: str
    syncid: int


@frozen
class TcState:
    """The LAN interface as far as steering goes: the kind of its ingress-capable qdisc (None:
    there is none), our filters as (preference, chain, handle, what it holds; None if changed),
    its MAC, and the link-layer addresses of its usable neighbour entries (address, MAC)."""

    ingress: str | None = None
    filters: frozenset[tuple[int, int, int, VipFilter | RangeFilter | None]] = frozenset()
    mac: str | None = None
    neighbours: frozenset[tuple[str, str]] = frozenset()


@frozen
class GuardState:
    """The LAN interface's egress as far as the takeover's reset guard goes: the kind of its
    clsact-capable qdisc ('clsact', 'ingress' or None: none) and our guards as (preference,
    handle, what it holds; None if changed)."""

    qdisc: str | None = None
    guards: frozenset[tuple[int, int, Guard | None]] = frozenset()


@frozen
class KernelState:
    """What the kernel holds, as far as the planner needs to know.

    `addresses` lists every IPv4 address in kernel order (primary addresses first per device);
    `sysctls` maps each asked-for path to its value, or None where the kernel has no such file;
    `ipvs` is False where IPVS could not be read (no module, or no privilege in -m mode).
    """

    addresses: tuple[Address, ...] = ()
    sysctls: Mapping[str, str | None] = field(factory=dict, hash=False)
    services: frozenset[Service] = frozenset()
    dests: frozenset[Dest] = frozenset()
    daemons: frozenset[Daemon] = frozenset()
    ipvs: bool = True
    tc: TcState | None = None  # None: not read (no member map in this run)
    guard: GuardState | None = None  # None: not read

    def addresses_on(self, dev: str) -> tuple[Address, ...]:
        return tuple(a for a in self.addresses if a.dev == dev)

    def primary_ip(self, dev: str, excluding: frozenset[str] = frozenset()) -> str | None:
        """The first address the kernel lists on `dev`, skipping VIPs and loopback."""
        for a in self.addresses_on(dev):
            if a.ip not in excluding and not a.ip.startswith("127."):
                return a.ip
        return None


@frozen
class DesiredState:
    """What the planner wants the kernel to hold; `scope` is every VIP we own (may delete)."""

    iface: str
    syncid: int
    on_lo: frozenset[str]
    on_iface: frozenset[str]
    sysctls: tuple[Sysctl, ...]
    services: frozenset[Service]
    dests: frozenset[Dest]
    daemons: frozenset[Daemon]
    scope: frozenset[str]
    filters: frozenset[VipFilter | RangeFilter] | None = None  # None: leave tc alone (no map)
    guards: frozenset[Guard] = frozenset()  # the takeover's reset guard (guard.py)
