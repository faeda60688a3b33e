"""The rtnetlink messages of the steering filters: what `tc` sends, packed and parsed here.

The filters, their matches and the goto and mark actions are the bytes iproute2's `tc` sends for
the commands AddClsact/AddFilter/DelFilter render (read with strace from tc 6.1; the IPv6
filters' bytes are checked against tc's in the unit tests); the rewrite, redirect and drop
actions follow the kernel's layouts (include/uapi/linux/tc_act/tc_skbmod.h, tc_mirred.h,
tc_gact.h). Either way a filter made here and one made by the printed command read back alike
in `tc -d filter show` (tests/kernel/test_tc_steering.py). Requests go over NETLINK_ROUTE like
address changes; the kernel answers each with an ack or an error, so they batch like addresses
do.
"""

from __future__ import annotations

import socket
import struct

import attrs
import netaddr
from pyroute2.netlink import NLM_F_CREATE, NLM_F_EXCL

from cgp_ipvs_helper.kernel.netlink.wire import attrs as _attrs
from cgp_ipvs_helper.kernel.netlink.wire import nla as _nla
from cgp_ipvs_helper.plan.guard import GUARD_PREF, GUARD_PREF6, Guard
from cgp_ipvs_helper.plan.steering import (
    TC_CHAIN,
    TC_PREF,
    TC_PREF6,
    VIP_CHAIN,
    RangeFilter,
    VipFilter,
)

RTM_NEWQDISC, RTM_GETQDISC = 36, 38
RTM_NEWTFILTER, RTM_DELTFILTER, RTM_GETTFILTER = 44, 45, 46
TC_H_CLSACT = 0xFFFFFFF1  # parent of the clsact (and ingress) qdisc
CLSACT_HANDLE = 0xFFFF0000
INGRESS = 0xFFFFFFF2  # TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS): the ingress filter parent
ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
TCA_KIND, TCA_OPTIONS, TCA_CHAIN = 1, 2, 11
TCA_FLOWER_ACT, TCA_FLOWER_KEY_ETH_TYPE, TCA_FLOWER_KEY_IP_PROTO = 3, 8, 9
TCA_FLOWER_KEY_IPV4_DST, TCA_FLOWER_KEY_IPV4_DST_MASK, TCA_FLOWER_FLAGS = 12, 13, 22
TCA_FLOWER_KEY_IPV6_DST, TCA_FLOWER_KEY_IPV6_DST_MASK = 16, 17
TCA_FLOWER_IN_HW_COUNT, TCA_FLOWER_KEY_PORT_DST_MIN, TCA_FLOWER_KEY_PORT_DST_MAX = 86, 89, 90
TCA_CLS_FLAGS_SKIP_HW = 1
TCA_ACT_KIND, TCA_ACT_OPTIONS = 1, 2
TCA_GACT_PARMS, TCA_SKBEDIT_PARMS, TCA_SKBEDIT_MARK = 2, 2, 5
TCA_SKBMOD_PARMS, TCA_SKBMOD_DMAC, TCA_SKBMOD_SMAC = 2, 3, 4
SKBMOD_F_DMAC, SKBMOD_F_SMAC = 1, 2
TCA_MIRRED_PARMS, TCA_EGRESS_REDIR = 2, 1
NLA_F_NESTED = 0x8000
TC_ACT_SHOT, TC_ACT_PIPE, TC_ACT_STOLEN = 2, 3, 4
TC_ACT_GOTO_CHAIN = 0x20000000

_TCMSG = struct.Struct("=BBHiIII")  # family, pad, pad, ifindex, handle, parent, info
_TC_GEN = struct.Struct("=IIiii")  # index, capab, action, refcnt, bindcnt (tc_gact, tc_skbedit)
_SKBMOD = struct.Struct("=IIiii4xQ")  # tc_gen, then the u64 flags (8-byte aligned)
_MIRRED = struct.Struct("=IIiiiiI")  # tc_gen, then eaction and the device's index
_ETH_TYPES = {TC_PREF: ETH_P_IP, TC_PREF6: ETH_P_IPV6}  # the protocol of each preference of ours
_FAMILIES = {ETH_P_IP: socket.AF_INET, ETH_P_IPV6: socket.AF_INET6}
_PROTOCOLS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
_PROTOCOL_NAMES = {v: k for k, v in _PROTOCOLS.items()}
_COMMON_KEYS = {TCA_FLOWER_KEY_ETH_TYPE, TCA_FLOWER_FLAGS, TCA_FLOWER_IN_HW_COUNT, TCA_FLOWER_ACT}
_DST_KEYS = {  # per protocol: the destination address and its mask
    ETH_P_IP: (TCA_FLOWER_KEY_IPV4_DST, TCA_FLOWER_KEY_IPV4_DST_MASK),
    ETH_P_IPV6: (TCA_FLOWER_KEY_IPV6_DST, TCA_FLOWER_KEY_IPV6_DST_MASK),
}
_RANGE_KEYS = _COMMON_KEYS | {
    TCA_FLOWER_KEY_IP_PROTO,
    TCA_FLOWER_KEY_PORT_DST_MIN,
    TCA_FLOWER_KEY_PORT_DST_MAX,
}
_U32 = struct.Struct("=I")
_BE16 = struct.Struct("!H")

