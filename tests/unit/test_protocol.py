"""The line grammar: parsing table, responses, info lines, limits."""

from __future__ import annotations

import pytest

from cgp_ipvs_helper.core import protocol
from cgp_ipvs_helper.core.protocol import Activate, BadRequest, Deactivate, Intf, Quit, Status
from cgp_ipvs_helper.plan.model import Service, ServiceKey
from cgp_ipvs_helper.plan.operations import AddDests, AddService

PROTOS, VIPS = ("tcp", "udp"), ("203.0.113.1", "203.0.113.2")

PARSED = [
    ("00001 INTF 3", Intf("00001", "3")),
    ("00001 INTF 3\r\n", Intf("00001", "3")),
    ("7\tACTIVATE\t192.0.2.1  192.0.2.2\n", Activate("7", ("192.0.2.1", "192.0.2.2"))),
    ("7 ACTIVATE 192.0.2.1 192.0.2.1", Activate("7", ("192.0.2.1",))),
    ("7 ACTIVATE", Activate("7", ())),
    ("8 activate 192.0.2.9", Activate("8", ("192.0.2.9",))),
    ("9 DEACTIVATE", Deactivate("9")),
    ("  10 STATUS  ", Status("10")),
    ("11 QUIT", Quit("11")),
    (b"12 QUIT\r\n", Quit("12")),
]


@pytest.mark.parametrize(("line", "expected"), PARSED)
def test_parse(line, expected) -> None:
    assert protocol.parse_line(line) == expected


REJECTED = [
    ("", None, "no request sequence number"),
    ("\r\n", None, "no request sequence number"),
    ("5", "5", "no command"),
    ("5 NOPE", "5", "unknown command: NOPE"),
    ("5 INTF", "5", "INTF needs one version number"),
    ("5 INTF x", "5", "INTF needs one version number"),
    ("5 STATUS now", "5", "unexpected argument: 'now'"),
    ("5 QUIT now", "5", "unexpected argument: 'now'"),
    ("5 ACTIVATE 192.0.2.300", "5", "not a dotted-quad IPv4 address: '192.0.2.300'"),
    ("5 ACTIVATE 2001:db8::1", "5", "not a dotted-quad IPv4 address: '2001:db8::1'"),
    ("5 ACTIVATE 127.0.0.1", "5", "not a unicast address: 127.0.0.1"),
    ("5 ACTIVATE 224.0.0.81", "5", "not a unicast address: 224.0.0.81"),
    ("5 ACTIVATE 255.255.255.255", "5", "not a unicast address: 255.255.255.255"),
    ("5 ACTIVATE 0.0.0.0", "5", "not a unicast address: 0.0.0.0"),
    ("5 ACTIVATE 192.0.2.1;id", "5", "not a dotted-quad IPv4 address: '192.0.2.1;id'"),
    ("5 ACTIVATE 010.0.0.1", "5", "not a dotted-quad IPv4 address: '010.0.0.1'"),
]


@pytest.mark.parametrize(("line", "seq", "reason"), REJECTED)
def test_rejected(line, seq, reason) -> None:
    with pytest.raises(BadRequest) as err:
        protocol.parse_line(line)
    assert (err.value.seq, err.value.reason) == (seq, reason)


def test_too_many_members() -> None:
    members = " ".join(f"192.0.2.{i}" for i in range(1, 130))
    with pytest.raises(BadRequest, match="too many members: 129"):
        protocol.parse_line(f"1 ACTIVATE {members}")


def test_overlong_line_is_answered_when_it_has_a_seq() -> None:
    with pytest.raises(BadRequest) as err:
        protocol.parse_line("77 STATUS " + "x" * 5000)
    assert (err.value.seq, err.value.reason) == ("77", "request line longer than 4096 bytes")


def test_responses() -> None:
    assert protocol.ok("1") == "1 OK"
    assert protocol.ok("1", "standby") == "1 OK standby"
    assert protocol.error("1", "bad\nthing\x00") == "1 ERROR bad\\x0athing\\x00"
    assert protocol.intf("00001") == "00001 INTF 1"


def test_info_lines_fit_and_keep_all_text() -> None:
    text = "é" * 5000
    lines = protocol.info(text)
    assert all(len(line.encode()) <= 4096 and line.startswith("* ") for line in lines)
    assert lines[0][2:] + "".join(line[6:] for line in lines[1:]) == text
    assert all(line.startswith("* ... ") for line in lines[1:])  # continued
    assert protocol.info("a\nb") == ["* a\\x0ab"]  # one line whatever the text holds
    assert protocol.info("bell\x07") == ["* bell\\x07"]
    assert protocol.info("ip link set eth0 down") == ["* (text) ip link set eth0 down"]
    wide = "\U0001f600"  # 4 bytes of UTF-8
    assert protocol.info(wide * 1023) == ["* " + wide * 1023]  # 4,094 bytes: one line
    assert protocol.info(wide * 1024) == ["* " + wide * 1023, "* ... " + wide]


def test_only_ascii_digits_make_an_address() -> None:
    with pytest.raises(BadRequest, match="not a dotted-quad"):
        protocol.parse_line("1 ACTIVATE \u0661.0.0.1")


def test_a_reply_is_its_lines_joined_once_from_kept_parts() -> None:
    """Info lines, then operations (one kept ahead, real servers standing for many, logged from
    their kept parts), then the response: every line as rendered alone, in order."""
    keys = tuple(ServiceKey(p, vip, port) for vip in VIPS for port in (0, 25) for p in PROTOS)
    servers = (("192.0.2.11", 100), ("192.0.2.12", 50))
    dests, service = AddDests(keys, servers), AddService(Service(keys[0], persistence=15))
    info = protocol.Info("taking over")
    commands = protocol.Commands((service, dests), {service: b"* kept ahead\n"})
    reply = protocol.Reply((info, commands), protocol.Response("00002", "OK", "active"))
    lines = [
        "* taking over",
        "* kept ahead",
        *(f"* {op}" for op in dests.each()),
        "00002 OK active",
    ]
    assert protocol.encoded(reply) == "".join(f"{line}\n" for line in lines).encode()
    assert commands.encoded() == "".join(f"{line}\n" for line in lines[1:-1]).encode()
    assert protocol.encoded(protocol.Reply((), reply.response)) == b"00002 OK active\n"
