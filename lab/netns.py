"""Named network namespaces without forking: create, enter (one thread), delete.

`ip netns add/exec/del` cost a fork each (dear inside user-mode Linux); these do the same
with libc calls. `in_netns` moves only the calling thread, so a socket or netlink connection
opened in its body lives in that namespace while other threads stay where they are.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

NETNS_DIR = Path("/run/netns")

CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 1 << 20
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    """Turn a libc -1 into OSError with errno, as os.* calls do."""
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _setns(fd: int) -> None:
    """Move the calling thread (only it) into the network namespace behind fd."""
    _check(_libc.setns(fd, CLONE_NEWNET), "setns")


def _mount(source: str, target: str, fstype: str, flags: int) -> None:
    _check(
        _libc.mount(source.encode(), target.encode(), fstype.encode(), flags, None),
        f"mount {target}",
    )


@contextmanager
def in_netns(ns: str) -> Iterator[None]:
    """Run the body with the calling thread in netns `ns` (as named in /run/netns).

    Only this thread moves (setns acts per thread), so other threads keep working where they
    are. Sockets and netlink connections opened in the body stay in `ns` for their whole life;
    processes forked in the body start in `ns`.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(str(NETNS_DIR / ns), os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


def _share_netns_dir() -> None:
    """Make /run/netns a shared mount point, as `ip netns add` does, so deletions propagate."""
    NETNS_DIR.mkdir(parents=True, exist_ok=True)
    try:
        _mount("", str(NETNS_DIR), "none", MS_SHARED | MS_REC)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # EINVAL: not a mount point yet
            raise
        _mount(str(NETNS_DIR), str(NETNS_DIR), "none", MS_BIND | MS_REC)
        _mount("", str(NETNS_DIR), "none", MS_SHARED | MS_REC)


def create_netns(ns: str) -> None:
    """Create a named netns like `ip netns add`, without a fork: unshare in this thread only."""
    _share_netns_dir()
    path = NETNS_DIR / ns
    os.close(os.open(str(path), os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _check(_libc.unshare(CLONE_NEWNET), "unshare")
        try:
            _mount("/proc/thread-self/ns/net", str(path), "none", MS_BIND)
        finally:
            _setns(own)
    except BaseException:
        path.unlink()
        raise
    finally:
        os.close(own)


def delete_netns(ns: str) -> None:
    """Remove a named netns like `ip netns del` (it dies once no process or socket holds it)."""
    path = NETNS_DIR / ns
    _libc.umount2(str(path).encode(), MNT_DETACH)
    try:
        path.unlink()
    except FileNotFoundError:
        pass


@contextmanager
def fresh_netns(*names: str) -> Iterator[None]:
    """Named network namespaces that exist for the body only."""
    for ns in names:
        create_netns(ns)
    try:
        yield
    finally:
        for ns in names:
            delete_netns(ns)
