"""The operations the planner emits and the kernels carry out.

Each operation renders itself as the exact shell command with the same effect (`argv()`);
`str(op)` is that command safely quoted, which is what -m prints into CGP's log. Real mode
never runs these commands: the netlink kernel carries out the same operation directly.
"""

from __future__ import annotations

import functools
import operator
import shlex
from collections.abc import Iterable, Iterator
from itertools import chain, groupby, product
from typing import ClassVar, Union

from attrs import frozen

from cgp_ipvs_helper.plan.model import (
    SERVERS_KEPT,
    SERVICES_KEPT,
    Address,
    Daemon,
    Dest,
    Service,
    ServiceKey,
    Sysctl,
    is_ipv6,
)
from cgp_ipvs_helper.plan.rendering import Renders
from cgp_ipvs_helper.plan.tcops import AddClsact, AddFilter, AddGuard, DelFilter, DelGuard

_PROTO_FLAG = {"tcp": "-t", "udp": "-u"}


def _host(ip: str) -> str:
    """An address as ipvsadm takes it: IPv6 in brackets, or its colons would be read as a port."""
    return f"[{ip}]" if is_ipv6(ip) else ip


def _real_server(ip: str, port: int) -> str:
    """The -r argument: ipvsadm takes a bracketed IPv6 address only with a port (the service's,
    which direct routing keeps)."""
    return f"[{ip}]:{port}" if is_ipv6(ip) else ip


def _service_args(key: ServiceKey) -> list[str]:
    if key.fwmark:  # a firewall-mark service is IPv4 unless -6 says otherwise
        return ["-f", str(key.fwmark), "-6"] if is_ipv6(key.vip) else ["-f", str(key.fwmark)]
    return [_PROTO_FLAG[key.proto], f"{_host(key.vip)}:{key.port}"]


def _address_command(verb: str, a: Address) -> list[str]:
    """`ip address add|del`; an IPv6 one says -6, and is added without duplicate address
    detection (nodad): a VIP must serve at once, and the group holds it on purpose."""
    if not is_ipv6(a.ip):
        return ["ip", "address", verb, f"{a.ip}/{a.prefixlen}", "dev", a.dev]
    nodad = ["nodad"] if verb == "add" else []
    return ["ip", "-6", "address", verb, f"{a.ip}/{a.prefixlen}", "dev", a.dev, *nodad]


@frozen(cache_hash=True)  # a key of the lines logged ahead
class AddAddress(Renders):
    address: Address

    def argv(self) -> list[str]:
        return _address_command("add", self.address)


@frozen
class DelAddress(Renders):
    address: Address

    def argv(self) -> list[str]:
        return _address_command("del", self.address)


@frozen
class SetSysctl(Renders):
    sysctl: Sysctl

    def argv(self) -> list[str]:
        return ["sysctl", "-w", f"{self.sysctl.name}={self.sysctl.value}"]


def _service_command(flag: str, service: Service) -> list[str]:
    opts = ["-s", service.scheduler]
    if service.persistence:
        opts += ["-p", str(service.persistence)]
    return ["ipvsadm", flag, *_service_args(service.key), *opts]


@frozen(cache_hash=True)  # a key of the lines logged ahead
class AddService(Renders):
    service: Service

    def argv(self) -> list[str]:
        return _service_command("-A", self.service)


@frozen
class EditService(Renders):
    service: Service

    def argv(self) -> list[str]:
        return _service_command("-E", self.service)


@frozen
class DelService(Renders):
    service: Service

    def argv(self) -> list[str]:
        return ["ipvsadm", "-D", *_service_args(self.service.key)]


@functools.lru_cache(maxsize=SERVICES_KEPT)  # a service's real servers share them
def _service_words(key: ServiceKey) -> str:
    return shlex.join(_service_args(key))


def _dest_head(flag: str, key: ServiceKey) -> str:
    """A real server's command up to its own words: the same for each real server of a
    service."""
    return f"ipvsadm {flag} {_service_words(key)} -r "


@functools.lru_cache(maxsize=2 * SERVICES_KEPT)  # adding and deleting (-a, -d) while active
def _logged_head(flag: str, key: ServiceKey) -> bytes:
    """The start of the info line of each real server of a service given, changed or taken."""
    return f"* {_dest_head(flag, key)}".encode()


_quoted = functools.lru_cache(maxsize=SERVERS_KEPT)(shlex.quote)  # a member's -r word per port


def prepare_real_servers(keys: Iterable[ServiceKey]) -> None:
    """Quote these services' words now (while standby): an ACTIVATE then joins each real
    server's own words to them, and so does the first member leaving."""
    for key in keys:
        _logged_head("-a", key)
        _logged_head("-d", key)


def _server_words(ip: str, port: int, weight: int | None) -> str:
    """A real server's words after -r: its address, and unless it is deleted (None) its
    method and weight."""
    server = _quoted(_real_server(ip, port))
    return server if weight is None else f"{server} -g -w {weight}"


