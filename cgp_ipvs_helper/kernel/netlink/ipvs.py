"""IPVS generic netlink messages (include/uapi/linux/ip_vs.h): requests for services, real
servers and sync daemons, as `ipvsadm` sends them, and the models read back from dumps."""

from __future__ import annotations

import functools
import operator
import socket
import struct
from collections.abc import Iterable, Iterator, Sequence
from itertools import groupby, product, repeat

from pyroute2.netlink.generic import ipvs as pr_ipvs

from cgp_ipvs_helper.kernel.netlink.wire import (
    BE16,
    GENLHDR,
    U16,
    U32,
    attrs,
    genl,
    nla,
    packed,
    string,
    unpacked,
)
from cgp_ipvs_helper.plan.model import (
    SERVERS_KEPT,
    SERVICES_KEPT,
    Daemon,
    Dest,
    Service,
    ServiceKey,
)

FAMILY = pr_ipvs.GENL_NAME  # "IPVS": the generic netlink family the ip_vs module registers
CMD_NEW_SERVICE, CMD_SET_SERVICE = pr_ipvs.IPVS_CMD_NEW_SERVICE, pr_ipvs.IPVS_CMD_SET_SERVICE
CMD_DEL_SERVICE, CMD_GET_SERVICE = pr_ipvs.IPVS_CMD_DEL_SERVICE, pr_ipvs.IPVS_CMD_GET_SERVICE
CMD_NEW_DEST, CMD_SET_DEST = pr_ipvs.IPVS_CMD_NEW_DEST, pr_ipvs.IPVS_CMD_SET_DEST
CMD_DEL_DEST, CMD_GET_DEST = pr_ipvs.IPVS_CMD_DEL_DEST, pr_ipvs.IPVS_CMD_GET_DEST
CMD_NEW_DAEMON, CMD_DEL_DAEMON = pr_ipvs.IPVS_CMD_NEW_DAEMON, pr_ipvs.IPVS_CMD_DEL_DAEMON
CMD_GET_DAEMON = pr_ipvs.IPVS_CMD_GET_DAEMON

IPVS_CMD_ATTR_SERVICE, IPVS_CMD_ATTR_DEST, IPVS_CMD_ATTR_DAEMON = 1, 2, 3
IPVS_SVC_ATTR_AF = 1  # u16
IPVS_SVC_ATTR_PROTOCOL = 2  # u16
IPVS_SVC_ATTR_ADDR = 3  # union nf_inet_addr: 4 bytes for AF_INET, 16 for AF_INET6
IPVS_SVC_ATTR_PORT = 4  # be16
IPVS_SVC_ATTR_FWMARK = 5  # u32
IPVS_SVC_ATTR_SCHED_NAME = 6  # string
IPVS_SVC_ATTR_FLAGS = 7  # struct ip_vs_flags {u32 flags; u32 mask}
IPVS_SVC_ATTR_TIMEOUT = 8  # u32 seconds
IPVS_SVC_ATTR_NETMASK = 9  # be32: the mask for AF_INET; for AF_INET6 a prefix length (u32)
IPVS_DEST_ATTR_ADDR = 1  # union nf_inet_addr
IPVS_DEST_ATTR_PORT = 2  # be16
IPVS_DEST_ATTR_FWD_METHOD = 3  # u32, IP_VS_CONN_F_*
IPVS_DEST_ATTR_WEIGHT = 4  # u32
IPVS_DEST_ATTR_U_THRESH = 5  # u32
IPVS_DEST_ATTR_L_THRESH = 6  # u32
IPVS_DEST_ATTR_ADDR_FAMILY = 11  # u16, Linux 3.18 and later
# The sync daemon's attributes, which pyroute2 0.9.7 does not declare (it has the whole
# IPVS_CMD_ATTR_DAEMON as "hex"). NEW_DAEMON needs the first three, DEL_DAEMON only STATE.
# Linux 4.3 added SYNC_MAXLEN (u16, 1472 by default), MCAST_GROUP (in_addr, 224.0.0.81),
# MCAST_GROUP6 (in6_addr), MCAST_PORT (u16 in host order, 8848) and MCAST_TTL (u8, 1), numbered
# 4 to 8; 6.1 reports all but MCAST_GROUP6 for an IPv4 daemon. This helper keeps the defaults.
IPVS_DAEMON_ATTR_STATE = 1  # u32: 1 master, 2 backup
IPVS_DAEMON_ATTR_MCAST_IFN = 2  # NUL-terminated interface name
IPVS_DAEMON_ATTR_SYNC_ID = 3  # u32
IP_VS_SVC_F_PERSISTENT = 0x1
IP_VS_CONN_F_FWD_MASK = 0x7
IP_VS_CONN_F_DROUTE = 3
IP_VS_STATE = {"master": 1, "backup": 2}
_STATE_NAMES = {v: k for k, v in IP_VS_STATE.items()}

