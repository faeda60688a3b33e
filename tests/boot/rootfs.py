"""The throw-away root the boot test boots: Debian bookworm (minbase) with systemd, from
debootstrap, built once and cached outside the repository, keyed by a hash of its recipe.

Why bookworm: its systemd is 252, the release RHEL 9 ships (the oldest RHEL the RPM supports), and
Debian's package mirror is the one this machine's apt already reaches. Its python3 (3.11) runs
the RPM's launchers; `rpm` installs the package for real; iproute2 and kmod are what a frontend
has to look at addresses and modules; udev, as on any RHEL, or systemd-networkd leaves every
interface but lo waiting for it, unconfigured.

The recipe is SUITE, VARIANT, PACKAGES and the source of _finish: any change to them gives
another key, so another root; roots of other recipes unused for an hour are removed when a new
one is built (a test run of another branch may still be copying one). A build runs under a lock
(two test runs on one host share the cache) into a `.partial` directory that is renamed into
place only when complete, so a killed build is never mistaken for a root.
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

SUITE = "bookworm"
VARIANT = "minbase"
PACKAGES = ("systemd", "udev", "iproute2", "kmod", "python3", "rpm")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
CACHE = Path(os.environ.get("CGP_BOOT_CACHE", "/var/cache/cgp-ipvs-helper"))
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
BUILD_TIMEOUT_S = 1800.0
STALE_S = 3600.0


class RootBuildError(RuntimeError):
    """debootstrap could not build the root (the message holds the tail of its log)."""


def recipe_key() -> str:
    """The cache key: a hash of the recipe (not of the mirror: any Debian mirror serves it)."""
    recipe = repr((SUITE, VARIANT, PACKAGES, inspect.getsource(_finish)))
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def _source_texts(paths: Iterable[Path]) -> list[str]:
    texts = []
    for path in paths:
        files = sorted(path.glob("*")) if path.is_dir() else [path]
        for name in files:
            if name.suffix in ("", ".list", ".sources") and name.is_file():
                texts.append(name.read_text(errors="replace"))
    return texts


def apt_mirror(texts: Iterable[str], suite: str = SUITE) -> str | None:
    """The first `deb` URI serving `suite` with `main`, in one-line or deb822 sources; pure."""
    for text in texts:
        for line in text.splitlines():
            words = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) >= 4 and words[0] == "deb" and words[2] == suite and "main" in words:
                return words[1]
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, list[str]] = {}
            for line in stanza.splitlines():
                key, sep, value = line.partition(":")
                if sep and not line.startswith(("#", " ", "\t")):
                    fields[key.strip().lower()] = value.split()
            if (
                "deb" in fields.get("types", [])
                and suite in fields.get("suites", [])
                and "main" in fields.get("components", [])
                and fields.get("uris")
            ):
                return fields["uris"][0]
    return None


def _finish(root: Path) -> None:
    """What debootstrap leaves that the boot test does not want."""
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    # A persistent journal: the whole boot, shutdown included, can be read after power-off.
    (root / "var/log/journal").mkdir(parents=True, exist_ok=True)
    # No console login: the kernel's console is a file on the host.
    (root / "etc/systemd/system/getty.target.wants/getty@tty1.service").unlink(missing_ok=True)


def cached_root(log: Path) -> Path:
    """The root for this recipe, built now if the cache has none (debootstrap's output to log)."""
    if shutil.which("debootstrap") is None:
        raise RootBuildError(
            "debootstrap is missing: make boot-test installs it (apt-get install debootstrap)"
        )
    CACHE.mkdir(parents=True, exist_ok=True)
    final = CACHE / f"rootfs-{recipe_key()}"
    with open(CACHE / "rootfs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if final.is_dir():
            os.utime(final)  # in use: see below
            return final
        partial = final.with_name(final.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        mirror = apt_mirror(_source_texts(APT_SOURCES)) or DEFAULT_MIRROR
        argv = ["debootstrap", f"--variant={VARIANT}", f"--include={','.join(PACKAGES)}"]
        with open(log, "wb") as out:
            proc = subprocess.run(
                [*argv, SUITE, str(partial), mirror],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=BUILD_TIMEOUT_S,
                check=False,
            )
        if proc.returncode != 0:
            detail = partial / "debootstrap" / "debootstrap.log"
            tail = (detail if detail.is_file() else log).read_text(errors="replace")[-3000:]
            raise RootBuildError(f"debootstrap from {mirror} failed ({proc.returncode}):\n{tail}")
        _finish(partial)
        for old in CACHE.glob("rootfs-*"):
            if old != partial and time.time() - old.stat().st_mtime > STALE_S:
                shutil.rmtree(old, ignore_errors=True)
        partial.rename(final)
        return final
