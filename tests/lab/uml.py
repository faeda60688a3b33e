"""Run a command as root inside a user-mode Linux kernel that has IPVS (host side).

Usage::

    python -m tests.lab.uml [--mem 1024M] [--timeout SECONDS] [-e NAME=VALUE] -- CMD ARGS...

The host kernels of the development and CI machines have no IPVS, so kernel tests run in
Debian's ``linux.uml``, booted with the host's own file system as its root (hostfs): the repo and
its venv work inside unchanged. The init script is generated per run in a private temporary
directory; it mounts proc/sysfs/a tmpfs on /run, loads the IPVS, veth and bridge modules from
``/usr/lib/uml/modules/<version>`` (the host has no /lib/modules, so ``modprobe -d`` points at a
private tree), then runs CMD with its output going to a file in that directory. The host tails
that file to its stdout as it grows (hostfs writes go straight through), so the kernel's own
console chatter never mixes in, and CMD's exit status comes back through a file too, because the
exit code of the UML process does not carry it.

Exit status: CMD's own; 2 when the kernel or a module is missing (one line on stderr); 124 when
the run overran ``--timeout`` (the kernel is killed); 125 when the kernel stopped without
reporting CMD's status (the tail of its console is printed).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_KERNEL = "linux.uml"
MODULES_BASE = Path("/usr/lib/uml/modules")
# Loaded one per modprobe call, in this order; auto-loading does not find them.
MODULES = (
    "ip_vs", "ip_vs_rr", "ip_vs_wlc", "ip_vs_wrr", "veth", "bridge",
    # marks for the steering of replies to outgoing connections: ingress qdisc, flower, mark, goto
    "sch_ingress", "cls_flower", "act_skbedit", "act_gact",
)  # fmt: skip
DEFAULT_MEM = "1024M"
DEFAULT_TIMEOUT = 900.0
POLL_S = 0.05
# Host variables worth passing in unchanged (the command's environment is otherwise built here).
PASS_ENV = ("CI",)

PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37

EXIT_SETUP = 2
EXIT_TIMEOUT = 124
EXIT_NO_STATUS = 125


class LabSetupError(RuntimeError):
    """The kernel or one of its modules is missing: nothing was booted."""


@dataclass
class UmlResult:
    """What one run did, for callers (benchmarks) that want the timings too."""

    status: int
    boot_s: float | None  # launch of linux.uml -> CMD started (boot + module loading)
    cmd_s: float | None  # CMD's own run time
    total_s: float  # launch -> kernel gone


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


def check_modules(moddir: Path, modules: Sequence[str] = MODULES) -> None:
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


def venv_bin() -> Path:
    """The bin dir of the venv running this launcher, else the repo's .venv, else python's."""
    if sys.prefix != getattr(sys, "base_prefix", sys.prefix):
        return Path(sys.prefix) / "bin"
    repo_venv = REPO_ROOT / ".venv" / "bin"
    if repo_venv.is_dir():
        return repo_venv
    return Path(sys.executable).parent


def command_env(extra: Mapping[str, str] | None = None) -> dict:
    """The complete environment of CMD inside (init starts with an empty one)."""
    vbin = venv_bin()
    env = {
        "PATH": f"{vbin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(REPO_ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
        # Output goes to a file the host tails: unbuffered, or nothing shows until the end.
        "PYTHONUNBUFFERED": "1",
        # A tmpfs inside the kernel: private to this run, fast, gone at power-off.
        "TMPDIR": "/run/tmp",
        "IN_UML": "1",
    }
    if vbin.parent.joinpath("pyvenv.cfg").is_file():
        env["VIRTUAL_ENV"] = str(vbin.parent)
    for name in PASS_ENV:
        if name in os.environ:
            env[name] = os.environ[name]
    env.update(extra or {})
    return env


def init_script(
    workdir: Path, argv: Sequence[str], env: Mapping[str, str], modules: Sequence[str] = MODULES
) -> str:
    """The PID-1 shell script: set up the kernel, run CMD, record its status, power off."""
    q = shlex.quote
    out, rc, times = q(str(workdir / "out")), q(str(workdir / "rc")), q(str(workdir / "times"))
    moddir = q(str(workdir / "mods"))
    envs = " ".join(q(f"{k}={v}") for k, v in env.items())
    cmd = " ".join(q(a) for a in argv)
    loads = "\n".join(f"modprobe -d {moddir} {q(m)} || fail 'modprobe {m} failed'" for m in modules)
    return f"""#!/bin/sh
