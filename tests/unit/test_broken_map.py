"""A broken member map degrades the helper, never silences it: at start the helper balances as
without a map, at SIGHUP the last good map stays in force; either way the error is said at once,
on every refresh until it is fixed and in STATUS (`map=error`), and ACTIVATE answers OK. Fixing
the file and sending SIGHUP turns steering on without a switch."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from cgp_ipvs_helper.core.engine import Helper
from cgp_ipvs_helper.core.protocol import render
from cgp_ipvs_helper.core.session import HANDOVER_S
from cgp_ipvs_helper.errors import VipFileError
from cgp_ipvs_helper.kernel.testing import FakeKernel
from cgp_ipvs_helper.plan.model import KernelState, TcState
from cgp_ipvs_helper.plan.outgoing import PORT_RANGE

from .conftest import VIPS, Clock, fresh_state, info_lines, make_helper

GOOD = b"192.0.2.11 50000-54999\n192.0.2.12 55000-59999\n192.0.2.14 60000-64999\n"
# each kind of mistake: the file, and where and why the error says it is wrong
BROKEN = {
    "overlapping ranges": (
        b"192.0.2.11 50000-54999\n192.0.2.12 54000-59999\n",
        ":2: '192.0.2.12 54000-59999': range 54000-59999 overlaps 50000-54999 on line 1",
    ),
    "range below 1024": (
        b"192.0.2.11 1000-2000\n",
        ":1: '192.0.2.11 1000-2000': range 1000-2000 starts below 1024",
    ),
    "reversed range": (
        b"192.0.2.11 54999-50000\n",
        ":1: '192.0.2.11 54999-50000': range 54999-50000: first port above last",
    ),
    "member twice": (
        b"192.0.2.11 50000-54999\n# fe1 again\n192.0.2.11 55000-59999\n",
        ":3: '192.0.2.11 55000-59999': 192.0.2.11 is already on line 1",
    ),
    "member that is a VIP": (
        b"198.51.100.10 50000-54999\n",
        ":1: '198.51.100.10 50000-54999': 198.51.100.10 is a VIP, not a member's address",
    ),
    "bad IPv6 address": (
        b"192.0.2.11 50000-54999 2001:db8::g\n",
        ":1: '192.0.2.11 50000-54999 2001:db8::g': '2001:db8::g' is not an IPv6 address",
    ),
    "NUL byte": (
        b"192.0.2.11 50000-54999\n192.0.2.12\x00 55000-59999\n",
        ":2: '192.0.2.12\\x00 55000-59999': '192.0.2.12\\x00' is not an IPv4 address",
    ),
    "non-UTF-8 bytes": (
        b"# caf\xe9\n192.0.2.11 50000-54999\n192.0.2.12 55000-5999\xff\n",
        ":3: '192.0.2.12 55000-5999\\xff': '55000-5999\\xff' is not a port range FIRST-LAST",
    ),
    "range that holds a service port": (
        b"192.0.2.11 5000-6000\n",
        ":1: '192.0.2.11 5000-6000': range 5000-6000 holds service port 5060",
    ),
}
KINDS = pytest.mark.parametrize(("text", "where"), BROKEN.values(), ids=list(BROKEN))
MEMBERS = "192.0.2.11 192.0.2.12 192.0.2.13"
NO_MAP = "balancing goes on without the member map: replies to outgoing connections from VIPs " \
    "are not steered until it is fixed (then send SIGHUP)"  # fmt: skip
KEPT = (
    "the last good member map stays in force (3 port ranges) until it is fixed (then send SIGHUP)"
)


def booted() -> KernelState:
    """A fresh frontend, with the kernel's default port range and no ingress qdisc."""
    state = fresh_state()
    sysctls = {**state.sysctls, PORT_RANGE: "32768\t60999"}
    return attrs.evolve(state, sysctls=sysctls, tc=TcState(None, frozenset()))


