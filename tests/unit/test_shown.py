"""Text from outside shown on one line: what is escaped, and that the usual text is not."""

from __future__ import annotations

import pytest

from cgp_ipvs_helper.shown import escaped, quoted

CASES = [
    ("198.51.100.10 tcp:25 é", "198.51.100.10 tcp:25 é"),
    ("a\nb\rc", "a\\x0ab\\x0dc"),
    ("\x0b\x0c\x1c\x1d\x1e\x85", "\\x0b\\x0c\\x1c\\x1d\\x1e\\x85"),
    ("\u2028\u2029\u202e\ufeff", "\\u2028\\u2029\\u202e\\ufeff"),
    ("\U000e0001", "\\U000e0001"),
    ("back\\slash", "back\\\\slash"),
    (b"caf\xe9 \xff", "caf\\xe9 \\xff"),
    (b"\xc3\xa9", "é"),
    ("\x1b[2J\x00\t", "\\x1b[2J\\x00\\x09"),
]


@pytest.mark.parametrize(("text", "shown"), CASES)
def test_escaped(text: str | bytes, shown: str) -> None:
    assert escaped(text) == shown
    assert escaped(text).isprintable()


def test_quoted_marks_where_the_text_starts_and_ends() -> None:
    assert quoted("it's") == "'it\\'s'"
    assert quoted(b"x\xff") == "'x\\xff'"
