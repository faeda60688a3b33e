"""Members joining, leaving and re-weighted while active, in a real kernel: the helper plans against
the kernel as it last made it, so after each change the kernel's table must be the plan, and a
table changed behind its back must still be repaired (at once when a change fails on it, else by
the refresh). A member whose MAC comes after the takeover is steered by a read of the neighbours
alone, a second later; the refresh still repairs the steering changed behind its back."""

from __future__ import annotations

from pathlib import Path

from cgp_ipvs_helper.core.converge import RECHECKED
from cgp_ipvs_helper.core.engine import Helper
from cgp_ipvs_helper.core.protocol import Reply, Response
from cgp_ipvs_helper.core.session import HANDOVER_S
from cgp_ipvs_helper.kernel.interface import Kernel
from cgp_ipvs_helper.plan.model import Role, Settings
from cgp_ipvs_helper.plan.operations import Operation
from cgp_ipvs_helper.plan.outgoing import RESOLVED_WITHIN
from cgp_ipvs_helper.plan.planner import desired
from cgp_ipvs_helper.plan.steering import RangeFilter
from cgp_ipvs_helper.plan.tcops import AddFilter, DelFilter, filter_changes
from lab.box import OUR_IP, Box, ip_batch, ipvsadm_rules, run
from lab.probe import TimingKernel

VIPS = ["203.0.113.8/30", "2001:db8:10::/126"]  # 4 IPv4 and 4 IPv6 VIPs
OTHER = "192.0.2.15"  # a second address of this host on the LAN
MEMBERS = [OUR_IP, OTHER, "192.0.2.12", "192.0.2.13", "192.0.2.14"]


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def _helper(box: Box, tmp: Path, kernel: Kernel | None = None) -> tuple[Helper, Clock]:
    vipfile, member_map = tmp / "vips", tmp / "members"
    vipfile.write_text("".join(f"{v}\n" for v in VIPS))
    member_map.write_text(
        "".join(
            f"{ip} {50000 + 1000 * i}-{50999 + 1000 * i} 2001:db8::{i + 1:x}\n"
            for i, ip in enumerate(MEMBERS)
        )
    )
    ip_batch(f"address add {OTHER}/24 dev eth0\n")
    settings = Settings(iface="eth0", weight=50, vipfile=str(vipfile), member_map=str(member_map))
    clock = Clock()
    helper = Helper(settings, kernel or box.kernel, clock=clock, link_exists=lambda _dev: True)
    helper.start()
    return helper, clock


def _vip_rules() -> set[str]:
    """The real servers of the VIPs' services as `ipvsadm -Sn` lists them (the steering's
    firewall-mark services have their own tests)."""
    return {r for r in ipvsadm_rules() if r.startswith(("-a -t", "-a -u"))}


def _planned(helper: Helper) -> set[str]:
    """The same rules for the real servers the helper's plan wants now."""
    ses = helper.session
    want = desired(
        helper.settings, helper.vips, ses.role, ses.members, ses.self_ip, frozenset(), helper.map
    )

    def host(ip: str) -> str:
        return f"[{ip}]" if ":" in ip else ip

    flag = {"tcp": "-t", "udp": "-u"}
    return {
        f"-a {flag[d.service.proto]} {host(d.service.vip)}:0 -r {host(d.ip)}:0 -g -w {d.weight}"
        for d in want.dests
        if not d.service.fwmark
    }


def _ok(reply: Reply, seq: str, members: int) -> None:
    assert reply.response == Response(seq, "OK", f"active vips=8 members={members}"), reply


def _texts(reply: Reply) -> list[str]:
    return [text for i in reply.infos for text in i.texts()]


def test_after_each_change_of_the_members_the_kernel_table_is_the_plan(
    box: Box, tmp_path: Path
) -> None:
    helper, _clock = _helper(box, tmp_path)
    _ok(helper.handle("1 ACTIVATE " + " ".join(MEMBERS[:4])), "1", 4)
    assert _vip_rules() == _planned(helper) and len(_planned(helper)) == 8 * 2 * 4
    steps = [
        ("2", MEMBERS[:3], "ipvsadm -d"),  # a member leaves
        ("3", MEMBERS[:3] + MEMBERS[4:], "ipvsadm -a"),  # one joins
        ("4", [OTHER, OUR_IP, *MEMBERS[2:3], *MEMBERS[4:]], "ipvsadm -e"),  # self's weight moves
    ]
    for seq, members, verb in steps:
        out = helper.handle(f"{seq} ACTIVATE " + " ".join(members))
        _ok(out, seq, len(members))
        changed = [t for t in _texts(out) if t.startswith("ipvsadm")]
        assert changed and all(t.startswith(verb) for t in changed), changed
        assert _vip_rules() == _planned(helper), seq
    weights = {r.split(" -r ")[1] for r in _vip_rules() if r.startswith("-a -t 203.0.113.8:0")}
    assert weights == {f"{OTHER}:0 -g -w 50", f"{OUR_IP}:0 -g -w 100"} | {
        f"{ip}:0 -g -w 100" for ip in (MEMBERS[2], MEMBERS[4])
    }
    assert len(_planned(helper)) == 8 * 2 * 4


