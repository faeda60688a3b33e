"""The VIP list file: what loads, and every error with file, line and text."""

from __future__ import annotations

from pathlib import Path

import pytest

from cgp_ipvs_helper.errors import VipFileError
from cgp_ipvs_helper.vipfile import load_vips, parse_vips

ROOT = Path(__file__).resolve().parents[2]


def test_sample_file_holds_eight_vips() -> None:
    vips = load_vips(str(ROOT / "sysconfig" / "vipaddrs"))
    assert vips == (
        "198.51.100.10",
        "198.51.100.11",
        "198.51.100.12",
        "198.51.100.13",
        "198.51.100.20",
        "198.51.100.21",
        "198.51.100.22",
        "198.51.100.23",
    )


def test_singles_subnets_comments_blanks() -> None:
    text = "# head\n\n  192.0.2.7   # mail\n\t203.0.113.0/24\n198.51.100.4/31#x\n"
    vips = parse_vips(text, "f")
    assert vips[0] == "192.0.2.7" and len(vips) == 1 + 256 + 2
    assert vips[-2:] == ("198.51.100.4", "198.51.100.5")
    assert parse_vips("", "f") == () and parse_vips("# only\n", "f") == ()


ERRORS = [
    ("192.0.2.0/23", 1, "mask /23 is below /24"),
    ("\n10.0.0.0/8", 2, "mask /8 is below /24"),
    ("192.0.2.1/24", 1, "host bits set (the subnet is 192.0.2.0/24)"),
    ("192.0.2.0/33", 1, "not a valid IPv4 address"),
    ("2001:db8::1", 1, "not an IPv4 address or a.b.c.d/m subnet"),
    ("mail.example.com", 1, "not an IPv4 address or a.b.c.d/m subnet"),
    ("192.0.2", 1, "not an IPv4 address or a.b.c.d/m subnet"),
    ("192.0.2.1 192.0.2.2", 1, "not an IPv4 address or a.b.c.d/m subnet"),
    ("256.0.2.1", 1, "not a valid IPv4 address"),
    ("127.0.0.1", 1, "not a unicast address"),
    ("224.0.0.0/24", 1, "not a unicast address"),
    ("0.0.0.0", 1, "not a unicast address"),
    ("192.0.2.5\n192.0.2.5", 2, "192.0.2.5 overlaps line 1 (192.0.2.5)"),
    ("192.0.2.5\n# c\n192.0.2.0/29", 3, "192.0.2.5 overlaps line 1 (192.0.2.5)"),
    ("192.0.2.0/25\n192.0.2.0/24", 2, "192.0.2.0 overlaps line 1 (192.0.2.0/25)"),
]


@pytest.mark.parametrize(("text", "lineno", "reason"), ERRORS)
def test_errors_name_file_line_and_text(text, lineno, reason) -> None:
    with pytest.raises(VipFileError) as err:
        parse_vips(text, "/etc/sysconfig/vipaddrs")
    e = err.value
    assert (e.path, e.lineno) == ("/etc/sysconfig/vipaddrs", lineno)
    assert e.text == text.splitlines()[lineno - 1].split("#")[0].strip()
    assert e.reason.startswith(reason)
    assert str(e).startswith(f"/etc/sysconfig/vipaddrs:{lineno}: {e.text!r}: ")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(VipFileError, match=r"missing: cannot read"):
        load_vips(str(tmp_path / "missing"))
    binary = tmp_path / "bin"
    binary.write_bytes(b"\xff\xfe192.0.2.1\n")
    with pytest.raises(VipFileError, match="cannot read"):
        load_vips(str(binary))
