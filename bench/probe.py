"""The helper with a stopwatch, run by bench.hotspots in place of `python -m cgp_ipvs_helper`.

    python -m bench.probe RESULT.json [--fast-logging] HELPER-OPTIONS...

It is cli.main itself (options, kernel, gc.freeze, Output, the serve loop: whatever the helper
does today), with a stopwatch hooked in where cli.main hands over to serve(), and it imports
only the helper and the standard library, so it is the same process. The first ACTIVATE is
timed phase by phase by wrapping the engine's collaborators from handle() to the end of the
out.write() of its lines; afterwards the costly parts are timed alone on the very operations it
carried out, and everything goes to RESULT.json as one JSON object. With --fast-logging the two
logging fast paths below (info_fast, render_fast) replace protocol.info and the operations'
__str__: a what-if measuring the change proposed for the logging.

cProfile is not used: inside user-mode Linux every clock read is a system call (about 80 us),
and cProfile reads the clock twice per function call, which buries the real costs.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import resource
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Callable

from cgp_ipvs_helper import cli, operations, protocol
from cgp_ipvs_helper import helper as helper_module
from cgp_ipvs_helper.cli import Output
from cgp_ipvs_helper.helper import Helper
from cgp_ipvs_helper.protocol import Reply

LOOPS = 1000


def minor_faults() -> int:
    """Page faults of this process so far: each costs hundreds of microseconds in UML."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class Clock:
    """Seconds per label, when each label last ended, the first GARP, the operations applied."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}
        self.faults: dict[str, int] = {}
        self.ended: dict[str, float] = {}
        self.first_garp: float | None = None
        self.ops: list[Any] = []

    def wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kw: Any) -> Any:
            if label == "execute" and args:
                self.ops = list(args[0])
            f0 = minor_faults()
            t0 = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                t1 = time.perf_counter()
                self.spent[label] = self.spent.get(label, 0.0) + t1 - t0
                self.faults[label] = self.faults.get(label, 0) + minor_faults() - f0
                self.ended[label] = t1

        return timed


@contextmanager
def instrumented(helper: Helper, kernel: Any, clock: Clock) -> Iterator[None]:
    """Wrap what exists (the engine may be reworked meanwhile); put everything back after."""
    saved = {
        n: getattr(helper_module, n)
        for n in ("desired_state", "plan", "execute")
        if hasattr(helper_module, n)
    }
    for name, fn in saved.items():
        setattr(helper_module, name, clock.wrap(name, fn))
    shadowed: list[tuple[Any, str]] = []  # instance attributes that shadow methods meanwhile

    def shadow(obj: Any, name: str, fn: Callable[..., Any]) -> None:
        setattr(obj, name, fn)
        shadowed.append((obj, name))

    if hasattr(kernel, "observe"):
        shadow(kernel, "observe", clock.wrap("observe", kernel.observe))
    if hasattr(kernel, "_flush"):
        flush = kernel._flush

        def timed_flush(channel: str | None, pending: Any) -> Any:
            return clock.wrap(f"batch {channel}", flush)(channel, pending)

        shadow(kernel, "_flush", timed_flush)
    if hasattr(kernel, "_send_garp"):
        send = kernel._send_garp

        def first_garp(op: Any) -> None:
            if clock.first_garp is None:
                clock.first_garp = time.perf_counter()
            send(op)

        shadow(kernel, "_send_garp", first_garp)
    if hasattr(helper, "_log"):
        shadow(helper, "_log", clock.wrap("log", helper._log))
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(helper_module, name, fn)
        for obj, name in shadowed:
            delattr(obj, name)


# shlex's own test for a word that needs no quotes, with the space that separates words added
_SAFE_LINE = re.compile(r"[\w@%+=:,./ -]*", re.ASCII)
_INFO_FAST_MAX = protocol.MAX_LINE // 4 - 2  # chars that fit MAX_LINE bytes even as 4-byte UTF-8


def info_fast(text: str) -> list[str]:
    """What-if for protocol.info: a printable line short enough to fit needs no per-character
    scan and no UTF-8 length check (isprintable() is False for every line break)."""
    if len(text) <= _INFO_FAST_MAX and text.isprintable():
        return [f"* {text}"]
    return protocol.info(text)


def render_fast(argv: Sequence[str]) -> str:
    """What-if for operations' __str__: one regex over the joined words instead of one
    shlex.quote call per word, when no word is empty or holds a space or anything unsafe."""
    line = " ".join(argv)
    if all(argv) and line.count(" ") == len(argv) - 1 and _SAFE_LINE.fullmatch(line):
        return line
    return shlex.join(argv)


def _per_item(fn: Callable[[], Any], items: int) -> dict[str, float]:
    t0 = time.perf_counter()
    fn()
    spent = time.perf_counter() - t0
    return {"items": items, "seconds": spent, "each_us": spent / max(items, 1) * 1e6}


def _components(kernel: Any, ops: Sequence[Any], lines: Sequence[str]) -> dict[str, Any]:
    """The expensive steps again, each alone, on the same operations and lines."""
    out: dict[str, Any] = {}
    texts = [str(op) for op in ops]
    out["render"] = _per_item(lambda: [str(op) for op in ops], len(ops))
    out["info"] = _per_item(lambda: [protocol.info(t) for t in texts], len(texts))
    out["info_fast"] = _per_item(lambda: [info_fast(t) for t in texts], len(texts))
    out["info_fast_same"] = all(info_fast(t) == protocol.info(t) for t in texts)
    argvs = [op.argv() for op in ops]
    out["render_fast"] = _per_item(lambda: [render_fast(a) for a in argvs], len(argvs))
    out["render_fast_same"] = all(render_fast(a) == t for a, t in zip(argvs, texts))
    encode = getattr(kernel, "_encode", None)
    if encode is not None:
        netlink_ops = [op for op in ops if type(op).__name__ not in ("SetSysctl", "SendGarp")]
        try:
            out["encode"] = _per_item(lambda: [encode(op) for op in netlink_ops], len(netlink_ops))
        except Exception as exc:  # a private API of another engineer's module: may change
            out["encode_error"] = repr(exc)
    data = [line.encode() + b"\n" for line in lines]
    reader = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert reader.stdin is not None
    pipe = reader.stdin

    def per_line() -> None:
        for line in lines:
            pipe.write(line.encode("utf-8", "replace") + b"\n")
            pipe.flush()

    def joined() -> None:
        pipe.write("".join(f"{line}\n" for line in lines).encode("utf-8", "replace"))
        pipe.flush()

    def buffered() -> None:
        pipe.writelines(f"{line}\n".encode("utf-8", "replace") for line in lines)
        pipe.flush()

    out["pipe_per_line"] = _per_item(per_line, len(lines))
    out["pipe_joined"] = _per_item(joined, 1)
    out["pipe_buffered"] = _per_item(buffered, 1)
    pipe.close()
    reader.wait(30)
    fd = os.open(os.devnull, os.O_WRONLY)
    try:
        out["syscall_write"] = _per_item(lambda: [os.write(fd, b"x") for _ in range(LOOPS)], LOOPS)
    finally:
        os.close(fd)
    out["clock_read"] = _per_item(lambda: [time.perf_counter() for _ in range(LOOPS)], LOOPS)
    out["page_fault"] = _per_item(_touch_pages, LOOPS)
    out["lines"] = len(data)
    out["bytes"] = sum(len(d) for d in data)
    return out


def _touch_pages() -> None:
    """First touch of fresh anonymous pages: one page fault each."""
    area = mmap.mmap(-1, LOOPS * mmap.PAGESIZE)
    try:
        for offset in range(0, LOOPS * mmap.PAGESIZE, mmap.PAGESIZE):
            area[offset] = 1
    finally:
        area.close()


class _CountingStream:
    """Counts write() calls on the helper's stdout, to report how output leaves the process."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.writes = inner, 0

    def write(self, data: bytes) -> int:
        self.writes += 1
        return int(self.inner.write(data))

    def flush(self) -> None:
        self.inner.flush()


