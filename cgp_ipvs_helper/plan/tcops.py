"""The tc operations: the steering filters of outgoing connections' replies (steering.py) and
the takeover's reset guard (guard.py), each rendered as its `tc` command."""

from __future__ import annotations

from attrs import frozen

from cgp_ipvs_helper.plan import steering
from cgp_ipvs_helper.plan.guard import GUARD_PREF, GUARD_PREF6, Guard
from cgp_ipvs_helper.plan.model import TcState
from cgp_ipvs_helper.plan.rendering import Renders
from cgp_ipvs_helper.plan.steering import RangeFilter, VipFilter

# --- steering of replies to outgoing connections (see steering.py) -------------------------------

# one protocol per preference of ours
_TC_PROTOCOL = {steering.TC_PREF: "ip", steering.TC_PREF6: "ipv6"}


def _tc_filter(verb: str, dev: str, pref: int, chain: int, handle: int) -> list[str]:
    head = ["tc", "filter", verb, "dev", dev, "ingress", "protocol", _TC_PROTOCOL[pref]]
    return [*head, "pref", str(pref), "chain", str(chain), "handle", hex(handle), "flower"]


@frozen
class AddClsact(Renders):
    """The clsact qdisc that gives `dev` an ingress hook for filters (never removed: another
    tool's filters may share it, and an empty one costs nothing)."""

    dev: str

    def argv(self) -> list[str]:
        return ["tc", "qdisc", "add", "dev", self.dev, "clsact"]


@frozen
class AddFilter(Renders):
    """One of our flower filters on the ingress of `dev` (software only: what it does is for
    this host's own path)."""

    dev: str
    filter: VipFilter | RangeFilter

    def argv(self) -> list[str]:
        f = self.filter
        head = [*_tc_filter("add", self.dev, f.pref, f.chain, f.handle), "skip_hw"]
        if isinstance(f, VipFilter):
            return [*head, "dst_ip", f.prefix, "action", "goto", "chain", str(steering.TC_CHAIN)]
        match = [*head, "ip_proto", f.proto, "dst_port", f"{f.first}-{f.last}", "action"]
        if f.local:
            return [*match, "skbedit", "mark", hex(f.mark)]
        if f.dropped:
            return [*match, "drop"]
        rewrite = ["skbmod", "set", "dmac", f.dmac, "set", "smac", f.smac]
        return [*match, *rewrite, "action", "mirred", "egress", "redirect", "dev", self.dev]


@frozen
class DelFilter(Renders):
    """Remove our filter `handle` of `chain` at `pref` (whatever it holds now) from the ingress
    of `dev`."""

    dev: str
    pref: int
    chain: int
    handle: int

    def argv(self) -> list[str]:
        return _tc_filter("del", self.dev, self.pref, self.chain, self.handle)


# --- the takeover's reset guard (see guard.py) ----------------------------------------------------

_GUARD_PROTOCOL = {GUARD_PREF: "ip", GUARD_PREF6: "ipv6"}


def _guard_filter(verb: str, dev: str, pref: int, handle: int) -> list[str]:
    head = ["tc", "filter", verb, "dev", dev, "egress", "protocol", _GUARD_PROTOCOL[pref]]
    return [*head, "pref", str(pref), "chain", "0", "handle", hex(handle), "flower"]


@frozen
class AddGuard(Renders):
    """Drop TCP resets from a block of VIPs on the egress of `dev` while taking over."""

    dev: str
    guard: Guard

    def argv(self) -> list[str]:
        g = self.guard
        head = [*_guard_filter("add", self.dev, g.pref, g.handle), "skip_hw", "ip_proto", "tcp"]
        return [*head, "src_ip", g.prefix, "tcp_flags", "0x4/0x4", "action", "drop"]


@frozen
class DelGuard(Renders):
    """Remove our guard `handle` at `pref` (whatever it holds now) from the egress of `dev`."""

    dev: str
    pref: int
    handle: int

    def argv(self) -> list[str]:
        return _guard_filter("del", self.dev, self.pref, self.handle)


def filter_changes(
    dev: str, wanted: frozenset[VipFilter | RangeFilter], tc: TcState
) -> list[AddClsact | AddFilter | DelFilter]:
    """Delete our filters that are not wanted (or were changed), add the missing ones."""
    have = {(pref, chain, handle): f for pref, chain, handle, f in tc.filters}
    ops: list[AddClsact | AddFilter | DelFilter] = [
        DelFilter(dev, *key)  # the VIP blocks first: nothing jumps to a range filter gone
        for key, f in sorted(have.items(), key=lambda kv: (kv[0][1] != steering.VIP_CHAIN, kv[0]))
        if f not in wanted
    ]
    missing = wanted - set(have.values())
    if missing and tc.ingress is None:
        ops.append(AddClsact(dev))
    ops += [AddFilter(dev, f) for f in sorted(missing, key=_filter_order)]
    return ops


def _filter_order(f: VipFilter | RangeFilter) -> tuple[bool, int, int]:
    # the range filters before the VIP blocks that jump to them
    return (f.chain == steering.VIP_CHAIN, f.pref, f.handle)
