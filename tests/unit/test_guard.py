"""The takeover's reset guard: which filters, how they render, and their netlink bytes."""

from __future__ import annotations

import socket

from cgp_ipvs_helper.kernel.netlink import tc
from cgp_ipvs_helper.plan.guard import GUARD_PREF, GUARD_PREF6, Guard, guards
from cgp_ipvs_helper.plan.tcops import AddGuard, DelGuard


def test_one_guard_per_vip_block_numbered_as_the_steering_blocks() -> None:
    found = guards(
        ["198.51.100.10", "198.51.100.11", "198.51.100.20", "2001:db8:10::", "2001:db8:10::1"]
    )
    v4 = sorted((g for g in found if not g.ipv6), key=lambda g: g.handle)
    assert [(g.prefix, g.pref) for g in v4] == [
        ("198.51.100.10/31", GUARD_PREF),
        ("198.51.100.20/32", GUARD_PREF),
    ]
    assert v4[0].handle == int.from_bytes(socket.inet_aton("198.51.100.10"), "big")
    assert {(g.prefix, g.handle, g.pref) for g in found if g.ipv6} == {
        ("2001:db8:10::/127", 1, GUARD_PREF6)
    }


def test_the_commands_drop_tcp_resets_from_the_block_on_egress() -> None:
    g = Guard("2001:db8:10::/127", 1)
    assert str(AddGuard("eth0", g)) == (
        "tc filter add dev eth0 egress protocol ipv6 pref 65003 chain 0 handle 0x1 flower "
        "skip_hw ip_proto tcp src_ip 2001:db8:10::/127 tcp_flags 0x4/0x4 action drop"
    )
    assert str(DelGuard("eth0", GUARD_PREF, 0xC633640A)) == (
        "tc filter del dev eth0 egress protocol ip pref 65002 chain 0 handle 0xc633640a flower"
    )


def test_a_guard_reads_back_as_sent_and_a_changed_one_as_none() -> None:
    for g in (Guard("198.51.100.10/31", 0xC633640A), Guard("2001:db8:10::/127", 1)):
        kind, _flags, body = tc.add_guard(3, g)
        assert kind == tc.RTM_NEWTFILTER
        assert tc.parse_guard(b"\0" * 16 + body) == (g.pref, g.handle, g)
    changed = bytearray(tc.add_guard(3, Guard("198.51.100.10/31", 0xC633640A))[2])
    at = bytes(changed).index(tc._BE16.pack(tc.TCP_RST))  # the flags: resets no more
    changed[at : at + 2] = tc._BE16.pack(0x02)
    assert tc.parse_guard(b"\0" * 16 + bytes(changed)) == (GUARD_PREF, 0xC633640A, None)
    # the steering's ingress filters are not guards
    assert tc.parse_guard(b"\0" * 16 + tc.del_filter(3, 65000, 0, 1)[2]) is None