Request = tuple[int, int, bytes]  # (message type, flags, body) as kernel.py batches them


def add_clsact(ifindex: int) -> Request:
    body = _TCMSG.pack(0, 0, 0, ifindex, CLSACT_HANDLE, TC_H_CLSACT, 0)
    return RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL, body + _nla(TCA_KIND, b"clsact\0")


def _head(ifindex: int, pref: int, chain: int, handle: int) -> bytes:
    info = pref << 16 | socket.htons(_ETH_TYPES[pref])  # preference, protocol in network order
    return (
        _TCMSG.pack(0, 0, 0, ifindex, handle, INGRESS, info)
        + _nla(TCA_CHAIN, _U32.pack(chain))
        + _nla(TCA_KIND, b"flower\0")
    )


def _action(order: int, kind: bytes, options: bytes) -> bytes:
    one = _nla(TCA_ACT_KIND, kind + b"\0") + _nla(TCA_ACT_OPTIONS | NLA_F_NESTED, options)
    return _nla(order, one)


_DROP = _nla(TCA_GACT_PARMS, _TC_GEN.pack(0, 0, TC_ACT_SHOT, 0, 0))  # a gact action's "drop"


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _range_actions(ifindex: int, f: RangeFilter) -> bytes:
    """The actions of a range filter: mark it (this host's range), drop it (no MAC known), or
    rewrite its MACs and redirect it out of the device it came in on."""
    if f.local:
        parms = _TC_GEN.pack(0, 0, TC_ACT_PIPE, 0, 0)
        mark = _nla(TCA_SKBEDIT_MARK, _U32.pack(f.mark))
        return _action(1, b"skbedit", _nla(TCA_SKBEDIT_PARMS, parms) + mark)
    if f.dropped:
        return _action(1, b"gact", _DROP)
    flags = SKBMOD_F_DMAC | SKBMOD_F_SMAC
    rewrite = (
        _nla(TCA_SKBMOD_PARMS, _SKBMOD.pack(0, 0, TC_ACT_PIPE, 0, 0, flags))
        + _nla(TCA_SKBMOD_DMAC, _mac(f.dmac))
        + _nla(TCA_SKBMOD_SMAC, _mac(f.smac))
    )
    redirect = _MIRRED.pack(0, 0, TC_ACT_STOLEN, 0, 0, TCA_EGRESS_REDIR, ifindex)
    return _action(1, b"skbmod", rewrite) + _action(2, b"mirred", _nla(TCA_MIRRED_PARMS, redirect))


