"""How an operation renders itself: `str(op)` is its shell command, quoted only where needed."""

from __future__ import annotations

import re
import shlex

# shlex.quote leaves a word alone when it is not empty and has only these characters; with the
# space between words, one match over the joined line checks every word at once
_PLAIN_LINE = re.compile(r"[\w@%+=:,./ -]*", re.ASCII)


class Renders:
    """Mixin: `str(op)` is the quoted shell command."""

    __slots__ = ()

    def argv(self) -> list[str]:
        raise NotImplementedError

    def __str__(self) -> str:
        argv = self.argv()
        line = " ".join(argv)
        # what shlex.join gives when no word needs quotes (a /24 activation logs 3,330 of them)
        if all(argv) and line.count(" ") == len(argv) - 1 and _PLAIN_LINE.fullmatch(line):
            return line
        return shlex.join(argv)
