"""The user-mode Linux kernel as a host process, whatever it boots: find Debian's linux.uml and
its modules, launch it on a host directory as its root (hostfs), wait for it with a time limit,
kill it with every process it started, and pin it to one CPU.

Two users: uml.py, which boots the host's own root to run a command inside (the kernel tests,
the demo, the benchmarks), and tests/boot/machine.py, which boots a throw-away root with systemd.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable

DEFAULT_KERNEL = "linux.uml"
MODULES_BASE = Path("/usr/lib/uml/modules")
POLL_S = 0.05

PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37


class LabSetupError(RuntimeError):
    """The kernel or one of its modules is missing: nothing was booted."""


def find_kernel(kernel: str | None = None) -> str:
    """Locate linux.uml (argument, $UML_KERNEL, PATH), or explain what is missing."""
    name = kernel or os.environ.get("UML_KERNEL") or DEFAULT_KERNEL
    path = shutil.which(name)
    if path is None:
        raise LabSetupError(
            f"{name} not found: install Debian's user-mode-linux package (or set UML_KERNEL)"
        )
    return path


def kernel_version(kernel: str) -> str:
    """Ask the kernel binary for its release; it answers without booting."""
    try:
        out = subprocess.run(
            [kernel, "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabSetupError(f"{kernel} --version failed: {exc}") from exc
    if not re.fullmatch(r"[0-9][\w.+~-]*", out):
        raise LabSetupError(f"{kernel} --version gave no kernel release: {out!r}")
    return out


def check_modules(moddir: Path, modules: Sequence[str]) -> None:
    """Fail before booting when a module we load is not in the package's modules.dep."""
    dep = moddir / "modules.dep"
    if not dep.is_file():
        raise LabSetupError(f"no kernel modules at {moddir} (install user-mode-linux)")
    names = set()
    for line in dep.read_text().splitlines():
        ko = line.split(":", 1)[0].rsplit("/", 1)[-1]
        names.add(re.sub(r"\.ko(\.\w+)?$", "", ko).replace("-", "_"))
    missing = [m for m in modules if m.replace("-", "_") not in names]
    if missing:
        raise LabSetupError(f"kernel module(s) {', '.join(missing)} missing under {moddir}")


def xstate_shim(workdir: Path) -> dict[str, str]:
    """The environment for linux.uml: LD_PRELOAD of xstate_shim.c, built here with cc.

    Debian's UML 6.1 dies at boot on hosts with AMX (see the C file). The shim is harmless
    elsewhere; without a C compiler the kernel starts without it (and fails only on such hosts).
    """
    env = dict(os.environ)
    source = Path(__file__).with_name("xstate_shim.c")
    lib = workdir / "xstate_shim.so"
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return env
    built = subprocess.run(
        [cc, "-shared", "-fPIC", "-O2", "-o", str(lib), str(source), "-ldl"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    if built.returncode != 0:
        raise LabSetupError(f"cannot build {source.name}: {built.stderr.decode(errors='replace')}")
    env["LD_PRELOAD"] = str(lib)
    return env


def _prctl(option: int, value: int = 0) -> int:
    """prctl(2) through libc; -1 where it cannot be called."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        arg = ctypes.c_int(0)
        if option == PR_GET_CHILD_SUBREAPER:
            return arg.value if libc.prctl(option, ctypes.byref(arg), 0, 0, 0) == 0 else -1
        return int(libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0))
    except (OSError, AttributeError):
        return -1


def start_kernel(
    kernel: str,
    workdir: Path,
    console: BinaryIO,
    *,
    mem: str,
    root: str,
    init: str,
    umid: str,
    args: Sequence[str] = (),
) -> subprocess.Popen:
    """Launch `kernel` on the host directory `root` (hostfs) with `init` as PID 1, its console
    to `console`, its sockets in `workdir`, in a process group of its own (see `kill`)."""
    cmdline = [
        kernel,
        f"mem={mem}",
        "root=/dev/root",
        "rootfstype=hostfs",
        f"rootflags={root}",
        "rw",
        f"init={init}",
        "con=null",
        "con0=fd:0,fd:1",
        *args,
        f"uml_dir={workdir}",
        f"umid={umid}",
    ]
    return subprocess.Popen(
        cmdline,
        stdin=subprocess.DEVNULL,
        stdout=console,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=str(workdir),
        env=xstate_shim(workdir),
    )


def wait(proc: subprocess.Popen, timeout: float, each: Callable[[], None] | None = None) -> bool:
    """Wait for the kernel to stop (True), calling `each` every POLL_S; past `timeout` seconds
    kill it (False). On any exception, ^C included, it is killed before the exception goes on."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            if each is not None:
                each()
            try:
                proc.wait(timeout=POLL_S)
                return True
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() > deadline:
                kill(proc)
                return False
    except BaseException:
        kill(proc)
        raise


def kill(proc: subprocess.Popen) -> None:
    """Kill the kernel and its helper processes (they share its process group), and reap them.

    The helpers are children of the kernel process; killed together they would be left as
    zombies for PID 1 to reap (slowly, in these containers). Being a child subreaper for the
    moment of the kill makes them ours, and waitpid(-pgid) reaps only them.
    """
    previous = _prctl(PR_GET_CHILD_SUBREAPER)
    if previous == 0:
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
    try:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-proc.pid, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.02)
    finally:
        if previous == 0:
            _prctl(PR_SET_CHILD_SUBREAPER, 0)


@contextmanager
def pinned(cpu: int | None) -> Iterator[None]:
    """Run the body with this thread (and so every process it starts) on one CPU.

    User-mode Linux runs its kernel and each of its processes as separate host processes that
    hand over to each other at every system call and page fault. Left to the host scheduler
    they may land on different CPUs, and each hand-over becomes a cross-CPU wake-up, many times
    dearer and varying with load (the bench's machine table). The UML kernel uses one CPU anyway.
    """
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def uml_cpu(pin: bool = True) -> int | None:
    """The host CPU to pin the kernel to (the last one allowed); None: one CPU, or unwanted."""
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[-1] if pin and len(cpus) > 1 else None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def interrupted_by(*signums: int) -> Iterator[None]:
    """In the body, these signals unwind like ^C: a CI runner stops jobs with SIGTERM, and the
    kernel must then be killed (`wait` does it), not orphaned. The handlers are put back after."""
    previous = {signum: signal.signal(signum, _interrupt) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