def test_a_table_changed_behind_the_helpers_back_is_repaired(box: Box, tmp_path: Path) -> None:
    helper, clock = _helper(box, tmp_path)
    _ok(helper.handle("1 ACTIVATE " + " ".join(MEMBERS[:4])), "1", 4)
    clock.now += HANDOVER_S
    helper.tick()  # the takeover's end reads the kernel: from here on it is trusted
    # by hand: a real server the next change takes is gone, another is re-weighted
    run("ipvsadm", "-d", "-t", "203.0.113.9:0", "-r", MEMBERS[3])
    run("ipvsadm", "-e", "-u", "[2001:db8:10::2]:0", "-r", "[2001:db8::3]:0", "-g", "-w", "7")
    out = helper.handle("2 ACTIVATE " + " ".join(MEMBERS[:3]))
    _ok(out, "2", 3)  # the failure made the helper read the kernel and repair it at once
    texts = _texts(out)
    assert f"FAILED ipvsadm -d -t 203.0.113.9:0 -r {MEMBERS[3]}: No such file or directory" in (
        texts
    ), texts
    assert "the kernel differs from what this helper made: reading it again" in texts
    assert _vip_rules() == _planned(helper)

    run("ipvsadm", "-e", "-t", "203.0.113.10:0", "-r", MEMBERS[2], "-g", "-w", "9")
    run("ipvsadm", "-d", "-u", "[2001:db8:10::3]:0", "-r", "[2001:db8::1]:0")
    _ok(helper.handle("3 ACTIVATE " + " ".join(MEMBERS[:2])), "3", 2)  # nothing fails there
    assert _vip_rules() != _planned(helper)  # trusted until the refresh
    clock.now += helper.settings.timeout
    texts = _texts(helper.tick())
    assert "refresh: the kernel drifted from the desired state" in texts
    assert _vip_rules() == _planned(helper) and len(_planned(helper)) == 8 * 2 * 2


def _dropped(box: Box) -> set[tuple[int, bool]]:
    """The ranges (first port, IPv6) whose filters drop: their owner's MAC was not known."""
    tc = box.kernel.read_tc("eth0", ())
    return {(f.first, f.ipv6) for *_k, f in tc.filters if isinstance(f, RangeFilter) and f.dropped}


def _steering_changes(helper: Helper) -> list[Operation]:
    """The filters a full read and plan would change."""
    actual = helper._read()
    ses = helper.session
    want = desired(
        helper.settings,
        helper.vips,
        Role.ACTIVE,
        ses.members,
        ses.self_ip,
        member_map=helper.map,
        actual=actual,
    )
    assert want.filters is not None and actual.tc is not None
    return filter_changes(want.iface, want.filters, actual.tc)


def test_a_mac_that_comes_later_is_steered_by_the_neighbours_alone(
    box: Box, tmp_path: Path
) -> None:
    timing = TimingKernel(box.kernel)
    helper, clock = _helper(box, tmp_path, timing)
    _ok(helper.handle("1 ACTIVATE " + " ".join(MEMBERS[:4])), "1", 4)
    # nobody holds .12-.14; OTHER is this host's, but only OUR_IP's range is its own
    late = {(50000 + 1000 * i, v6) for i in (1, 2, 3, 4) for v6 in (False, True)}
    assert _dropped(box) == late
    ip_batch(  # .12 answers meanwhile (both families)
        f"neigh replace {MEMBERS[2]} lladdr 02:00:00:00:00:12 dev eth0 nud permanent\n"
        "neigh replace 2001:db8::3 lladdr 02:00:00:00:00:12 dev eth0 nud permanent\n"
    )
    timing.reset()
    clock.now += RESOLVED_WITHIN
    texts = _texts(helper.tick())
    assert RECHECKED in texts and "refresh: the kernel drifted from the desired state" not in texts
    assert not timing.spent["observe"]  # no IPVS read, and only filters changed:
    assert {type(op) for op in timing.ops} == {DelFilter, AddFilter}
    assert _dropped(box) == late - {(52000, False), (52000, True)}
    assert _steering_changes(helper) == []
    # the helper's reads asked the kernel to resolve its members, but not one set by hand
    assert "PERMANENT" in run("ip", "neigh", "show", MEMBERS[2], "dev", "eth0")
    assert helper.recheck_due is None  # once; .13 and .14 wait for the refresh

    clock.now += HANDOVER_S
    helper.tick()  # the takeover's end (it plans the steering too)
    # behind the helper's back: .12's IPv4 filter goes; the refresh (a full read) repairs it
    steered = next(
        (p, c, h) for p, c, h, f in box.kernel.read_tc("eth0", ()).filters
        if isinstance(f, RangeFilter) and f.first == 52000 and not f.ipv6
    )  # fmt: skip
    box.kernel.apply(DelFilter("eth0", *steered))
    assert _steering_changes(helper) != []
    clock.now += helper.settings.timeout
    assert "refresh: the kernel drifted from the desired state" in _texts(helper.tick())
    assert _steering_changes(helper) == [] and _vip_rules() == _planned(helper)
