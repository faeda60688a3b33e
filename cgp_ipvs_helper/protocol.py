"""CGP's helper line protocol as this project implements it: pure parsing and formatting.

The verb table `VERBS` is the one place the grammar lives (see protocol.md), so it can be amended
in one place if a real CGP transcript ever differs. No I/O here: the shell hands in lines and
writes out what comes back.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Callable, Union

from attrs import frozen

from .errors import ProtocolError
from .vipfile import is_unicast

INTF_VERSION = 1
MAX_LINE = 4096
MAX_MEMBERS = 128
_IPV4 = re.compile(
    r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}", re.ASCII
)
_SEQ = re.compile(r"[!-~]{1,64}")


@frozen
class Intf:
    seq: str
    version: str


@frozen
class Activate:
    seq: str
    members: tuple[str, ...]


@frozen
class Deactivate:
    seq: str


@frozen
class Status:
    seq: str


@frozen
class Quit:
    seq: str


Request = Union[Intf, Activate, Deactivate, Status, Quit]


class BadRequest(ProtocolError):
    """A line we answer with `<seq> ERROR <reason>`; `seq` is None when the line had none."""

    def __init__(self, seq: str | None, reason: str) -> None:
        self.seq, self.reason = seq, reason
        super().__init__(reason)


def _no_args(make: Callable[[str], Request]) -> Callable[[str, Sequence[str]], Request]:
    def parse(seq: str, args: Sequence[str]) -> Request:
        if args:
            raise BadRequest(seq, f"unexpected argument: {args[0][:64]!r}")
        return make(seq)

    return parse


def _intf(seq: str, args: Sequence[str]) -> Request:
    if len(args) != 1 or not (args[0].isascii() and args[0].isdigit()) or len(args[0]) > 9:
        raise BadRequest(seq, "INTF needs one version number")
    return Intf(seq, args[0])


def parse_member(token: str) -> str:
    """A dotted-quad unicast IPv4 address, normalised; ValueError says what is wrong."""
    if not _IPV4.fullmatch(token):
        raise ValueError(f"not a dotted-quad IPv4 address: {token[:64]!r}")
    value = sum(int(p) << s for p, s in zip(token.split("."), (24, 16, 8, 0)))
    if not is_unicast(value):
        raise ValueError(f"not a unicast address: {token}")
    return token


def _activate(seq: str, args: Sequence[str]) -> Request:
    members: list[str] = []
    for token in args:
        try:
            member = parse_member(token)
        except ValueError as exc:
            raise BadRequest(seq, str(exc)) from None
        if member not in members:
            members.append(member)
    if len(members) > MAX_MEMBERS:
        raise BadRequest(seq, f"too many members: {len(members)} (at most {MAX_MEMBERS})")
    return Activate(seq, tuple(members))


VERBS: dict[str, Callable[[str, Sequence[str]], Request]] = {
    "INTF": _intf,
    "ACTIVATE": _activate,
    "DEACTIVATE": _no_args(Deactivate),
    "STATUS": _no_args(Status),
    "QUIT": _no_args(Quit),
}


def parse_line(line: str | bytes) -> Request:
    """One request line (without or with its LF/CRLF) → a typed request, or BadRequest."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    line = line.rstrip("\r\n")
    tokens = line.replace("\t", " ").split(" ")
    tokens = [t for t in tokens if t]
    if not tokens or not _SEQ.fullmatch(tokens[0]):
        raise BadRequest(None, "no request sequence number")
    seq = tokens[0]
    if len(line.encode("utf-8", errors="replace")) > MAX_LINE:
        raise BadRequest(seq, f"request line longer than {MAX_LINE} bytes")
    if len(tokens) < 2:
        raise BadRequest(seq, "no command")
    verb = tokens[1]
    handler = VERBS.get(verb.upper())
    if handler is None:
        raise BadRequest(seq, f"unknown command: {verb[:64]}")
    return handler(seq, tokens[2:])


def ok(seq: str, text: str = "") -> str:
    return _fit(f"{seq} OK {text}" if text else f"{seq} OK")


def error(seq: str, text: str) -> str:
    return _fit(f"{seq} ERROR {_one_line(text)}")


def intf(seq: str) -> str:
    return f"{seq} INTF {INTF_VERSION}"


def info(text: str) -> list[str]:
    """Info lines (`* ...`) for `text`: one per text line, long ones split to fit 4096 bytes."""
    if len(text) <= _SHORT and text.isprintable():  # one line that fits: checked in C
        return [f"* {text}"]
    lines: list[str] = []
    for part in text.splitlines() or [""]:
        part = _printable(part)
        while True:
            head = _fit(f"* {part}")
            lines.append(head)
            rest = part[len(head) - 2 :]
            if not rest:
                break
            part = rest
    return lines


_SHORT = (MAX_LINE - 2) // 4  # characters that fit an info line even if each takes 4 bytes


def _printable(text: str) -> str:
    if text.isprintable():  # the usual case, checked in C: a /24 activation logs 3,330 lines
        return text
    return "".join(c if c.isprintable() else f"\\x{ord(c) & 0xFF:02x}" for c in text)


def _one_line(text: str) -> str:
    return _printable(" ".join(text.split()))


def _fit(line: str, limit: int = MAX_LINE) -> str:
    """Truncate to `limit` bytes of UTF-8 without breaking a character."""
    if len(line) * 4 <= limit:  # no character takes more than 4 bytes
        return line
    data = line.encode("utf-8")
    if len(data) <= limit:
        return line
    return data[:limit].decode("utf-8", errors="ignore")