# A local real server (the director itself: this project's "self" member) added with -g is
# reported by Linux 6.1 with fwd_method 3 (DROUTE), and `ipvsadm -Ln` shows "Route" (seen in the
# user-mode kernel); 6.1 finds out per packet that the route is local. Older kernels (2.6.x, such
# as RHEL 6's 2.6.32) rewrote it to 1 (LOCALNODE, "Local") when it was added. Both read as "dr".
_METHODS = {0: "nat", 1: "dr", 2: "tunnel", 3: "dr"}
# Persistence granularity: which client addresses count as one client. IPv4: the whole address
# (/32). IPv6: the whole address too (/128), what ipvsadm sets when -M is not given, so the
# printed `ipvsadm -A -t [2001:db8::10]:0 -s wlc -p 15` is exactly this. A /64 would pin every
# host of a customer's LAN to one frontend; one host sends a session's connections from one
# address (temporary addresses change daily, not per connection). The README says so.
_NETMASK = {socket.AF_INET: b"\xff\xff\xff\xff", socket.AF_INET6: U32.pack(128)}
_FAMILIES = (socket.AF_INET, socket.AF_INET6)
_PROTOCOLS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
_PROTOCOL_NAMES = {v: k for k, v in _PROTOCOLS.items()}


# request(cmd, *attributes): the body of an IPVS request or dump
request = functools.partial(genl, pr_ipvs.GENL_VERSION)


# --- requests --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=SERVICES_KEPT)  # a dest names its service: 4 real servers share it
def _service_key(key: ServiceKey) -> bytes:
    family, addr = packed(key.vip)
    head = nla(IPVS_SVC_ATTR_AF, U16.pack(family))
    if key.fwmark:  # what ipvsadm -f sends: the mark instead of protocol, address and port
        return head + nla(IPVS_SVC_ATTR_FWMARK, U32.pack(key.fwmark))
    return (
        head
        + nla(IPVS_SVC_ATTR_PROTOCOL, U16.pack(_PROTOCOLS[key.proto]))
        + nla(IPVS_SVC_ATTR_ADDR, addr)
        + nla(IPVS_SVC_ATTR_PORT, BE16.pack(key.port))
    )


@functools.lru_cache(maxsize=SERVICES_KEPT)
def key_attrs(key: ServiceKey) -> bytes:
    """The service attribute naming `key` alone: what DEL_SERVICE and GET_DEST need."""
    return nla(IPVS_CMD_ATTR_SERVICE, _service_key(key))


