"""The VIP list file: what loads, and every error with file, line and text."""

from __future__ import annotations

from pathlib import Path

import pytest

from cgp_ipvs_helper.config.vipfile import load_vips, parse_vips, vip_error
from cgp_ipvs_helper.errors import VipFileError

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
    ("2001:db8::/119", 1, "mask /119 is below /120"),
    ("2001:db8::/64", 1, "mask /64 is below /120"),
    ("2001:db8::1/120", 1, "host bits set (the subnet is 2001:db8::/120)"),
    ("2001:db8::/129", 1, "not a valid IPv6 address"),
    ("2001:db8::1::2", 1, "not a valid IPv6 address"),
    ("2001:db8::g", 1, "not an IPv6 address or subnet"),
    ("fe80::1%eth0", 1, "not an IPv6 address or subnet"),
    ("2001:db8::1 2001:db8::2", 1, "not an IPv6 address or subnet"),
    ("::", 1, "not a unicast address: the unspecified address"),
    ("::/120", 1, "not a unicast address: the unspecified address"),
    ("::1", 1, "not a unicast address: the loopback address"),
    ("::ffff:198.51.100.7", 1, "not a unicast address: an IPv4-mapped address"),
    ("::ffff:c633:6400/120", 1, "not a unicast address: an IPv4-mapped address"),
    ("::198.51.100.7", 1, "not a unicast address: an IPv4-compatible address"),
    ("fe80::1", 1, "not a unicast address: a link-local address"),
    ("febf:ffff::/120", 1, "not a unicast address: a link-local address"),
    ("ff02::1", 1, "not a unicast address: a multicast address"),
    ("ff05::/120", 1, "not a unicast address: a multicast address"),
    ("2001:db8::5\n2001:db8::/125", 2, "2001:db8::5 overlaps line 1 (2001:db8::5)"),
    ("2001:DB8::A\n2001:db8:0::a", 2, "2001:db8::a overlaps line 1 (2001:DB8::A)"),
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


def test_ipv6_singles_and_subnets_beside_ipv4_in_the_kernel_spelling() -> None:
    text = "198.51.100.10\n2001:DB8:10::/124  # AAAA\n2001:db8:0:0:1:0:0:7\n2001:db8:20::/120\n"
    vips = parse_vips(text, "f")
    assert vips[:3] == ("198.51.100.10", "2001:db8:10::", "2001:db8:10::1")
    assert vips[16:19] == ("2001:db8:10::f", "2001:db8::1:0:0:7", "2001:db8:20::")
    assert len(vips) == 1 + 16 + 1 + 256
    assert vips[-1] == "2001:db8:20::ff"


def test_ipv4_and_ipv6_with_the_same_number_do_not_overlap() -> None:
    # 198.51.100.7 is 0xc6336407; ::c633:6407 is refused for itself, not as an overlap
    assert parse_vips("198.51.100.7\n2001:db8::c633:6407\n", "f") == (
        "198.51.100.7",
        "2001:db8::c633:6407",
    )


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(VipFileError, match=r"missing: cannot read"):
        load_vips(str(tmp_path / "missing"))
    (tmp_path / "dir").mkdir()
    with pytest.raises(VipFileError, match=r"dir: cannot read: Is a directory$"):
        load_vips(str(tmp_path / "dir"))


# Characters str.splitlines() takes for line breaks: inside a comment they are comment text.
SPLITLINES_BREAKS = ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\r"]


@pytest.mark.parametrize("brk", SPLITLINES_BREAKS)
def test_only_lf_ends_a_line_a_break_in_a_comment_is_comment(brk: str) -> None:
    text = f"198.51.100.8  # old:{brk}198.51.100.99\n# {brk}\n198.51.100.0/16\n"
    with pytest.raises(VipFileError) as err:
        parse_vips(text, "f")
    assert (err.value.lineno, err.value.text) == (3, "198.51.100.0/16")
    assert parse_vips(text.rsplit("\n", 2)[0] + "\n", "f") == ("198.51.100.8",)


def test_crlf_lines_and_a_last_line_without_lf() -> None:
    assert parse_vips(b"198.51.100.8\r\n# x\r\n\r\n198.51.100.9 # y\r\n198.51.100.10", "f") == (
        "198.51.100.8",
        "198.51.100.9",
        "198.51.100.10",
    )


def test_comments_may_hold_any_bytes(tmp_path: Path) -> None:
    path = tmp_path / "vipaddrs"
    path.write_bytes(b"# caf\xe9 \xff\xfe\x00\x1b[2J\n198.51.100.8 # \x80\xc3\n\xe2\x80\xa8#\n")
    with pytest.raises(VipFileError) as err:
        load_vips(str(path))
    assert err.value.lineno == 3  # U+2028 outside a comment is a bad entry, on its own line
    path.write_bytes(b"# caf\xe9 \xff\xfe\x00\x1b[2J\n198.51.100.8 # \x80\xc3\n")
    assert load_vips(str(path)) == ("198.51.100.8",)


BAD_BYTES = [
    (b"198.51.100.8\xff", "'198.51.100.8\\xff'"),
    (b"\xc3\xa9198.51.100.8", "'\u00e9198.51.100.8'"),  # printable: shown as it is
    (b"198.51.100.8\x0c", "'198.51.100.8\\x0c'"),
    (b"\x0b198.51.100.8", "'\\x0b198.51.100.8'"),
    (b"198.51.100.8\r198.51.100.9", "'198.51.100.8\\x0d198.51.100.9'"),
    (b"198.51.100.8\xc2\x85", "'198.51.100.8\\x85'"),
    (b"198.51.100.8\xe2\x80\xa8x", "'198.51.100.8\\u2028x'"),
    (b"1\x1b[2J", "'1\\x1b[2J'"),
    (b"it's\\", "'it\\'s\\\\'"),
]


@pytest.mark.parametrize(("entry", "shown"), BAD_BYTES)
def test_an_entry_with_a_bad_byte_names_its_line_with_the_text_escaped(
    tmp_path: Path, entry: bytes, shown: str
) -> None:
    path = tmp_path / "vipaddrs"
    path.write_bytes(b"# \xff comment\n198.51.100.10\n  " + entry + b"  # why\n198.51.100.11\n")
    with pytest.raises(VipFileError) as err:
        load_vips(str(path))
    message = str(err.value)
    assert message == f"{path}:3: {shown}: not an IPv4 address or a.b.c.d/m subnet"
    assert message.isprintable()


def test_an_error_about_a_vip_found_later_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "vipaddrs"
    path.write_bytes(b"# \xff\n198.51.100.10 # x\n\n  203.0.113.0/30\n2001:db8:10::/124\n")
    assert str(vip_error(str(path), "203.0.113.2", "why")) == f"{path}:4: '203.0.113.0/30': why"
    assert str(vip_error(str(path), "2001:db8:10::7", "w")) == f"{path}:5: '2001:db8:10::/124': w"
    assert str(vip_error(str(path), "198.51.100.10", "why")) == f"{path}:2: '198.51.100.10': why"
    path.unlink()
    assert str(vip_error(str(path), "198.51.100.10", "why")) == f"{path}: '198.51.100.10': why"
