"""The entries of a line-based configuration file (the VIP file, the member map), by line number.

A file is read as bytes and split on LF (CRLF) only: a form feed, vertical tab, NEL or U+2028
in a comment is part of the comment, not a line break that would turn the rest into an entry and
shift every later line number. `#` starts a comment, which may hold any bytes; an entry's bytes
that are not UTF-8 survive decoding (shown as `\\xNN`), so the error they make names their line
instead of the whole file being unreadable.
"""

from __future__ import annotations

from collections.abc import Iterator

from cgp_ipvs_helper.shown import decode

BLANKS = b" \t"  # what separates an entry from its comment and, in the member map, its fields


def entries(data: bytes) -> Iterator[tuple[int, str]]:
    """(line number, entry text) for each line holding an entry: LF or CRLF ends a line, `#`
    starts a comment, spaces and tabs around the entry do not count."""
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        line = raw[:-1] if raw.endswith(b"\r") else raw
        entry = line.split(b"#", 1)[0].strip(BLANKS)
        if entry:
            yield lineno, decode(entry)


def as_bytes(text: str | bytes) -> bytes:
    """A file's content as read (text given by a caller: its UTF-8, lone surrogates as bytes)."""
    return text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")