def service_attrs(svc: Service) -> bytes:
    """The whole service, for NEW_SERVICE and SET_SERVICE."""
    # what ipvsadm sends: the whole flag word (mask ~0), the timeout in seconds, netmask /32
    # (or /128: see _NETMASK)
    flags = IP_VS_SVC_F_PERSISTENT if svc.persistence else 0
    family = packed(svc.key.vip)[0]
    return nla(
        IPVS_CMD_ATTR_SERVICE,
        _service_key(svc.key)
        + nla(IPVS_SVC_ATTR_SCHED_NAME, svc.scheduler.encode() + b"\0")
        + nla(IPVS_SVC_ATTR_FLAGS, struct.pack("=II", flags, 0xFFFFFFFF))
        + nla(IPVS_SVC_ATTR_TIMEOUT, U32.pack(svc.persistence))
        + nla(IPVS_SVC_ATTR_NETMASK, _NETMASK[family]),
    )


def dest_request(cmd: int, d: Dest, full: bool) -> bytes:
    """A request about a real server of its service, with all of it (NEW/SET_DEST) or its
    address only (DEL_DEST): the command and service it shares with the service's other real
    servers (kept), then its own attributes (kept for each address, port and weight)."""
    return _dest_head(cmd, d.service) + _dest(d.ip, d.service.port, d.weight if full else None)


def dest_requests(
    family: int,
    services: Iterable[ServiceKey],
    servers: Sequence[tuple[str, int]],
    cmd: int = CMD_NEW_DEST,
) -> Iterator[tuple[int, int, bytes]]:
    """The requests (message type `family`) that add (`cmd` NEW_DEST), change (SET_DEST) or
    delete (DEL_DEST) each of `servers` (address, weight) on each of `services` in turn, joined
    from the parts kept per service and per server."""
    full = cmd != CMD_DEL_DEST
    for port, keys in groupby(services, _port):
        tails = [_dest(ip, port, weight if full else None) for ip, weight in servers]
        heads = [_dest_head(cmd, key) for key in keys]
        yield from zip(repeat(family), repeat(0), map(b"".join, product(heads, tails)))


_port = operator.attrgetter("port")  # a real server's port is its service's (direct routing)


def prepare_real_servers(keys: Iterable[ServiceKey]) -> None:
    """Build the command and service part of these services' NEW_DEST requests now (while
    standby): an ACTIVATE then joins each real server's own attributes to it; and of their
    DEL_DEST requests, for the first member leaving."""
    for key in keys:
        _dest_head(CMD_NEW_DEST, key)
        _dest_head(CMD_DEL_DEST, key)


@functools.lru_cache(maxsize=3 * SERVICES_KEPT)  # NEW_DEST, SET_DEST and DEL_DEST
def _dest_head(cmd: int, key: ServiceKey) -> bytes:
    return request(cmd, key_attrs(key))


@functools.lru_cache(maxsize=SERVERS_KEPT)  # by address, port, weight: a /24 x 4 has 4 kinds
def _dest(ip: str, port: int, weight: int | None) -> bytes:
    # no IPVS_DEST_ATTR_ADDR_FAMILY: a real server of ours has its service's family, which the
    # kernel takes when the attribute is missing (and kernels before 3.18 do not know it)
    addr = packed(ip)[1]
    own = (4 + len(addr), IPVS_DEST_ATTR_ADDR, addr, 6, IPVS_DEST_ATTR_PORT, BE16.pack(port))
    if weight is None:
        head = _DESTS[len(addr), False]
        return head.pack(head.size, IPVS_CMD_ATTR_DEST, *own)
    head = _DESTS[len(addr), True]
    return head.pack(
        head.size,
        IPVS_CMD_ATTR_DEST,
        *own,
        *(8, IPVS_DEST_ATTR_FWD_METHOD, IP_VS_CONN_F_DROUTE),
        *(8, IPVS_DEST_ATTR_WEIGHT, weight),
        *(8, IPVS_DEST_ATTR_U_THRESH, 0),
        *(8, IPVS_DEST_ATTR_L_THRESH, 0),
    )


# A real server's attribute in one pack, as nla() nests it: its length and type, the address
# (4 or 16 bytes), the port (padded to 4), then for NEW/SET_DEST four u32 attributes.
_DESTS = {
    (n, full): struct.Struct(f"=HH HH{n}s HH2s2x" + " HHI" * 4 * full)
    for n in (4, 16)
    for full in (False, True)
}