def _record(clock: Clock, t: list[float], f: list[int], writes: int) -> dict[str, Any]:
    """Phase times from the stopwatch: t/f = clock and page faults at start, handled, written."""
    s = clock.spent
    faults = dict(clock.faults)
    faults["handle"] = f[1] - f[0]
    faults["output"] = f[2] - f[1]
    faults["execute_rest"] = (
        faults.get("execute", 0) - faults.get("batch genl", 0) - faults.get("batch rtnl", 0)
    )
    execute = s.get("execute", 0.0)
    garp = 0.0
    if clock.first_garp is not None and "execute" in clock.ended:
        garp = clock.ended["execute"] - clock.first_garp
    batches = s.get("batch genl", 0.0) + s.get("batch rtnl", 0.0)
    inside = sum(s.get(k, 0.0) for k in ("observe", "desired_state", "plan", "execute", "log"))
    return {
        "phases": {
            "observe": s.get("observe", 0.0),
            "desired_state": s.get("desired_state", 0.0),
            "plan": s.get("plan", 0.0),
            "encode": max(0.0, execute - batches - garp),
            "ipvs": s.get("batch genl", 0.0),
            "addresses": s.get("batch rtnl", 0.0),
            "garp": garp,
            "log": s.get("log", 0.0),
            "engine_rest": max(0.0, (t[1] - t[0]) - inside),
            "output": t[2] - t[1],
        },
        "faults": faults,
        "handle": t[1] - t[0],
        "total": t[2] - t[0],
        "first_garp": None if clock.first_garp is None else clock.first_garp - t[0],
        "ops": len(clock.ops),
        "output_writes": writes,
    }


