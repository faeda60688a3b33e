"""The member port-range map: what loads, and every error with file, line and text."""

from __future__ import annotations

from pathlib import Path

import pytest

from cgp_ipvs_helper.config.memberfile import load_members, parse_members
from cgp_ipvs_helper.errors import MemberFileError
from cgp_ipvs_helper.plan.steering import MemberRange

ROOT = Path(__file__).resolve().parents[2]
CGP_PORTS = (25, 80, 110, 143, 5060, 5061, 8100, 9100)


def test_entries_comments_blanks_in_file_order() -> None:
    text = (
        "# frontends\n\n192.0.2.12   55000-59999  # fe2\n"
        "\t192.0.2.11 50000-54999\n192.0.2.13 60000-60000#one port\n"
    )
    assert parse_members(text, "f", CGP_PORTS) == (
        MemberRange("192.0.2.12", 55000, 59999),
        MemberRange("192.0.2.11", 50000, 54999),
        MemberRange("192.0.2.13", 60000, 60000),
    )
    assert parse_members("", "f") == () and parse_members("# only\n\n", "f") == ()


def test_the_third_column_is_the_members_ipv6_address() -> None:
    text = "192.0.2.11 50000-54999 2001:DB8::0011\n192.0.2.12 55000-59999\n"
    assert parse_members(text, "f", CGP_PORTS, ["2001:db8:10::1"]) == (
        MemberRange("192.0.2.11", 50000, 54999, "2001:db8::11"),
        MemberRange("192.0.2.12", 55000, 59999),
    )
    assert str(parse_members(text, "f")[0]) == "192.0.2.11 50000-54999 2001:db8::11"
    with pytest.raises(MemberFileError, match="2001:db8:10::1 is a VIP"):
        parse_members("192.0.2.11 50000-54999 2001:db8:10::1\n", "f", vips=["2001:db8:10::1"])


def test_marks_are_a_fixed_base_or_the_first_port() -> None:
    (m,) = parse_members("192.0.2.11 50000-54999\n", "f")
    assert m.mark == 0x4347C350 == 1128776528


ERRORS = [
    ("192.0.2.11", 1, "expected '<LAN IPv4 address> FIRST-LAST [IPv6 address]'"),
    ("192.0.2.11 50000-54999 2001:db8::11 x", 1, "expected '<LAN IPv4 address> FIRST-LAST ["),
    ("192.0.2.11 50000-54999 192.0.2.12", 1, "'192.0.2.12' is not an IPv6 address"),
    ("192.0.2.11 50000-54999 2001:db8::/64", 1, "'2001:db8::/64' is not an IPv6 address"),
    ("192.0.2.11 50000-54999 fe80::1%eth0", 1, "'fe80::1%eth0' is not an IPv6 address"),
    ("192.0.2.11 50000-54999 2001:db8::g", 1, "'2001:db8::g' is not an IPv6 address"),
    ("192.0.2.11 50000-54999 fe80::11", 1, "fe80::11: not a unicast address: a link-local"),
    ("192.0.2.11 50000-54999 ff02::1", 1, "ff02::1: not a unicast address: a multicast"),
    ("192.0.2.11 50000-54999 ::1", 1, "::1: not a unicast address: the loopback"),
    (
        "192.0.2.11 50000-54999 2001:db8::11\n192.0.2.12 55000-59999 2001:DB8:0::11",
        2,
        "2001:db8::11 is already on line 1",
    ),
    ("fe1 50000-54999", 1, "'fe1' is not an IPv4 address"),
    ("192.0.2.256 50000-54999", 1, "'192.0.2.256' is not an IPv4 address"),
    ("224.0.0.1 50000-54999", 1, "224.0.0.1 is not a unicast address"),
    ("\n192.0.2.11 50000", 2, "'50000' is not a port range FIRST-LAST"),
    ("192.0.2.11 50000-", 1, "'50000-' is not a port range FIRST-LAST"),
    ("192.0.2.11 -5-9", 1, "'-5-9' is not a port range FIRST-LAST"),
    ("192.0.2.11 50000-70000", 1, "port 70000 is above 65535"),
    ("192.0.2.11 1000-2000", 1, "range 1000-2000 starts below 1024"),
    ("192.0.2.11 54999-50000", 1, "range 54999-50000: first port above last"),
    ("192.0.2.11 5000-6000", 1, "range 5000-6000 holds service port 5060"),
    ("192.0.2.11 50000-54999\n192.0.2.11 55000-59999", 2, "192.0.2.11 is already on line 1"),
    (
        "192.0.2.11 50000-54999\n#\n192.0.2.12 54999-59999",
        3,
        "range 54999-59999 overlaps 50000-54999 on line 1",
    ),
    ("192.0.2.11 50000-54999\n198.51.100.10 55000-59999", 2, "198.51.100.10 is a VIP"),
]


