"""Text from outside (requests, file names, file contents, kernel messages) shown on one line.

CGP writes the helper's output into its log line by line, and the README suggests replaying
`-m` output with `grep '^\\* ip' | sh`: a text that could break a line (CR, VT, FF, FS/GS/RS,
NEL, U+2028/U+2029) or hide itself (bidi controls, escape sequences) would let the sender forge
log lines or commands. Here every character that is not printable is shown as a backslash
escape, a backslash as two, and a byte that is not UTF-8 as the byte (`\\xff`), so what is
shown always fits on one line and names exactly what was received.
"""

from __future__ import annotations

_SURROGATE_BYTES = range(0xDC80, 0xDD00)  # what "surrogateescape" makes of a byte not UTF-8


def _char(c: str) -> str:
    if c == "\\":
        return "\\\\"
    return _printable_char(c)


def _printable_char(c: str) -> str:
    if c.isprintable():
        return c
    code = ord(c)
    if code in _SURROGATE_BYTES:
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def decode(data: bytes) -> str:
    """Bytes as text; a byte that is not UTF-8 survives (as a lone surrogate) to be shown."""
    return data.decode("utf-8", "surrogateescape")


def escaped(text: str | bytes) -> str:
    """`text` on one line of printable characters; the usual printable text is unchanged."""
    if isinstance(text, bytes):
        text = decode(text)
    if text.isprintable() and "\\" not in text:  # the usual case, checked in C
        return text
    return "".join(_char(c) for c in text)


def printable(text: str) -> str:
    """`text` with every character that is not printable escaped, backslashes as they are: the
    last line of defence for a text that may or may not have been escaped already (escaping it
    again would double its backslashes)."""
    if text.isprintable():  # the usual case, checked in C: a /24 activation logs 3,330 lines
        return text
    return "".join(_printable_char(c) for c in text)


def quoted(text: str | bytes) -> str:
    """`escaped(text)` in single quotes (a quote inside is escaped): where a text starts and
    ends is visible, as with repr(), whatever it holds."""
    return "'" + escaped(text).replace("'", "\\'") + "'"
