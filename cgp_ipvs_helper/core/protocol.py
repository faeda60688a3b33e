"""CGP's helper line protocol as this project implements it: pure parsing and rendering.

The verb table `VERBS` is the one place the grammar lives (see docs/protocol.md), so it can be
amended in one place if a real CGP transcript ever differs. Requests come in as lines and leave
as typed values; the helper answers with typed values (`Reply`: `Info`s, then at most one
`Response`) that `render` turns into lines at the edge. No I/O here: the shell hands in lines and
writes out what comes back.
"""

from __future__ import annotations

import io
import re
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import chain, islice
from typing import Callable, Literal, Union

from attrs import field, frozen

from cgp_ipvs_helper.config.vipfile import is_unicast
from cgp_ipvs_helper.errors import KernelError, ProtocolError
from cgp_ipvs_helper.shown import escaped, printable

INTF_VERSION = "1"  # the one protocol version this helper speaks, as INTF answers it
MAX_LINE = 4096
MAX_MEMBERS = 128
_IPV4 = re.compile(
    r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}", re.ASCII
)
SEQ_MAX = 64  # a seq is 1-64 printable ASCII characters other than space
SEQ_ECHO_MAX = 4000  # a longer first token is still echoed, this much of it (ASCII: bytes)
# The first words of the commands the helper logs. An info line that is not one of our own
# commands never starts with one, so `grep '^\\* ip' | sh` replays exactly what real mode ran.
COMMAND_WORDS = ("ip", "sysctl", "arping", "ndptool", "nft", "tc")
CONTINUED = "... "  # starts the second and later lines of a long info text


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


@frozen
class Info:
    """An information line, `* text`: CGP writes it into its log (long text takes more lines)."""

    text: str

    def texts(self) -> tuple[str, ...]:
        return (self.text,)

    def lines(self) -> list[str]:
        return info(self.text)

    def encoded(self) -> bytes:
        """Its lines in UTF-8, each ended by a newline."""
        return "".join(f"{line}\n" for line in self.lines()).encode("utf-8", "replace")

    def parts(self) -> Iterable[bytes]:
        return (self.encoded(),)


@frozen
class Commands:
    """Kernel operations carried out: one info line each, holding its shell equivalent (an
    operation standing for many, operations.AddDests, has one line for each of them). `known`
    may hold an operation's lines already, encoded (built ahead)."""

    ops: tuple[object, ...]
    known: Mapping[object, bytes] = field(factory=dict, eq=False)
    built: bytes | None = field(default=None, eq=False)  # all their lines, if built already

    def texts(self) -> tuple[str, ...]:
        return tuple(line[2:] for line in self.lines())

    def lines(self) -> list[str]:
        return self.encoded().decode("utf-8", "replace").split("\n")[:-1]

    def encoded(self) -> bytes:
        """The lines in UTF-8, each ended by a newline: our own commands, shell-quoted from
        validated values, the only info lines that start with a command word. An ACTIVATE
        from standby logs thousands: joined from the lines built while standby and the parts
        of its real servers (`logged()`), not rendered and encoded one by one."""
        return self.built if self.built is not None else joined(self.parts())

    def parts(self) -> Iterator[bytes]:
        """What encoded() joins: each operation's lines, and those of an operation standing for
        many as their kept parts (not joined apart first: see joined())."""
        known = self.known
        if self.built is not None:
            return iter((self.built,))
        if not known:  # (a lookup hashes an operation standing for many in full)
            return chain.from_iterable(map(_parts, self.ops))
        return chain.from_iterable(
            [(line,) if (line := known.get(op)) is not None else _parts(op) for op in self.ops]
        )


def _parts(op: object) -> Iterable[bytes]:
    many = getattr(op, "logged_parts", None)  # (an operation standing for many)
    return many() if many is not None else (logged(op),)


def logged(op: object) -> bytes:
    """An operation's info line(s), encoded: what `Commands` logs for it (and what an ACTIVATE
    planned while standby keeps, ready.py)."""
    many = getattr(op, "logged", None)  # the lines of an operation standing for many
    return many() if many is not None else f"* {op}\n".encode("utf-8", "replace")


# Response and Reply are built once per request: without slots attrs builds them faster.


@frozen(slots=False)
class Response:
    """The one answer to a request: `<seq> OK [text]`, `<seq> ERROR <text>`, `<seq> INTF <n>`."""

    seq: str
    kind: Literal["OK", "ERROR", "INTF"]
    text: str = ""


@frozen(slots=False)
class Reply:
    """What the helper says after one request, signal or timer run: info lines, then at most
    one response (a request's own, or a QUIT's that waited for the drain)."""

    infos: tuple[Info | Commands, ...] = ()
    response: Response | None = None


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
    if not is_unicast(int(token[: token.index(".")]) << 24):  # (only the first byte tells)
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
        line = line.decode("utf-8", "replace")
    line = line.rstrip("\r\n")
    tokens = line.replace("\t", " ").split(" ")
    if "" in tokens:
        tokens = [t for t in tokens if t]
    seq = tokens[0] if tokens else ""
    if not (seq and seq.isascii() and seq.isprintable()):
        raise BadRequest(None, "no request sequence number")
    # (a character is at most 4 bytes of UTF-8: a short line needs no encoding to be measured)
    if len(line) * 4 > MAX_LINE and len(line.encode("utf-8", errors="replace")) > MAX_LINE:
        raise BadRequest(seq, f"request line longer than {MAX_LINE} bytes")
    if len(seq) > SEQ_MAX:  # answered all the same: CGP waits for every seq it sent
        raise BadRequest(seq, f"sequence number longer than {SEQ_MAX} characters")
    if len(tokens) < 2:
        raise BadRequest(seq, "no command")
    verb = tokens[1]
    handler = VERBS.get(verb.upper()) if verb.isascii() else None
    if handler is None:
        raise BadRequest(seq, f"unknown command: {verb[:64]}")
    return handler(seq, tokens[2:])