def started(path: Path, text: bytes | None, vips=VIPS) -> tuple[Helper, FakeKernel, Clock]:
    """A helper with `text` as its member map (None: no file), started."""
    if text is None:
        path.unlink(missing_ok=True)
    else:
        path.write_bytes(text)
    kernel, clock = FakeKernel(booted()), Clock()
    h = make_helper(kernel, clock, vips=vips, member_map=str(path))
    h.start()
    return h, kernel, clock


def taken_over(h: Helper, clock: Clock) -> None:
    """Past the takeover's end, as a helper that has been active a while."""
    clock.advance(HANDOVER_S)
    h.tick()


def answer(h: Helper, request: str) -> str:
    return render(h.handle(request))[-1]


def kernel_state(kernel: FakeKernel) -> tuple[frozenset, KernelState]:
    """Everything the helper may change: addresses (in any order), sysctls, IPVS, tc."""
    state = kernel.observe(frozenset(kernel.sysctls), "eth0")
    return frozenset(state.addresses), attrs.evolve(state, addresses=())


@KINDS
def test_at_start_the_helper_balances_as_without_a_map_and_says_why(
    tmp_path: Path, text: bytes, where: str
) -> None:
    path = tmp_path / "cgp-ipvs-members"
    plain, plain_kernel, _ = started(tmp_path / "absent", None)
    path.write_bytes(text)
    kernel, clock = FakeKernel(booted()), Clock()
    h = make_helper(kernel, clock, member_map=str(path))
    lines = info_lines(h.start())
    assert f"ERROR {path}{where}; {NO_MAP}" in lines
    assert not [line for line in lines if line.startswith("no member map")]
    assert kernel_state(kernel) == kernel_state(plain_kernel)  # the port range left alone too
    assert answer(h, f"1 ACTIVATE {MEMBERS}") == "1 OK active vips=2 members=3"
    assert answer(plain, f"1 ACTIVATE {MEMBERS}") == "1 OK active vips=2 members=3"
    assert kernel_state(kernel) == kernel_state(plain_kernel)  # balanced, nothing steered
    assert answer(h, "2 STATUS") == answer(plain, "2 STATUS") + " map=error"
    for _ in range(2):  # every refresh says it again
        clock.advance(15)
        assert f"ERROR {path}{where}; {NO_MAP}" in info_lines(h.tick())
    # fixed: SIGHUP turns steering on while active, as if the map had been good all along
    path.write_bytes(GOOD)
    assert (
        info_lines(h.reload())[0]
        == f"reloaded /etc/sysconfig/vipaddrs: 2 VIPs; {path}: 3 port ranges"
    )
    good, good_kernel, good_clock = started(tmp_path / "good", GOOD)
    assert answer(good, f"1 ACTIVATE {MEMBERS}") == "1 OK active vips=2 members=3"
    taken_over(good, good_clock)
    assert kernel_state(kernel) == kernel_state(good_kernel) != kernel_state(plain_kernel)
    assert answer(h, "3 STATUS") == answer(plain, "3 STATUS")
    clock.advance(15)
    assert not [line for line in info_lines(h.tick()) if "ERROR" in line]


