"""The channels of the real-mode kernel (kernel.py): NETLINK_ROUTE for addresses, device indexes
and the steering's tc messages, and IPVS on NETLINK_GENERIC; each a socket, what it caches, and
what the failure of a request makes doubtful.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Collection, Sequence
from typing import Any, Protocol

from pyroute2.netlink import NLM_F_CREATE, NLM_F_EXCL
from pyroute2.netlink.rtnl import RTM_DELADDR, RTM_GETADDR, RTM_NEWADDR

from cgp_ipvs_helper.kernel.netlink import ipvs as ipvswire
from cgp_ipvs_helper.kernel.netlink import neigh, tc
from cgp_ipvs_helper.kernel.netlink.ipvs import key_attrs
from cgp_ipvs_helper.kernel.netlink.sockets import (
    BATCH,
    NETLINK_ROUTE,
    GenericNetlinkSocket,
    KernelSaid,
    NetlinkSocket,
    Request,
)
from cgp_ipvs_helper.kernel.netlink.wire import ADDRESS_DUMP, address_from, ifaddr
from cgp_ipvs_helper.plan import operations, tcops
from cgp_ipvs_helper.plan.model import Address, Daemon, Dest, GuardState, Service, TcState

IPVS_FAMILY = ipvswire.FAMILY  # looked up by this name (a kernel test renames it)


class Unavailable(Exception):
    """IPVS cannot be used; the text says why, for the log."""


def reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        if exc.strerror:
            return exc.strerror
        if exc.errno:
            return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


class Channel(Protocol):
    """Where the requests of one row's channel go: sent together, failures by index; at most
    `limit` at a time (0: any number), so that what is made for one batch is sent before the
    next is made."""

    limit: int

    def batch(self, requests: Sequence[Any]) -> dict[int, int]:
        """Send in order; {index: errno} of those that failed; OSError if nothing was sent."""

    def failed(self, codes: set[int]) -> None:
        """Some requests failed with these errors: forget what they make doubtful."""


class Route:
    """NETLINK_ROUTE: addresses, and device indexes by name; on `sock` if given."""

    limit = BATCH  # a datagram's worth

    def __init__(self, sock: NetlinkSocket | None = None) -> None:
        self.sock = sock or NetlinkSocket(NETLINK_ROUTE)
        self._ifindex: dict[str, int] = {}
        self._own: frozenset[str] = frozenset()  # this host's addresses, as last read

    def close(self) -> None:
        self.sock.close()
        self._ifindex.clear()

    def addresses(self) -> tuple[Address, ...]:
        names = dict(socket.if_nameindex())
        self._ifindex = {name: index for index, name in names.items()}
        found = (address_from(msg, names) for msg in self.sock.dump(RTM_GETADDR, ADDRESS_DUMP))
        addresses = tuple(a for a in found if a is not None)
        self._own = frozenset(a.ip for a in addresses)
        return addresses

    def batch(self, requests: Sequence[Request]) -> dict[int, int]:
        return self.sock.batch(requests)

    def indexes(self) -> dict[str, int]:
        """The device indexes known now, by name."""
        return dict(self._ifindex)

    def request(self, address: Address, add: bool) -> Request:
        body = ifaddr(address, self._index(address.dev))
        return (RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body) if add else (RTM_DELADDR, 0, body)

    def failed(self, codes: set[int]) -> None:
        if errno.ENODEV in codes:
            self._ifindex.clear()  # perhaps a device was replaced: resolve names again

    def tc_state(self, dev: str, resolve: Collection[str] | None = None) -> TcState:
        """The ingress qdisc of `dev`, our filters on it, its MAC and its neighbours' MACs:
        those of `resolve`, each of which (but this host's own and those set by hand) is asked
        to be resolved or confirmed for the next read (the answers come later), or with None
        every one, nothing asked. Nothing if it cannot be read (the plan then adds everything,
        and the kernel's answer says why it cannot be done)."""
        try:
            index = self._index(dev)
            kinds = {tc.ingress_kind(msg, index) for msg in self.sock.dump(*tc.dump_qdiscs())}
            found = (tc.parse_filter(msg) for msg in self.sock.dump(*tc.dump_filters(index)))
            ingress = next((k for k in kinds if k is not None), None)
            mac = neigh.link_mac(self.sock.dump(*neigh.dump_links()), index)
            macs, fixed = neigh.neighbours(self.sock.dump(*neigh.dump_neighbours()), index)
            filters = frozenset(f for f in found if f is not None)
        except (OSError, ValueError, KeyError, struct.error):
            return TcState()
        if resolve is not None:
            asked = [ip for ip in resolve if ip not in self._own and ip not in fixed]
            if asked:
                self.sock.batch(neigh.use(asked, index))
            macs = {ip: m for ip, m in macs.items() if ip in resolve}
        return TcState(ingress, filters, mac, frozenset(macs.items()))

    def guard_state(self, dev: str) -> GuardState:
        """The clsact-capable qdisc of `dev` and our guards on its egress; nothing if it cannot
        be read (as tc_state)."""
        try:
            index = self._index(dev)
            kinds = {tc.ingress_kind(msg, index) for msg in self.sock.dump(*tc.dump_qdiscs())}
            found = (tc.parse_guard(msg) for msg in self.sock.dump(*tc.dump_egress(index)))
            qdisc = next((k for k in kinds if k is not None), None)
            return GuardState(qdisc, frozenset(g for g in found if g is not None))
        except (OSError, ValueError, KeyError, struct.error):
            return GuardState()

    def tc_request(self, op: operations.Operation) -> Request:
        if isinstance(op, tcops.AddGuard):
            return tc.add_guard(self._index(op.dev), op.guard)
        if isinstance(op, tcops.DelGuard):
            return tc.del_guard(self._index(op.dev), op.pref, op.handle)
        if isinstance(op, tcops.AddClsact):
            return tc.add_clsact(self._index(op.dev))
        if isinstance(op, tcops.AddFilter):
            return tc.add_filter(self._index(op.dev), op.filter)
        return tc.del_filter(self._index(op.dev), op.pref, op.chain, op.handle)

    def _index(self, dev: str) -> int:
        index = self._ifindex.get(dev)
        if index is None:
            try:
                index = socket.if_nametoindex(dev)
            except OSError:
                raise OSError(errno.ENODEV, os.strerror(errno.ENODEV)) from None
            self._ifindex[dev] = index
        return index


class Ipvs:
    """IPVS on NETLINK_GENERIC: its family id, looked up once per socket, and its state; on
    `sock` if given."""

    limit = BATCH

    def __init__(self, sock: GenericNetlinkSocket | None = None) -> None:
        self.sock = sock or GenericNetlinkSocket()

    def close(self) -> None:
        self.sock.close()

    def family(self) -> int:
        """The IPVS family id; Unavailable if the module is not loaded."""
        try:
            return self.sock.family(IPVS_FAMILY)
        except KernelSaid as exc:
            if exc.errno == errno.ENOENT:
                raise Unavailable(
                    "IPVS is not available: load the ip_vs kernel module "
                    "(no generic netlink family IPVS)"
                ) from None
            raise Unavailable(f"IPVS is not available: {reason(exc)}") from None
        except (OSError, IndexError, KeyError, struct.error) as exc:
            raise Unavailable(f"IPVS is not available: {reason(exc)}") from None

    def batch(self, requests: Sequence[Request]) -> dict[int, int]:
        return self.sock.batch(requests)

    def failed(self, codes: set[int]) -> None:
        if codes & {errno.ENOENT, errno.EOPNOTSUPP}:
            self.sock.forget(IPVS_FAMILY)  # perhaps the module was reloaded: ask again next time

    def state(
        self, tables: bool = True
    ) -> tuple[frozenset[Service], frozenset[Dest], frozenset[Daemon]]:
        """Services, real servers (none read without `tables`) and sync daemons."""
        family = self.family()
        dump = self.sock.dump
        try:
            services = []
            for msg in dump(family, ipvswire.request(ipvswire.CMD_GET_SERVICE)) if tables else ():
                svc = ipvswire.service_from(msg)
                if svc is not None:
                    services.append(svc)
            dests = []
            for svc in services:
                key = key_attrs(svc.key)
                for msg in dump(family, ipvswire.request(ipvswire.CMD_GET_DEST, key)):
                    dest = ipvswire.dest_from(svc.key, msg)
                    if dest is not None:
                        dests.append(dest)
            daemons = []
            for msg in dump(family, ipvswire.request(ipvswire.CMD_GET_DAEMON)):
                daemon = ipvswire.daemon_from(msg)
                if daemon is not None:
                    daemons.append(daemon)
        except KernelSaid as exc:
            if exc.errno in (errno.EPERM, errno.EACCES):
                raise Unavailable(
                    "IPVS is not available: permission denied (needs root or CAP_NET_ADMIN)"
                ) from None
            self.failed({exc.errno})
            raise Unavailable(f"IPVS could not be read: {reason(exc)}") from None
        except OSError as exc:
            raise Unavailable(f"IPVS could not be read: {reason(exc)}") from None
        except (KeyError, ValueError, struct.error) as exc:
            raise Unavailable(f"IPVS could not be read: unexpected answer ({exc!r})") from None
        return frozenset(services), frozenset(dests), frozenset(daemons)