# Generated by tests/lab/uml.py for one run; PID 1 inside user-mode Linux.
exec >>{out} 2>&1 </dev/null
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
fail() {{ echo "uml: $*"; echo {EXIT_SETUP} >{rc}; poweroff -f >/dev/null 2>&1; }}
mount -t proc proc /proc || fail 'mount /proc failed'
mount -t sysfs sysfs /sys || fail 'mount /sys failed'
mount -t tmpfs -o mode=755 tmpfs /run || fail 'mount /run failed'
mkdir -p /run/netns /run/tmp
{loads}
[ -e /proc/net/ip_vs ] || fail '/proc/net/ip_vs is missing after loading ip_vs'
ip link set lo up
echo "start $(date +%s.%N)" >>{times}
cd {q(str(REPO_ROOT))} && env -i {envs} {cmd}
status=$?
echo "end $(date +%s.%N)" >>{times}
echo $status >{rc}.new && mv {rc}.new {rc}
poweroff -f >/dev/null 2>&1
"""


def prepare(workdir: Path, argv: Sequence[str], env: Mapping[str, str], kernel: str) -> Path:
    """Make the private module tree and the init script in workdir; return the script."""
    version = kernel_version(kernel)
    moddir = MODULES_BASE / version
    check_modules(moddir)
    tree = workdir / "mods" / "lib" / "modules"
    tree.mkdir(parents=True)
    (tree / version).symlink_to(moddir)
    script = workdir / "init"
    script.write_text(init_script(workdir, argv, env))
    script.chmod(0o755)
    (workdir / "out").touch()
    return script


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


def _times(path: Path) -> dict:
    """Parse the 'start'/'end' epoch lines init wrote (UML's clock is the host's)."""
    found = {}
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            found[key] = float(value)
    except (OSError, ValueError):
        pass
    return found


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


def run_uml(
    argv: Sequence[str],
    mem: str = DEFAULT_MEM,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    env: Mapping[str, str] | None = None,
    output: BinaryIO | None = None,
    kernel: str | None = None,
    quiet: bool = False,
) -> UmlResult:
    """Boot, run argv inside as root, stream its output to `output`; return status and timings.

    Raises LabSetupError (before booting) when the kernel or a module is missing.
    """
    if not argv:
        raise ValueError("no command to run")
    if not re.fullmatch(r"[0-9]+[KMG]?", mem):
        raise ValueError(f"bad memory size {mem!r} (e.g. 1024M)")
    sink = output if output is not None else sys.stdout.buffer
    kpath = find_kernel(kernel)

    def say(msg: str) -> None:
        if not quiet:
            print(f"uml: {msg}", file=sys.stderr, flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="cgp-uml-"))
    try:
        if re.search(r"\s", str(workdir)):
            raise LabSetupError(f"temporary directory {workdir} has white space in its path")
        script = prepare(workdir, argv, command_env(env), kpath)
        with open(workdir / "console", "wb") as console, open(workdir / "out", "rb") as out:
            t0 = time.time()
            proc = start_kernel(
                kpath,
                workdir,
                console,
                mem=mem,
                root="/",
                init=str(script),
                umid="lab",
                args=("quiet", "loglevel=1"),
            )
            status: int | None = None
            if not wait(proc, timeout, lambda: _pump(out, sink)):
                _pump(out, sink)
                say(f"timeout: killed the kernel after {timeout:g} s")
                status = EXIT_TIMEOUT
            _pump(out, sink)
        total = time.time() - t0
        marks = _times(workdir / "times")
        boot = marks["start"] - t0 if "start" in marks else None
        ran = marks["end"] - marks["start"] if {"start", "end"} <= marks.keys() else None
        if status is None:
            try:
                status = int((workdir / "rc").read_text().strip())
            except (OSError, ValueError):
                status = EXIT_NO_STATUS
                say(f"the kernel stopped (exit {proc.returncode}) without CMD's exit status")
                tail = (workdir / "console").read_bytes()[-4000:].decode(errors="replace")
                for line in tail.splitlines()[-30:]:
                    say(f"console: {line.rstrip()}")
        parts = [f"exit {status}"]
        if boot is not None:
            parts.append(f"CMD started {boot:.1f} s after launch")
        if ran is not None:
            parts.append(f"ran {ran:.1f} s")
        parts.append(f"total {total:.1f} s")
        say(", ".join(parts))
        return UmlResult(status, boot, ran, total)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _pump(src: BinaryIO, sink: BinaryIO) -> None:
    """Copy what CMD wrote since the last call to the sink."""
    while True:
        chunk = src.read(65536)
        if not chunk:
            break
        try:
            sink.write(chunk)
            sink.flush()
        except BrokenPipeError:
            pass


@contextmanager
def pinned(cpu: int | None) -> Iterator[None]:
    """Run the body with this thread (and so every process it starts) on one CPU.

    User-mode Linux runs its kernel and each of its processes as separate host processes that
    hand over to each other at every system call and page fault. Left to the host scheduler on
    this VM they land on different CPUs, and each hand-over becomes a cross-CPU wake-up: measured
    here, 70-100 us per system call and 300-450 us per page fault instead of about 8 and 40 us
    on one CPU, and varying with load. The UML kernel uses one CPU anyway.
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


def main(args: Sequence[str] | None = None) -> int:
    """Command line entry point: python -m tests.lab.uml [options] -- CMD ARGS..."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.lab.uml",
        description="Run CMD as root inside a user-mode Linux kernel with IPVS; "
        "exit with CMD's status.",
    )
    parser.add_argument("--mem", default=DEFAULT_MEM, help="kernel memory (default %(default)s)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="kill the kernel after this many seconds, boot included (default %(default)g)",
    )
    parser.add_argument(
        "-e",
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment variable for CMD (repeatable)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no timing line on stderr")
    parser.add_argument(
        "--no-pin", action="store_true", help="let the host schedule the kernel on any CPU"
    )
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    ns = parser.parse_args(args)
    cmd = list(ns.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        parser.error("no command given (python -m tests.lab.uml -- CMD ARGS...)")
    extra = {}
    for item in ns.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"bad --env {item!r}: expected NAME=VALUE")
        extra[name] = value
    if not re.fullmatch(r"[0-9]+[KMG]?", ns.mem):
        parser.error(f"bad --mem {ns.mem!r}: expected e.g. 1024M")
    try:
        with interrupted_by(signal.SIGTERM, signal.SIGHUP), pinned(uml_cpu(not ns.no_pin)):
            return run_uml(cmd, ns.mem, ns.timeout, env=extra, quiet=ns.quiet).status
    except LabSetupError as exc:  # nothing was booted
        print(f"uml: {exc}", file=sys.stderr, flush=True)
        return EXIT_SETUP
    except KeyboardInterrupt:  # the kernel was killed on the way out
        print("uml: interrupted", file=sys.stderr)
        return 130


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


if __name__ == "__main__":
    sys.exit(main())
