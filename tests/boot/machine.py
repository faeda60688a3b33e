"""A user-mode Linux machine on a root directory of the host (hostfs): booted with systemd as PID
1, or with a shell script as PID 1 for work that must run on that root before or after a boot.

Unlike lab/uml.py, whose kernel runs a command on the host's own root, this kernel sees only
the throw-away root. It gets no network device at all (no `ethN=`), so nothing inside reaches the
host but the root directory and the console, which goes to a file. Every boot has a time limit;
past it, or on any error on our side, the kernel and its helper processes are killed.
"""

from __future__ import annotations

import shlex
import shutil
import signal
import tempfile
import time
from pathlib import Path

from lab import umlkernel

MEM = "512M"
# Inside the root: the scripts of maintenance boots, their output and exit status.
WORK = "var/lib/cgp-boot-test"


class BootError(RuntimeError):
    """The kernel overran its time limit (it was killed) or stopped without the expected result."""


def install_modules(root: Path) -> str:
    """Copy Debian's UML modules to /lib/modules/<release> of root; return the release."""
    release = umlkernel.kernel_version(umlkernel.find_kernel())
    source = umlkernel.MODULES_BASE / release
    umlkernel.check_modules(source, ("ip_vs", "ip_vs_wlc"))
    shutil.copytree(source, root / "usr/lib/modules" / release, symlinks=True)
    return release


def boot(root: Path, init: str, console: Path, timeout: float, *args: str) -> float:
    """Boot the kernel on root with init as PID 1 until it powers off; return the seconds taken.

    Raises BootError when it overran `timeout` or exited with a non-zero status.
    """
    kernel = umlkernel.find_kernel()
    with tempfile.TemporaryDirectory(prefix="cgp-boot-") as tmp:
        with umlkernel.pinned(umlkernel.uml_cpu()), open(console, "wb") as out:
            t0 = time.monotonic()
            proc = umlkernel.start_kernel(
                kernel, Path(tmp), out, mem=MEM, root=str(root), init=init, umid="boot", args=args
            )
            with umlkernel.interrupted_by(signal.SIGTERM):
                if not umlkernel.wait(proc, timeout):
                    raise BootError(f"killed the kernel after {timeout:g} s{_tail(console)}")
            taken = time.monotonic() - t0
    status = proc.returncode
    if status != 0:
        raise BootError(f"the kernel exited with status {status}{_tail(console)}")
    return taken


def _tail(console: Path, lines: int = 40) -> str:
    text = console.read_text(errors="replace").splitlines()[-lines:]
    return f"; the end of its console ({console}):\n" + "\n".join(text)


def run_script(root: Path, name: str, body: str, console: Path, timeout: float = 120.0) -> str:
    """Run a shell script as PID 1 on root (proc, sys and a tmpfs /run mounted); return its output.

    Raises BootError when the script failed (its output is in the message) or did not finish.
    """
    work = root / WORK
    work.mkdir(parents=True, exist_ok=True)
    out, rc = f"/{WORK}/{name}.out", f"/{WORK}/{name}.rc"
    (root / rc.lstrip("/")).unlink(missing_ok=True)
    script = work / f"{name}.sh"
    script.write_text(
        "#!/bin/sh\n"
        f"exec >{shlex.quote(out)} 2>&1 </dev/null\n"
        "export PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8\n"
        "mount -t proc proc /proc && mount -t sysfs sysfs /sys && mount -t tmpfs tmpfs /run\n"
        f"(\nset -e\n{body}\n)\n"
        f"echo $? >{shlex.quote(rc)}\n"
        "umount /run; systemctl --force --force poweroff\n"
    )
    script.chmod(0o755)
    boot(root, f"/{WORK}/{name}.sh", console, timeout)
    output = (root / out.lstrip("/")).read_text(errors="replace")
    try:
        status = int((root / rc.lstrip("/")).read_text())
    except (OSError, ValueError):
        raise BootError(f"{name}: no exit status; output:\n{output}") from None
    if status != 0:
        raise BootError(f"{name}: exit {status}; output:\n{output}")
    return output