@KINDS
def test_at_sighup_the_last_good_map_stays_in_force(
    tmp_path: Path, text: bytes, where: str
) -> None:
    path = tmp_path / "cgp-ipvs-members"
    h, kernel, clock = started(path, GOOD)
    assert answer(h, f"1 ACTIVATE {MEMBERS}") == "1 OK active vips=2 members=3"
    steered = kernel_state(kernel)
    path.write_bytes(text)
    assert info_lines(h.reload())[:2] == [  # (then the VIPs announced again, as at every SIGHUP)
        "reloaded /etc/sysconfig/vipaddrs: 2 VIPs",
        f"ERROR {path}{where}; {KEPT}",
    ]
    assert kernel_state(kernel) == steered
    assert answer(h, "2 STATUS").endswith("conflicts=0 map=error")
    clock.advance(15)
    assert f"ERROR {path}{where}; {KEPT}" in info_lines(h.tick())
    # membership changes still work, with the map in force
    assert answer(h, "3 ACTIVATE 192.0.2.11 192.0.2.12") == "3 OK active vips=2 members=2"
    good, good_kernel, good_clock = started(tmp_path / "good", GOOD)
    assert answer(good, "1 ACTIVATE 192.0.2.11 192.0.2.12") == "1 OK active vips=2 members=2"
    taken_over(good, good_clock)
    assert kernel_state(kernel) == kernel_state(good_kernel)
    path.write_bytes(GOOD)
    reloaded = info_lines(h.reload())
    assert reloaded[0] == f"reloaded /etc/sysconfig/vipaddrs: 2 VIPs; {path}: 3 port ranges"
    assert not [line for line in reloaded if "ERROR" in line]
    assert not answer(h, "4 STATUS").endswith("map=error")


def test_a_broken_map_never_holds_back_a_new_vip_file(tmp_path: Path) -> None:
    path = tmp_path / "cgp-ipvs-members"
    vips = list(VIPS)
    h, kernel, _ = started(path, GOOD, vips=vips)
    answer(h, f"1 ACTIVATE {MEMBERS}")
    path.write_bytes(BROKEN["member twice"][0])
    vips.append("198.51.100.12")
    assert info_lines(h.reload())[:2] == [
        "reloaded /etc/sysconfig/vipaddrs: 3 VIPs",
        f"ERROR {path}{BROKEN['member twice'][1]}; {KEPT}",
    ]
    good, good_kernel, _ = started(tmp_path / "good", GOOD, vips=vips)
    answer(good, f"1 ACTIVATE {MEMBERS}")
    assert kernel_state(kernel) == kernel_state(good_kernel)
    # a VIP file that makes a member of the last good map a VIP: that map no longer fits
    vips.append("192.0.2.14")
    assert info_lines(h.reload())[:2] == [
        "reloaded /etc/sysconfig/vipaddrs: 4 VIPs",
        f"ERROR {path}{BROKEN['member twice'][1]}; {NO_MAP}",
    ]
    assert answer(h, "2 STATUS") == (
        "2 OK role=active vips=4 members=192.0.2.11,192.0.2.12,192.0.2.13 persistence=15 "
        "syncid=0 weight=100 conflicts=0 map=error"
    )
    # the same as a helper whose map was emptied when the VIP was added
    emptied_vips = vips[:3]
    emptied, emptied_kernel, _ = started(tmp_path / "emptied", GOOD, vips=emptied_vips)
    answer(emptied, f"1 ACTIVATE {MEMBERS}")
    (tmp_path / "emptied").write_bytes(b"# nobody\n")
    emptied_vips.append("192.0.2.14")
    emptied.reload()
    assert kernel_state(kernel) == kernel_state(emptied_kernel)


def test_a_bad_vip_file_still_stops_balancing_and_the_map_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "cgp-ipvs-members"
    path.write_bytes(BROKEN["reversed range"][0])
    kernel = FakeKernel(booted())

    def bad(vipfile: str) -> tuple[str, ...]:
        raise VipFileError(vipfile, 2, "198.51.100.300", "not a valid IPv4 address")

    h = Helper(make_helper(kernel, Clock()).settings, kernel, Clock(), bad, lambda _dev: True)
    lines = info_lines(h.start())
    assert [line for line in lines if "ERROR" in line] == [
        "ERROR /etc/sysconfig/vipaddrs:2: '198.51.100.300': not a valid IPv4 address; nothing is "
        "changed until it is fixed (then send SIGHUP or restart the helper)"
    ]
    assert kernel.take() == []
    assert answer(h, "1 ACTIVATE 192.0.2.11").startswith("1 ERROR /etc/sysconfig/vipaddrs:2:")
    assert "map=" not in answer(h, "2 STATUS")
