"""Kernel settings through /proc/sys, as `sysctl -w` writes them (a path uses "/" between
words, so a device name with a dot in it stays one word)."""

from __future__ import annotations

import os

from cgp_ipvs_helper.plan.model import Sysctl


def _file(path: str) -> str:
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise ValueError(f"bad sysctl path: {path!r}")
    return "/proc/sys/" + path


def read(path: str) -> str | None:
    """The value without its newline; None where the kernel has no such setting (or denies it)."""
    try:
        with open(_file(path)) as f:
            return f.read().rstrip("\n")
    except (OSError, ValueError):
        return None


def write(setting: Sysctl) -> None:
    """OSError as the kernel refuses the value, ValueError for a bad path."""
    fd = os.open(_file(setting.path), os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, setting.value.encode() + b"\n")
    finally:
        os.close(fd)