def daemon_attrs(d: Daemon, full: bool) -> bytes:
    """A sync daemon: all of it (NEW_DAEMON), or its state alone, all DEL_DAEMON takes (the
    kernel runs one master and one backup daemon per network namespace)."""
    a = nla(IPVS_DAEMON_ATTR_STATE, U32.pack(IP_VS_STATE[d.state]))
    if full:
        a += nla(IPVS_DAEMON_ATTR_MCAST_IFN, d.iface.encode() + b"\0") + nla(
            IPVS_DAEMON_ATTR_SYNC_ID, U32.pack(d.syncid)
        )
    return nla(IPVS_CMD_ATTR_DAEMON, a)


# --- answers ---------------------------------------------------------------------------------


def service_from(msg: bytes) -> Service | None:
    """A Service (of TCP or UDP, or a firewall-mark one), or None for what is never ours:
    SCTP, an unknown scheduler. The planner decides which marks are ours."""
    a = attrs(attrs(msg, GENLHDR).get(IPVS_CMD_ATTR_SERVICE, b""), 0)
    family = U16.unpack(a[IPVS_SVC_ATTR_AF])[0]
    if family not in _FAMILIES:
        return None
    if IPVS_SVC_ATTR_FWMARK in a:
        mark = U32.unpack(a[IPVS_SVC_ATTR_FWMARK])[0]
        key = ServiceKey.for_mark(mark, family == socket.AF_INET6)
    else:
        proto = _PROTOCOL_NAMES.get(U16.unpack(a[IPVS_SVC_ATTR_PROTOCOL])[0])
        if proto is None:
            return None
        vip = unpacked(family, a[IPVS_SVC_ATTR_ADDR])
        key = ServiceKey(proto, vip, BE16.unpack(a[IPVS_SVC_ATTR_PORT])[0])
    flags = struct.unpack_from("=I", a[IPVS_SVC_ATTR_FLAGS])[0]
    timeout = U32.unpack(a[IPVS_SVC_ATTR_TIMEOUT])[0]
    try:
        return Service(
            key,
            string(a[IPVS_SVC_ATTR_SCHED_NAME]),
            timeout if flags & IP_VS_SVC_F_PERSISTENT else 0,
        )
    except ValueError:
        return None  # a scheduler the model does not know: not one of ours


def dest_from(key: ServiceKey, msg: bytes) -> Dest | None:
    """A real server of the service `key`; None for one of another family than its service
    (tunnel mode only: never ours)."""
    a = attrs(attrs(msg, GENLHDR).get(IPVS_CMD_ATTR_DEST, b""), 0)
    service_family = packed(key.vip)[0]
    family = a.get(IPVS_DEST_ATTR_ADDR_FAMILY)
    if family is not None and U16.unpack(family)[0] != service_family:
        return None
    fwd = U32.unpack(a[IPVS_DEST_ATTR_FWD_METHOD])[0] & IP_VS_CONN_F_FWD_MASK
    return Dest(
        key,
        unpacked(service_family, a[IPVS_DEST_ATTR_ADDR]),
        U32.unpack(a[IPVS_DEST_ATTR_WEIGHT])[0],
        _METHODS.get(fwd, f"fwd{fwd}"),
    )


def daemon_from(msg: bytes) -> Daemon | None:
    """A sync daemon; None for a state this helper does not know."""
    a = attrs(attrs(msg, GENLHDR).get(IPVS_CMD_ATTR_DAEMON, b""), 0)
    state = _STATE_NAMES.get(U32.unpack(a[IPVS_DAEMON_ATTR_STATE])[0])
    if state is None:
        return None
    return Daemon(
        state, string(a[IPVS_DAEMON_ATTR_MCAST_IFN]), U32.unpack(a[IPVS_DAEMON_ATTR_SYNC_ID])[0]
    )