def render(reply: Reply) -> list[str]:
    """The lines of `reply`, in order: every info line, then the response."""
    r = reply.response
    lines = [line for i in reply.infos for line in i.lines()]
    return lines if r is None else [*lines, response_line(r)]


def encoded(reply: Reply) -> bytes:
    """render()'s lines in UTF-8, each ended by a newline, as one write takes them."""
    r = reply.response
    last = b"" if r is None else f"{response_line(r)}\n".encode("utf-8", "replace")
    if not reply.infos:  # most replies: a response alone
        return last
    return joined(chain(chain.from_iterable(i.parts() for i in reply.infos), (last,)))


JOINED = 1024  # parts joined at a time: their descriptors (80 KiB) reuse the same memory


def joined(parts: Iterable[bytes]) -> bytes:
    """The parts as one bytes, joined a run of JOINED at a time into a growing buffer: the lines
    of a big ACTIVATE (megabytes, tens of thousands of parts) are copied once into memory
    touched once. (b"".join of them all would take a buffer descriptor of 80 bytes per part
    as well: fresh memory, a page fault per page, more than the lines themselves.)"""
    out, more = io.BytesIO(), iter(parts)
    run = list(islice(more, JOINED))
    while run:
        out.write(b"".join(run))
        run = list(islice(more, JOINED))
    return out.getvalue()


def response_line(r: Response) -> str:
    return _RESPONSE_LINES[r.kind](r.seq, r.text)


def ok(seq: str, text: str = "") -> str:
    line = f"{seq} OK {text}" if text else f"{seq} OK"
    return line if len(line) <= _SURELY_FITS else _fit(line)  # (the usual case: no call)


def error(seq: str, text: str) -> str:
    """The seq is echoed whole up to SEQ_ECHO_MAX bytes (any seq CGP sends), else as its first
    SEQ_ECHO_MAX bytes, so the line still fits in 4096 bytes with its verdict."""
    return _fit(f"{seq[:SEQ_ECHO_MAX]} ERROR {printable(text)}")


def intf(seq: str, version: str = INTF_VERSION) -> str:
    return f"{seq} INTF {version}"


_RESPONSE_LINES: dict[str, Callable[[str, str], str]] = {"OK": ok, "ERROR": error, "INTF": intf}


def info(text: str) -> list[str]:
    """Info lines (`* ...`) for `text`, which may hold text from outside: on one line whatever
    it holds (what is not printable is escaped), split to fit 4096 bytes with each later piece
    marked as continued, and marked if it would start with a command word, so that no piece
    reads as a command the helper ran."""
    if len(text) <= _SHORT and text.isprintable() and not text.startswith(COMMAND_WORDS):
        return [f"* {text}"]  # one line that fits: checked in C
    part = printable(text)
    if part.startswith(COMMAND_WORDS):
        part = f"(text) {part}"
    lines: list[str] = []
    while True:
        head = _fit(f"* {part}")
        lines.append(head)
        rest = part[len(head) - 2 :]
        if not rest:
            return lines
        part = CONTINUED + rest


_SHORT = (MAX_LINE - 2) // 4  # characters that fit an info line even if each takes 4 bytes


_SURELY_FITS = MAX_LINE // 4  # characters: no character takes more than 4 bytes of UTF-8


def _fit(line: str, limit: int = MAX_LINE) -> str:
    """Truncate to `limit` bytes of UTF-8 without breaking a character."""
    if len(line) * 4 <= limit:
        return line
    data = line.encode("utf-8")
    if len(data) <= limit:
        return line
    return data[:limit].decode("utf-8", errors="ignore")


# -- the helper's stock answers ---------------------------------------------------------------


def answer(seq: str, failures: Sequence[KernelError], text: str) -> Response:
    """OK with `text`, or ERROR with the first failure (and how many more)."""
    if not failures:
        return Response(seq, "OK", text)
    first = failures[0]
    more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
    return Response(seq, "ERROR", f"{first.op}: {first.reason}{more}")


def shown(line: str | bytes) -> str:
    """A request line as it is logged: escaped, so it is one line whatever it holds."""
    return escaped(line.rstrip(b"\r\n") if isinstance(line, bytes) else line.rstrip("\r\n"))


def not_served(seq: str | None, line: str | bytes) -> Reply:
    """A request after QUIT: answered (CGP waits for every seq it sent), not served."""
    logged = (Info(f"not served, stopping: {shown(line)}"),)
    return Reply(logged, None if seq is None else Response(seq, "ERROR", "stopping"))


def internal_error(exc: BaseException) -> Info:
    """The info value for an unexpected error: where it happened, for a bug report."""
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" at {where.filename.rsplit('/', 1)[-1]}:{where.lineno}" if where else ""
    return Info(f"internal error{at}: {exc!r}")