def fast_logging() -> None:
    """What-if: the two logging fast paths (info_fast, render_fast) put into the helper."""
    original_info = protocol.info

    def info(text: str) -> list[str]:
        if len(text) <= _INFO_FAST_MAX and text.isprintable():
            return [f"* {text}"]
        return original_info(text)

    protocol.info = info  # type: ignore[assignment]
    renders = getattr(operations, "_Renders", None)
    if renders is not None:
        renders.__str__ = lambda self: render_fast(self.argv())


def hook(helper: Helper, out: Output, result_path: str) -> None:
    """Time the next ACTIVATE from handle() to the end of its out.write(); write the record."""
    handle, write = helper.handle, out.write
    state: dict[str, Any] = {}

    def timed_handle(line: str | bytes) -> Reply:
        text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
        if " ACTIVATE" not in text or state:
            return handle(line)
        clock = Clock()
        context = instrumented(helper, helper.kernel, clock)
        context.__enter__()
        state.update(clock=clock, context=context, f=[minor_faults()], t=[time.perf_counter()])
        lines = handle(line)
        state["t"].append(time.perf_counter())
        state["f"].append(minor_faults())
        state["lines"] = lines
        return lines

    def timed_write(reply: Reply) -> None:
        if "lines" not in state or reply is not state["lines"]:
            write(reply)
            return
        counting = _CountingStream(out.stream)
        out.stream = counting
        try:
            write(reply)
        finally:
            out.stream = counting.inner
        state["t"].append(time.perf_counter())
        state["f"].append(minor_faults())
        state["context"].__exit__(None, None, None)
        clock = state["clock"]
        record = _record(clock, state["t"], state["f"], counting.writes)
        lines = protocol.render(reply)
        record["reply"] = lines[-1] if lines else ""
        record["components"] = _components(helper.kernel, clock.ops, lines)
        with open(result_path, "w") as f:
            json.dump(record, f)
        state.clear()
        state["done"] = True

    helper.handle = timed_handle  # type: ignore[method-assign]
    out.write = timed_write  # type: ignore[method-assign]


def main(argv: Sequence[str]) -> int:
    """cli.main itself, with the stopwatch hooked in where cli.main hands over to serve()."""
    result_path, options = argv[0], list(argv[1:])
    if options[:1] == ["--fast-logging"]:
        options = options[1:]
        fast_logging()
    serve = cli.serve

    def hooked_serve(helper: Helper, stdin_fd: int, out: Output, notes: Sequence[str] = ()) -> None:
        hook(helper, out, result_path)
        serve(helper, stdin_fd, out, notes)

    cli.serve = hooked_serve  # type: ignore[assignment]
    return cli.main(options)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