@frozen
class _RealServer(Renders):
    """A real server given, changed or taken (`FLAG`; a deleted one names no method or weight):
    `str()` is shlex.join(argv()) joined from words quoted once per service and per server (an
    ACTIVATE logs thousands); `_Dests.logged()` joins the same words."""

    dest: Dest

    FLAG: ClassVar[str]
    WEIGHED: ClassVar[bool] = True

    def _weight(self) -> int | None:
        return self.dest.weight if self.WEIGHED else None

    def argv(self) -> list[str]:
        d, weight = self.dest, self._weight()
        words = ["ipvsadm", self.FLAG, *_service_args(d.service), "-r", _real_server(d.ip, d.port)]
        return words if weight is None else [*words, "-g", "-w", str(weight)]

    def __str__(self) -> str:
        d = self.dest
        return _dest_head(self.FLAG, d.service) + _server_words(d.ip, d.port, self._weight())


@frozen
class AddDest(_RealServer):
    FLAG = "-a"


@frozen
class EditDest(_RealServer):
    FLAG = "-e"


@frozen
class DelDest(_RealServer):
    FLAG = "-d"
    WEIGHED = False


@frozen
class _Dests:
    """The real servers `servers` (address, weight) given, changed or taken on each of
    `services` in turn, all of one family, as one value: what a takeover or a change of the
    members does to the VIPs' services. It is its AddDest (EditDest, DelDest) values (`each()`)
    for both kernels and in the log, but made, sent and logged from parts kept per service and
    per server: as thousands of values they cost the helper more than the kernel needs to
    carry them out. `str()` is its commands, one per line."""

    services: tuple[ServiceKey, ...]
    servers: tuple[tuple[str, int], ...]

    ONE: ClassVar[type[AddDest | EditDest | DelDest]]

    def each(self) -> tuple[AddDest | EditDest | DelDest, ...]:
        one = self.ONE
        return tuple(one(Dest(k, ip, w)) for k in self.services for ip, w in self.servers)

    def part(self, i: int) -> AddDest | EditDest | DelDest:
        """each()[i], made alone."""
        ip, weight = self.servers[i % len(self.servers)]
        return self.ONE(Dest(self.services[i // len(self.servers)], ip, weight))

    def __len__(self) -> int:
        return len(self.services) * len(self.servers)

    def __str__(self) -> str:
        return "\n".join(map(str, self.each()))

    def logged(self) -> bytes:
        """Its info lines (`* ` command, newline), in UTF-8, joined from kept parts."""
        return b"".join(self.logged_parts())

    def logged_parts(self) -> Iterator[bytes]:
        """The kept parts its info lines join (each line a service's head and a server's tail):
        joined once with the rest of a reply, the lines of tens of thousands of real servers
        are not copied from buffer to buffer (fresh memory: a page fault per page)."""
        return chain.from_iterable(map(chain.from_iterable, self._logged_blocks()))

    def _logged_blocks(self) -> Iterator[Iterator[tuple[bytes, bytes]]]:
        """(head, tail) of each line, by port (whose words a line's tail holds)."""
        flag, weighed = self.ONE.FLAG, self.ONE.WEIGHED
        for port, keys in groupby(self.services, _port):
            tails = [
                f"{_server_words(ip, port, w if weighed else None)}\n".encode()
                for ip, w in self.servers
            ]
            yield product([_logged_head(flag, key) for key in keys], tails)


@frozen
class AddDests(_Dests):
    ONE = AddDest


@frozen
class EditDests(_Dests):
    ONE = EditDest


@frozen
class DelDests(_Dests):
    ONE = DelDest


def each(ops: Iterable[Operation]) -> list[Operation]:
    """The operations, each standing for many (AddDests, EditDests, DelDests) as its values."""
    return [one for op in ops for one in (op.each() if isinstance(op, _Dests) else (op,))]


_port = operator.attrgetter("port")  # a real server's port, and so its words, is its service's


@frozen
class StartDaemon(Renders):
    daemon: Daemon

    def argv(self) -> list[str]:
        d = self.daemon
        return [
            "ipvsadm",
            "--start-daemon",
            d.state,
            "--mcast-interface",
            d.iface,
            "--syncid",
            str(d.syncid),
        ]


@frozen
class StopDaemon(Renders):
    daemon: Daemon

    def argv(self) -> list[str]:
        return ["ipvsadm", "--stop-daemon", self.daemon.state]


@frozen(cache_hash=True)  # a key of the lines logged ahead
class SendGarp(Renders):
    """One gratuitous ARP frame for `ip` out of `dev`: request form, or reply form."""

    ip: str
    dev: str
    reply: bool

    def argv(self) -> list[str]:
        return ["arping", "-A" if self.reply else "-U", "-c", "1", "-I", self.dev, self.ip]


@frozen(cache_hash=True)  # a key of the lines logged ahead
class SendNa(Renders):
    """One unsolicited neighbour advertisement (override flag, to all-nodes) for the IPv6 `ip`
    out of `dev`: an IPv6 VIP's gratuitous ARP. Rendered as libndp's `ndptool` (Debian:
    libndp-tools; RHEL: libndp), which sends the same advertisement from a raw ICMPv6 socket."""

    ip: str
    dev: str

    def argv(self) -> list[str]:
        return ["ndptool", "-t", "na", "-U", "-i", self.dev, "-T", self.ip, "send"]


ManyDests = Union[AddDests, EditDests, DelDests]

Operation = Union[
    AddAddress,
    DelAddress,
    SetSysctl,
    AddService,
    EditService,
    DelService,
    AddDest,
    AddDests,
    EditDest,
    EditDests,
    DelDest,
    DelDests,
    StartDaemon,
    StopDaemon,
    SendGarp,
    SendNa,
    AddClsact,
    AddFilter,
    DelFilter,
    AddGuard,
    DelGuard,
]
