"""A planned switch hands the connection table over before the old balancer lets go.

The old balancer's sync master sends its connection entries in batches (a message once full,
or once its oldest entry is 2 s old), so the entries of the connections opened just before a
switch reach the new balancer after their packets do. The new balancer keeps its backup sync
daemon and drops its TCP resets from the VIPs while it takes over: such a connection waits for
its entry instead of being reset. Three frontends, fe1 active, clients from fresh addresses
(IPv4, or IPv6 with the member map's IPv6 addresses), in both orders CGP may send the two
requests. Run inside user-mode Linux:
    python -m lab.uml -- python -m pytest tests/kernel/test_handover.py
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cgp_ipvs_helper.core.session import HANDOVER_S
from cgp_ipvs_helper.kernel.netlink.kernel import NetlinkKernel
from cgp_ipvs_helper.plan.guard import guards as plan_guards
from cgp_ipvs_helper.plan.model import GuardState
from lab.group import Group, expand
from lab.lan import Host, ipvsadm

FAMILIES = {
    "ipv4": (["198.51.100.10", "198.51.100.11"], [f"192.0.2.{n}" for n in range(64, 100)]),
    "ipv6": (["2001:db8:10::/127", "198.51.100.10"], [f"2001:db8::1:{n}" for n in range(1, 37)]),
}
YOUNG = 12  # connections opened just before the switch, 4 served by each frontend
WINDOW_S = HANDOVER_S + 2.0  # what the clients are watched for after the ACTIVATE


@pytest.fixture(params=sorted(FAMILIES))
def group(request: pytest.FixtureRequest) -> Iterator[Group]:
    entries, sources = FAMILIES[request.param]
    prefix = f"h{os.getpid() % 1000}{int(time.monotonic() * 1000) % 1000}"
    with Group(prefix[:8], entries, sources=sources, ipv6=request.param == "ipv6") as g:
        yield g


def helper_args(g: Group, tmp: Path) -> tuple[str, ...]:
    """-t 3, the default drain, and with IPv6 the member map that gives each member's address."""
    if not g.ipv6:
        return ("-t", "3")
    lines = [
        f"{fe.ip} {50000 + i * 5000}-{54999 + i * 5000} {fe.ip6}\n" for i, fe in enumerate(g.fe)
    ]
    path = tmp / "cgp-ipvs-members"
    path.write_text("".join(lines))
    return ("-t", "3", "--member-map", str(path))


def guards(host: Host) -> str:
    """Our reset guards on eth0's egress, as tc shows them."""
    out = host.run(["tc", "filter", "show", "dev", "eth0", "egress"], check=False).stdout
    return " ".join(line for line in out.splitlines() if "pref 6500" in line)


def observe_guard() -> GuardState | None:
    """What the helper reads of eth0's egress (call it inside the namespace: the netlink
    kernel opens its sockets on first use)."""
    kernel = NetlinkKernel()
    try:
        return kernel.observe(frozenset(), guard_dev="eth0").guard
    finally:
        kernel.close()


@pytest.mark.parametrize("age", [0.05, 0.01])
@pytest.mark.parametrize(
    "activate_first", [False, True], ids=["deactivate-first", "activate-first"]
)
def test_a_planned_switch_keeps_the_connections_opened_just_before_it(
    group: Group, tmp_path: Path, age: float, activate_first: bool
) -> None:
    h1, h2, _ = group.start_all(*helper_args(group, tmp_path))
    fe1, fe2, _ = group.fe
    assert h1.request(f"ACTIVATE {group.members()}").endswith("members=3")
    move = group.switch(
        h1, h2, count=YOUNG, settle=age, activate_first=activate_first, window=WINDOW_S
    )
    assert set(move.before) == {"fe1", "fe2", "fe3"}, move.summary()
    assert (move.old_reply or "").endswith("OK standby"), move.old_reply
    assert " OK active " in move.new_reply, move.new_reply
    assert move.kept == YOUNG, move.summary()
    assert move.one_server_each, move.summary()  # each went on with its own real server
    # the takeover is over: the new balancer is a plain active one again
    daemons = ipvsadm(fe2, "-L", "-n", "--daemon")
    assert "master sync daemon" in daemons and "backup sync daemon" not in daemons, daemons
    assert fe2.sysctl("net.ipv4.vs.backup_only") == "1"
    assert guards(fe2) == ""
    assert guards(fe1) == ""


def test_while_taking_over_the_new_balancer_receives_and_guards(
    group: Group, tmp_path: Path
) -> None:
    h1, h2, _ = group.start_all(*helper_args(group, tmp_path))
    fe2 = group.fe[1]
    assert h1.request(f"ACTIVATE {group.members()}").endswith("members=3")
    assert h1.request("DEACTIVATE").endswith("OK standby")
    assert h2.request(f"ACTIVATE {group.members()}").endswith("members=3")
    daemons = ipvsadm(fe2, "-L", "-n", "--daemon")
    assert "master sync daemon" in daemons and "backup sync daemon" in daemons, daemons
    assert fe2.sysctl("net.ipv4.vs.backup_only") == "0"  # or the backup would block forwarding
    shown = guards(fe2)
    assert "pref 65002" in shown, shown
    assert ("pref 65003" in shown) == group.ipv6, shown
    # read back as the helper made them (a refresh leaves them alone)
    read = fe2.call(observe_guard)
    assert read is not None and read.qdisc == "clsact"
    vips = [v for v in expand(group.entries) if group.ipv6 or ":" not in v]
    assert {g for _, _, g in read.guards} == set(plan_guards(vips)), read
    deadline = time.monotonic() + HANDOVER_S + 5
    while "backup sync daemon" in ipvsadm(fe2, "-L", "-n", "--daemon"):
        assert time.monotonic() < deadline, "the takeover did not end"
        time.sleep(0.2)
    assert any(line.startswith("* takeover over") for line in h2.log), h2.log


def test_a_crash_keeps_the_young_connections_the_new_balancer_serves(
    group: Group, tmp_path: Path
) -> None:
    """Connections 0.05 s old at a crash: those the new balancer serves itself are kept however
    young (its own stack has them). Those of the other survivors are kept only if the dead
    balancer's sync master had sent their entries, which it does once a message is full or its
    oldest entry 2 s old: no helper can promise them (older ones: test_scenarios)."""
    h1, h2, _ = group.start_all(*helper_args(group, tmp_path))
    assert h1.request(f"ACTIVATE {group.members()}").endswith("members=3")
    move = group.crash(h1, h2, count=YOUNG, settle=0.05, window=WINDOW_S)
    assert move.new_reply.endswith("members=2"), move.new_reply
    own = [c for c in move.survivors if c.frontend == move.new]
    assert own and all(not c.broken for c in own), move.summary()