@pytest.mark.parametrize(("text", "lineno", "reason"), ERRORS)
def test_errors_name_file_line_and_text(text: str, lineno: int, reason: str) -> None:
    with pytest.raises(MemberFileError) as info:
        parse_members(text, "/etc/sysconfig/cgp-ipvs-members", CGP_PORTS, ["198.51.100.10"])
    err = info.value
    assert (err.path, err.lineno) == ("/etc/sysconfig/cgp-ipvs-members", lineno)
    assert err.text == text.splitlines()[lineno - 1].split("#")[0].strip()
    assert err.reason.startswith(reason), err.reason
    assert str(err).startswith(f"/etc/sysconfig/cgp-ipvs-members:{lineno}: {err.text!r}: ")


def test_missing_file_is_no_map_unreadable_is_an_error(tmp_path) -> None:
    assert load_members(str(tmp_path / "absent")) == ()
    with pytest.raises(MemberFileError, match="cannot read: Is a directory"):
        load_members(str(tmp_path))
    good = tmp_path / "members"
    good.write_text("192.0.2.11 50000-54999\n")
    assert load_members(str(good), CGP_PORTS) == (MemberRange("192.0.2.11", 50000, 54999),)


def test_bytes_that_are_not_utf8_name_their_line_as_in_the_vip_file(tmp_path) -> None:
    path = tmp_path / "members"
    path.write_bytes(b"192.0.2.11 50000-54999 # caf\xe9: any bytes in a comment\n")
    assert load_members(str(path)) == (MemberRange("192.0.2.11", 50000, 54999),)
    path.write_bytes(b"# fe1\n192.0.2.11 50000-54999\n192.0.2.1\xff 55000-59999\n")
    with pytest.raises(MemberFileError) as info:
        load_members(str(path))
    assert str(info.value) == (
        f"{path}:3: '192.0.2.1\\xff 55000-59999': '192.0.2.1\\xff' is not an IPv4 address"
    )


def test_only_lf_ends_a_line_and_only_spaces_and_tabs_separate_fields() -> None:
    # a vertical tab or U+2028 in a comment does not start a line that would be an entry
    text = "# fe1\x0b192.0.2.12 55000-59999\u2028x\r\n192.0.2.11\t50000-54999\r\n"
    assert parse_members(text, "f") == (MemberRange("192.0.2.11", 50000, 54999),)
    with pytest.raises(MemberFileError) as info:
        parse_members("\n192.0.2.11\x1c50000-54999\n", "f")
    assert str(info.value) == (
        "f:2: '192.0.2.11\\x1c50000-54999': expected '<LAN IPv4 address> FIRST-LAST [IPv6 address]'"
    )
    with pytest.raises(MemberFileError) as info:
        parse_members("192.0.2.11 50000-54999\x00\n", "f")
    assert str(info.value) == "f:1: '192.0.2.11 50000-54999\\x00': '50000-54999\\x00' is not " \
        "a port range FIRST-LAST"  # fmt: skip


def test_sample_file_is_no_map_until_its_example_is_uncommented() -> None:
    sample = ROOT / "sysconfig" / "cgp-ipvs-members"
    assert load_members(str(sample), CGP_PORTS) == ()
    example = "\n".join(
        line[1:] for line in sample.read_text().splitlines() if line.startswith("# 192.0.2.")
    )
    assert parse_members(example, str(sample), CGP_PORTS) == (
        MemberRange("192.0.2.11", 50000, 54999, "2001:db8::11"),
        MemberRange("192.0.2.12", 55000, 59999, "2001:db8::12"),
        MemberRange("192.0.2.13", 60000, 64999, "2001:db8::13"),
    )
