"""A CGP group per address family, as test_scenarios.py and test_outgoing.py run it: the VIPs
and client addresses of each family, and the member map the helpers are started with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.driver import member_map as lab_member_map
from lab.group import Group

RANGES = {"fe1": (50000, 54999), "fe2": (55000, 59999), "fe3": (60000, 64999)}


@dataclass(frozen=True)
class Family:
    """The VIPs a test's traffic goes to and from, and whether the LAN and the map carry IPv6."""

    name: str
    entries: tuple[str, ...]  # the VIP file; the first VIP is the one moves use
    vips: tuple[str, ...]  # the VIPs traffic goes to and from
    sources: tuple[str, ...]  # the client's addresses (of the first VIP's family)
    block: str  # how `tc filter show` spells the VIP block of `vips`
    ipv6: bool  # an IPv6 LAN, and each member's IPv6 address in the map

    def __str__(self) -> str:
        return self.name


IPV4 = Family(
    "ipv4",
    ("198.51.100.10", "198.51.100.11"),
    ("198.51.100.10", "198.51.100.11"),
    tuple(f"192.0.2.{n}" for n in range(52, 100)),
    "198.51.100.10/31",
    False,
)
IPV6 = Family(  # dual stack, as an operator adds IPv6: the IPv4 VIP stays
    "ipv6",
    ("2001:db8:10::/124", "198.51.100.10"),
    ("2001:db8:10::", "2001:db8:10::1"),
    tuple(f"2001:db8::1:{n:x}" for n in range(1, 49)),
    "2001:db8:10::/124",
    True,
)
BOTH = pytest.mark.parametrize("family", [IPV4, IPV6], indirect=True, ids=str)
ONLY_IPV6 = pytest.mark.parametrize("family", [IPV6], indirect=True, ids=str)


def member_map(group: Group, without_ipv6: tuple[str, ...] = ()) -> str:
    """Every frontend's range (RANGES); on an IPv6 LAN its IPv6 address too (unless
    `without_ipv6`)."""
    return lab_member_map([(fe.ip, None if fe.name in without_ipv6 else fe.ip6) for fe in group.fe])


def helper_args(path: Path, text: str) -> tuple[str, ...]:
    """A helper's options with the member map `text`, written to `path`."""
    path.write_text(text)
    return ("-t", "3", "--drain", "2", "--member-map", str(path))
