"""Run a piece of a test as an unprivileged user, in a forked child of the test process."""

from __future__ import annotations

import json
import os
from typing import Any, Callable

NOBODY = 65534


def as_nobody(fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) in a child that dropped to uid/gid 65534; its JSON-able result, or a crash.

    Fork, not exec: the child needs no readable interpreter or venv, only what is imported.
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.write(write, json.dumps(fn(*args)).encode())
        except BaseException as exc:
            os.write(write, json.dumps({"crash": repr(exc)}).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        result = json.loads(pipe.read() or b"{}")
    os.waitpid(pid, 0)
    return result
