"""The helper's error types: one family, so the I/O shell can catch them in one place."""

from __future__ import annotations

from cgp_ipvs_helper.shown import escaped, quoted


class HelperError(Exception):
    """Base of every error the helper reports instead of crashing."""


class UsageError(HelperError):
    """A bad command-line option or value: fatal at start-up (exit status 2)."""


class VipFileError(HelperError):
    """The VIP list file is unreadable or malformed; carries file, line and text.

    The file name and the text are shown escaped: the message is one line whatever they hold.
    """

    def __init__(self, path: str, lineno: int | None, text: str, reason: str) -> None:
        self.path, self.lineno, self.text, self.reason = path, lineno, text, reason
        where = f"{escaped(path)}:{lineno}" if lineno is not None else escaped(path)
        shown = f": {quoted(text)}" if text else ""
        super().__init__(f"{where}{shown}: {escaped(reason)}")


class MemberFileError(VipFileError):
    """The member port-range map is unreadable or malformed: it only stops the steering
    (core/members.py), but is worded as a VIP file error (file, line, text)."""


class ProtocolError(HelperError):
    """A request line CGP sent that we cannot act on; answered with ERROR."""


class KernelError(HelperError):
    """Applying one operation failed; carries the operation and the kernel's reason."""

    def __init__(self, op: object, reason: str) -> None:
        self.op, self.reason = op, reason
        super().__init__(f"{op}: {reason}")
