"""The VIP list file (/etc/sysconfig/vipaddrs): parsed whole, or rejected whole.

One entry per line: an IPv4 address, or a subnet a.b.c.d/m (m >= 24) standing for every address
in it. `#` starts a comment. A bad line is reported with file, line number and text, and nothing
is returned, so a half-valid file can never be half applied.
"""

from __future__ import annotations

import re

import netaddr

from .errors import VipFileError

MIN_PREFIXLEN = 24
_DOTTED = re.compile(r"\d{1,3}(\.\d{1,3}){3}(/\d{1,2})?", re.ASCII)


def is_unicast(ip: int) -> bool:
    """Neither 0.0.0.0/8, loopback, multicast, class E nor broadcast: a host can hold it."""
    first = ip >> 24
    return first not in (0, 127) and first < 224


def _entry(path: str, lineno: int, text: str) -> netaddr.IPNetwork:
    if not _DOTTED.fullmatch(text):
        raise VipFileError(path, lineno, text, "not an IPv4 address or a.b.c.d/m subnet")
    try:
        net = netaddr.IPNetwork(text)
    except (netaddr.AddrFormatError, ValueError) as exc:
        raise VipFileError(path, lineno, text, f"not a valid IPv4 address: {exc}") from None
    if net.prefixlen < MIN_PREFIXLEN:
        raise VipFileError(path, lineno, text, f"mask /{net.prefixlen} is below /{MIN_PREFIXLEN}")
    if net.ip != net.network:
        raise VipFileError(path, lineno, text, f"host bits set (the subnet is {net.cidr})")
    if not is_unicast(int(net.network)) or not is_unicast(int(net.broadcast or net.network)):
        raise VipFileError(path, lineno, text, "not a unicast address")
    return net


def parse_vips(text: str, path: str) -> tuple[str, ...]:
    """Every VIP the file names, in file order; raise VipFileError on the first bad line."""
    seen: dict[int, tuple[int, str]] = {}
    vips: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        net = _entry(path, lineno, line)
        for addr in net:
            first = seen.get(int(addr))
            if first is not None:
                raise VipFileError(
                    path, lineno, line, f"{addr} overlaps line {first[0]} ({first[1]})"
                )
            seen[int(addr)] = (lineno, line)
            vips.append(str(addr))
    return tuple(vips)


def load_vips(path: str) -> tuple[str, ...]:
    """Read and parse `path`; an unreadable file is a VipFileError too."""
    try:
        with open(path, encoding="utf-8", errors="strict") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise VipFileError(path, None, "", f"cannot read: {exc}") from None
    return parse_vips(text, path)