def _prefix_mask(bits: int, length: int) -> bytes:
    return ((1 << bits) - (1 << (bits - length))).to_bytes(bits // 8, "big")


def add_filter(ifindex: int, f: VipFilter | RangeFilter) -> Request:
    eth_type = _ETH_TYPES[f.pref]
    if isinstance(f, VipFilter):
        ip, _, length = f.prefix.partition("/")
        family = _FAMILIES[eth_type]
        dst, dst_mask = _DST_KEYS[eth_type]
        bits = 128 if f.ipv6 else 32
        keys = _nla(dst, socket.inet_pton(family, ip)) + _nla(
            dst_mask, _prefix_mask(bits, int(length))
        )
        parms = _TC_GEN.pack(0, 0, TC_ACT_GOTO_CHAIN | TC_CHAIN, 0, 0)
        actions = _action(1, b"gact", _nla(TCA_GACT_PARMS, parms))
    else:
        keys = (
            _nla(TCA_FLOWER_KEY_IP_PROTO, bytes([_PROTOCOLS[f.proto]]))
            + _nla(TCA_FLOWER_KEY_PORT_DST_MIN, _BE16.pack(f.first))
            + _nla(TCA_FLOWER_KEY_PORT_DST_MAX, _BE16.pack(f.last))
        )
        actions = _range_actions(ifindex, f)
    options = (
        keys
        + _nla(TCA_FLOWER_ACT, actions)
        + _nla(TCA_FLOWER_FLAGS, _U32.pack(TCA_CLS_FLAGS_SKIP_HW))
        + _nla(TCA_FLOWER_KEY_ETH_TYPE, _BE16.pack(eth_type))
    )
    body = _head(ifindex, f.pref, f.chain, f.handle) + _nla(TCA_OPTIONS, options)
    return RTM_NEWTFILTER, NLM_F_CREATE | NLM_F_EXCL, body


def del_filter(ifindex: int, pref: int, chain: int, handle: int) -> Request:
    return RTM_DELTFILTER, 0, _head(ifindex, pref, chain, handle)


def dump_filters(ifindex: int) -> tuple[int, bytes]:
    """The dump request for every filter (all chains) on the ingress of `ifindex`."""
    return RTM_GETTFILTER, _TCMSG.pack(0, 0, 0, ifindex, 0, INGRESS, 0)


def dump_qdiscs() -> tuple[int, bytes]:
    return RTM_GETQDISC, _TCMSG.pack(0, 0, 0, 0, 0, 0, 0)


def ingress_kind(msg: bytes, ifindex: int) -> str | None:
    """'clsact' or 'ingress' if `msg` is the ingress-capable qdisc of `ifindex`, else None."""
    _f, _p1, _p2, index, handle, _parent, _info = _TCMSG.unpack_from(msg, 16)
    if index != ifindex or handle != CLSACT_HANDLE:
        return None
    kind = _attrs(msg, 16 + _TCMSG.size).get(TCA_KIND, b"").split(b"\0", 1)[0].decode()
    return kind if kind in ("clsact", "ingress") else None


Observed = tuple[int, int, int, "VipFilter | RangeFilter | None"]


# --- the takeover's reset guard (guard.py): egress filters ---------------------------------------

EGRESS = 0xFFFFFFF3  # TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_EGRESS): the egress filter parent
TCA_FLOWER_KEY_IPV4_SRC, TCA_FLOWER_KEY_IPV4_SRC_MASK = 10, 11
TCA_FLOWER_KEY_IPV6_SRC, TCA_FLOWER_KEY_IPV6_SRC_MASK = 14, 15
TCA_FLOWER_KEY_TCP_FLAGS, TCA_FLOWER_KEY_TCP_FLAGS_MASK = 71, 72
TC_ACT_SHOT = 2
TCP_RST = 0x04
_GUARD_ETH_TYPES = {GUARD_PREF: ETH_P_IP, GUARD_PREF6: ETH_P_IPV6}
_SRC_KEYS = {
    ETH_P_IP: (TCA_FLOWER_KEY_IPV4_SRC, TCA_FLOWER_KEY_IPV4_SRC_MASK),
    ETH_P_IPV6: (TCA_FLOWER_KEY_IPV6_SRC, TCA_FLOWER_KEY_IPV6_SRC_MASK),
}
_GUARD_KEYS = _COMMON_KEYS | {
    TCA_FLOWER_KEY_IP_PROTO,
    TCA_FLOWER_KEY_TCP_FLAGS,
    TCA_FLOWER_KEY_TCP_FLAGS_MASK,
}


def _guard_head(ifindex: int, pref: int, handle: int) -> bytes:
    info = pref << 16 | socket.htons(_GUARD_ETH_TYPES[pref])
    return (
        _TCMSG.pack(0, 0, 0, ifindex, handle, EGRESS, info)
        + _nla(TCA_CHAIN, _U32.pack(0))
        + _nla(TCA_KIND, b"flower\0")
    )


def add_guard(ifindex: int, g: Guard) -> Request:
    eth_type = _GUARD_ETH_TYPES[g.pref]
    ip, _, length = g.prefix.partition("/")
    src, src_mask = _SRC_KEYS[eth_type]
    options = (
        _nla(TCA_FLOWER_KEY_IP_PROTO, bytes([socket.IPPROTO_TCP]))
        + _nla(src, socket.inet_pton(_FAMILIES[eth_type], ip))
        + _nla(src_mask, _prefix_mask(128 if g.ipv6 else 32, int(length)))
        + _nla(TCA_FLOWER_KEY_TCP_FLAGS, _BE16.pack(TCP_RST))
        + _nla(TCA_FLOWER_KEY_TCP_FLAGS_MASK, _BE16.pack(TCP_RST))
        + _nla(TCA_FLOWER_ACT, _action(1, b"gact", _DROP))
        + _nla(TCA_FLOWER_FLAGS, _U32.pack(TCA_CLS_FLAGS_SKIP_HW))
        + _nla(TCA_FLOWER_KEY_ETH_TYPE, _BE16.pack(eth_type))
    )
    body = _guard_head(ifindex, g.pref, g.handle) + _nla(TCA_OPTIONS, options)
    return RTM_NEWTFILTER, NLM_F_CREATE | NLM_F_EXCL, body


def del_guard(ifindex: int, pref: int, handle: int) -> Request:
    return RTM_DELTFILTER, 0, _guard_head(ifindex, pref, handle)


def dump_egress(ifindex: int) -> tuple[int, bytes]:
    """The dump request for every filter (all chains) on the egress of `ifindex`."""
    return RTM_GETTFILTER, _TCMSG.pack(0, 0, 0, ifindex, 0, EGRESS, 0)


def parse_guard(msg: bytes) -> tuple[int, int, Guard | None] | None:
    """(preference, handle, the Guard it holds exactly, or None if changed) for a guard of
    ours (GUARD_PREF or GUARD_PREF6, chain 0); None for anything else."""
    _f, _p1, _p2, _index, handle, _parent, info = _TCMSG.unpack_from(msg, 16)
    attrs = _attrs(msg, 16 + _TCMSG.size)
    chain = _U32.unpack(attrs[TCA_CHAIN])[0] if TCA_CHAIN in attrs else 0
    pref = info >> 16
    if pref not in _GUARD_ETH_TYPES or chain != 0 or handle == 0:
        return None
    try:
        found = _guard(attrs, pref, handle)
    except (KeyError, ValueError, IndexError, struct.error):
        found = None
    return pref, handle, found


def _guard(attrs: dict[int, bytes], pref: int, handle: int) -> Guard | None:
    if attrs.get(TCA_KIND, b"").split(b"\0", 1)[0] != b"flower":
        return None
    keys = _attrs(attrs[TCA_OPTIONS], 0)
    eth_type = _GUARD_ETH_TYPES[pref]
    src, src_mask = _SRC_KEYS[eth_type]
    flags = _U32.unpack(keys.get(TCA_FLOWER_FLAGS, b"\0\0\0\0"))[0]
    if (
        set(keys) - _GUARD_KEYS - {src, src_mask}
        or flags & TCA_CLS_FLAGS_SKIP_HW == 0
        or keys[TCA_FLOWER_KEY_ETH_TYPE] != _BE16.pack(eth_type)
        or keys[TCA_FLOWER_KEY_IP_PROTO] != bytes([socket.IPPROTO_TCP])
        or keys[TCA_FLOWER_KEY_TCP_FLAGS] != _BE16.pack(TCP_RST)
        or keys[TCA_FLOWER_KEY_TCP_FLAGS_MASK] != _BE16.pack(TCP_RST)
    ):
        return None
    actions = _attrs(keys[TCA_FLOWER_ACT], 0)
    if list(actions) != [1]:
        return None
    act = _attrs(actions[1], 0)
    control = _TC_GEN.unpack_from(_attrs(act[TCA_ACT_OPTIONS], 0)[TCA_GACT_PARMS])[2]
    if act[TCA_ACT_KIND].split(b"\0", 1)[0] != b"gact" or control != TC_ACT_SHOT:
        return None
    mask = keys[src_mask]
    length = bin(int.from_bytes(mask, "big")).count("1")
    if mask != _prefix_mask(len(mask) * 8, length):
        return None
    ip = socket.inet_ntop(_FAMILIES[eth_type], keys[src])
    g = Guard(str(netaddr.IPNetwork(f"{ip}/{length}")), handle)
    return g if g.pref == pref else None


def parse_filter(msg: bytes) -> Observed | None:
    """(preference, chain, handle, what it is) for a filter of ours; None for anything else.

    Ours: preference TC_PREF or TC_PREF6 in chain 0 or TC_CHAIN. What it is: the VipFilter or
    RangeFilter it holds exactly (our handle, protocol, flags, match and action), or None when
    it was changed or is not one we make (the planner deletes it).
    """
    _f, _p1, _p2, index, handle, _parent, info = _TCMSG.unpack_from(msg, 16)
    top = _attrs(msg, 16 + _TCMSG.size)
    chain = _U32.unpack(top[TCA_CHAIN])[0] if TCA_CHAIN in top else 0
    pref = info >> 16
    if pref not in _ETH_TYPES or chain not in (VIP_CHAIN, TC_CHAIN) or handle == 0:
        return None
    try:
        found = _flower(top, pref, chain, handle, index)
    except (KeyError, ValueError, IndexError, struct.error):
        found = None
    if found is not None and (found.handle, found.pref) != (handle, pref):
        found = None
    return pref, chain, handle, found


def _flower(
    found: dict[int, bytes], pref: int, chain: int, handle: int, ifindex: int
) -> VipFilter | RangeFilter | None:
    if found.get(TCA_KIND, b"").split(b"\0", 1)[0] != b"flower":
        return None
    keys = _attrs(found[TCA_OPTIONS], 0)
    flags = _U32.unpack(keys.get(TCA_FLOWER_FLAGS, b"\0\0\0\0"))[0]
    eth_type = _ETH_TYPES[pref]
    if flags & TCA_CLS_FLAGS_SKIP_HW == 0 or keys[TCA_FLOWER_KEY_ETH_TYPE] != _BE16.pack(eth_type):
        return None
    actions = _attrs(keys[TCA_FLOWER_ACT], 0)
    kinds = []
    for order in sorted(actions):
        act = _attrs(actions[order], 0)
        kinds.append((act[TCA_ACT_KIND].split(b"\0", 1)[0], _attrs(act[TCA_ACT_OPTIONS], 0)))
    if sorted(actions) != list(range(1, len(actions) + 1)):
        return None
    if chain == VIP_CHAIN:
        dst, dst_mask = _DST_KEYS[eth_type]
        if set(keys) - _COMMON_KEYS - {dst, dst_mask} or len(kinds) != 1:
            return None
        kind, options = kinds[0]
        control = _TC_GEN.unpack_from(options[TCA_GACT_PARMS])[2]
        if kind != b"gact" or control != TC_ACT_GOTO_CHAIN | TC_CHAIN:
            return None
        mask = keys[dst_mask]
        length = bin(int.from_bytes(mask, "big")).count("1")
        if mask != _prefix_mask(len(mask) * 8, length):
            return None
        ip = socket.inet_ntop(_FAMILIES[eth_type], keys[dst])
        prefix = str(netaddr.IPNetwork(f"{ip}/{length}"))  # spelled as vip_blocks() spells it
        # an IPv4 block's handle is its address (checked by the caller); an IPv6 one's is given
        return VipFilter(prefix, handle) if eth_type == ETH_P_IPV6 else VipFilter(prefix)
    if set(keys) - _RANGE_KEYS:
        return None
    f = RangeFilter(
        _PROTOCOL_NAMES[keys[TCA_FLOWER_KEY_IP_PROTO][0]],
        _BE16.unpack(keys[TCA_FLOWER_KEY_PORT_DST_MIN])[0],
        _BE16.unpack(keys[TCA_FLOWER_KEY_PORT_DST_MAX])[0],
        eth_type == ETH_P_IPV6,
    )
    return _range_action(f, kinds, ifindex)


def _range_action(
    f: RangeFilter, kinds: list[tuple[bytes, dict[int, bytes]]], ifindex: int
) -> RangeFilter | None:
    """`f` with the action its actions are, if they are one we make (with these ports)."""
    names = [kind for kind, _ in kinds]
    if names == [b"skbedit"]:
        options = kinds[0][1]
        control = _TC_GEN.unpack_from(options[TCA_SKBEDIT_PARMS])[2]
        if control != TC_ACT_PIPE or _U32.unpack(options[TCA_SKBEDIT_MARK])[0] != f.mark:
            return None
        return attrs.evolve(f, local=True)
    if names == [b"gact"]:
        control = _TC_GEN.unpack_from(kinds[0][1][TCA_GACT_PARMS])[2]
        return f if control == TC_ACT_SHOT else None
    if names != [b"skbmod", b"mirred"]:
        return None
    rewrite, redirect = kinds[0][1], kinds[1][1]
    *gen, flags = _SKBMOD.unpack_from(rewrite[TCA_SKBMOD_PARMS])
    *mgen, eaction, index = _MIRRED.unpack_from(redirect[TCA_MIRRED_PARMS])
    if (
        gen[2] != TC_ACT_PIPE
        or flags != SKBMOD_F_DMAC | SKBMOD_F_SMAC
        or (mgen[2], eaction, index) != (TC_ACT_STOLEN, TCA_EGRESS_REDIR, ifindex)
    ):
        return None
    return attrs.evolve(
        f, dmac=_text(rewrite[TCA_SKBMOD_DMAC]), smac=_text(rewrite[TCA_SKBMOD_SMAC])
    )


def _text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac[:6])
