"""The README's main job: a CGP load-balancer group in user-mode Linux, balancing and failing over.

Three frontends (fe1-fe3) and a client on one dual-stack LAN; every frontend runs the real
helper with the shipped sample VIP file plus one IPv6 VIP, driven over stdin/stdout as
CommuniGate Pro drives it. The demo shows who answers, then the frontends' own connections from
a VIP to a server on the LAN without and with the member map (the map also gives each
frontend's IPv6 address, so the IPv6 VIP is balanced from then on), then moves the
balancer twice (planned, then by pulling the cable) while 12 long-lived TCP connections from the
client to an IPv4 VIP, 6 to the IPv6 VIP and 4 from each frontend's VIP keep pinging, and prints
what they saw. Run it with
`make demo` (it boots the kernel through lab.uml).
"""

from __future__ import annotations

import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Callable

from .driver import HelperProcess, helper_argv
from .group import TCP, UDP, Group, Move
from .lan import ipvsadm
from .traffic import Answered, LongLived, LongLivedStats, udp_ask

ROOT = Path(__file__).resolve().parents[1]
VIPFILE = str(ROOT / "sysconfig" / "vipaddrs")
MEMBERS_SAMPLE = ROOT / "sysconfig" / "cgp-ipvs-members"
SOURCES = [f"192.0.2.{n}" for n in range(128, 188)]
VIP6 = "2001:db8:10::10"
SOURCES6 = [f"2001:db8::1:{n}" for n in range(1, 61)]
YOUNG_S = 0.05  # the planned move's connections are this young


def say(text: str = "") -> None:
    print(text, flush=True)


def failover(
    name: str, g: Group, how: Callable[[], Move], young: float | None = None
) -> tuple[bool, list[str]]:
    """Move the balancer under 12 long-lived connections to an IPv4 VIP (opened `young` s
    before the move if given) and 6 to the IPv6 one; report what the client saw."""
    with LongLived(g.client, VIP6, TCP, 6, SOURCES6[48:54], broken_after=2.0) as six:
        move = how()
        stats6 = six.stop()
    say(f"\n== {name} ==")
    opened = "" if young is None else f" opened {young:g} s before the move"
    say(f"12 long-lived SMTP connections{opened}, served by {dict(sorted(move.before.items()))}")
    if move.crashed:
        say(f"{move.old}: cable pulled and helper killed")
    else:
        say(f"{move.old} <- DEACTIVATE: {move.old_reply}")
    say(f"{move.new} <- ACTIVATE {move.members}: {move.new_reply}  ({move.new_ok_s * 1000:.0f} ms)")
    fresh = g.spread(SOURCES[24:36])
    arp = "%.0f ms" % (move.arp_s * 1000) if move.arp_s is not None else "NEVER"
    say(f"client's ARP entry for {g.vips[0]} -> {move.new}'s MAC after {arp}")
    lost = len(move.stats.conns) - len(move.survivors)
    say(
        f"connections to surviving frontends kept: {move.kept}/{len(move.survivors)}; "
        f"longest time without an answer: {move.max_gap:.3f} s"
        + (f"; lost with {move.old}: {lost}" if move.crashed else "")
    )
    # the frontends' own connections from the VIP (those of a crashed frontend die with it)
    mine = {k: v for k, v in move.outgoing.items() if not (move.crashed and k == move.old)}
    kept_out = sum(len(v.conns) - len(v.broken) for v in mine.values())
    total_out = sum(len(v.conns) for v in mine.values())
    gap_out = max((v.max_gap for v in mine.values()), default=0.0)
    say(
        f"connections the surviving frontends opened from {g.vips[0]}: {kept_out}/{total_out} "
        f"kept, longest gap {gap_out:.3f} s"
    )
    say(f"12 new connections after the move: {dict(sorted(fresh.items()))}")
    kept6, total6, gap6 = _survived(stats6, move)
    new_mac = g.client.neigh(VIP6) == g.lan[move.new].mac
    say(
        f"IPv6: client's neighbour entry for {VIP6} -> {move.new}'s MAC: {new_mac}; "
        f"connections to surviving frontends kept: {kept6}/{total6}; "
        f"longest time without an answer: {gap6:.3f} s"
    )
    fresh6 = g.spread(SOURCES6[36:42], VIP6)
    say(f"6 new IPv6 connections after the move: {dict(sorted(fresh6.items()))}")
    ok = move.kept == len(move.survivors) and move.arp_s is not None and move.max_gap < 1.0
    ok = ok and kept_out == total_out and kept6 == total6 and new_mac and gap6 < 1.0
    return ok, [
        f"{name}: {move.kept}/{len(move.survivors)} kept, longest gap {move.max_gap:.3f} s, "
        f"ACTIVATE answered in {move.new_ok_s * 1000:.0f} ms; IPv6 {kept6}/{total6} kept, "
        f"longest gap {gap6:.3f} s; outgoing from the VIP {kept_out}/{total_out} kept, "
        f"longest gap {gap_out:.3f} s"
    ]


def _survived(stats: LongLivedStats, move: Move) -> tuple[int, int, float]:
    """Kept, of how many, and the longest gap, of the connections not served by a crashed
    balancer."""
    alive = [c for c in stats.conns if not move.crashed or c.frontend != move.old]
    return sum(not c.broken for c in alive), len(alive), max((c.max_gap for c in alive), default=0)


def member_map(path: Path) -> str:
    """The shipped sample map with its example (fe1-fe3) uncommented, written to `path`."""
    lines = MEMBERS_SAMPLE.read_text().splitlines()
    path.write_text("\n".join(x[2:] if x.startswith("# 192.0.2.") else x for x in lines) + "\n")
    return "; ".join(x[2:].strip() for x in lines if x.startswith("# 192.0.2."))


def total(answered: dict[str, Answered]) -> str:
    tcp = sum(a.tcp for a in answered.values())
    udp = sum(a.udp for a in answered.values())
    count = sum(a.total for a in answered.values())
    per = ", ".join(f"{k} {v.tcp}+{v.udp}" for k, v in sorted(answered.items()))
    return f"TCP {tcp}/{count}, UDP {udp}/{count} ({per})"


def steering(g: Group, helpers: list[HelperProcess], path: Path) -> tuple[bool, list[str]]:
    """Each frontend opens 12 TCP connections and 12 UDP exchanges from a VIP to the server,
    without a member map (empty file), then with it (SIGHUP).

    Without the map, from the second VIP: IPVS keeps an entry for each reply it scheduled (TCP
    up to 2 min, UDP 5 min); with the map the filters send replies home before IPVS looks any
    entry up, so these entries no longer matter, and the second VIP keeps the two counts
    apart."""
    vip, unsteered = g.vips[0], g.vips[1]
    say("\n== connections the frontends open from a VIP (relayed mail, SIP) ==")
    before = g.outgoing(unsteered, count=12)
    say(f"without a member map, from {unsteered}: answered {total(before)}")
    ranges = member_map(path)
    for h in helpers:
        h.reload()
    say(f"member map written ({ranges}) and SIGHUP sent; fe1's helper logged, among others:")
    for mark in ("ip_local_port_range", "ipvsadm -A -f", "tc qdisc", "skbmod", "chain 0"):
        say("  " + next((x for x in helpers[0].log if mark in x), f"(no line with {mark})"))
    after = g.outgoing(vip, count=12)
    say(f"with the member map, from {vip}: answered {total(after)}")
    ok = all(a.complete for a in after.values())
    return ok, [
        f"outgoing: without a map (from {unsteered}) {total(before)}; "
        f"with it (from {vip}) {total(after)}"
    ]


def preflight(g: Group, path: Path) -> tuple[bool, list[str]]:
    """The operator's check of a frontend (`IPVSHelper.py check` with the helper's options), on
    fe1 as set up by now: every line OK."""
    say("\n== fe1: IPVSHelper.py check, with the options its helper runs with ==")
    options = ["-i", "eth0", "-f", g.vipfile, "--member-map", str(path)]
    proc = g.fe[0].run(helper_argv("check", *options), check=False)
    lines = proc.stdout.splitlines() or [f"(no output; {proc.stderr.strip()})"]
    for line in lines:
        say("  " + line)
    return proc.returncode == 0, [f"preflight check on fe1: exit {proc.returncode}, {lines[-1]}"]


def young_outgoing(g: Group, h1: HelperProcess, h3: HelperProcess) -> tuple[bool, list[str]]:
    """A planned move fe1 -> fe3 and back, each 0.3 s after every frontend opened 4 TCP
    connections and 2 UDP flows from the VIP: the sync daemon has sent none of their entries
    yet, and none is needed, since any balancer holding the member map sends each reply to its
    owner's MAC from the first packet it sees."""
    say("\n== planned moves under young outgoing connections (0.3 s old) ==")
    kept = total = 0
    for old, new in ((h1, h3), (h3, h1)):
        move = g.switch(old, new, broken_after=2.0, outgoing=4, outgoing_udp=2, settle=0.3)
        each = {
            k: f"{len(v.conns) - len(v.broken)}/{len(v.conns)}" for k, v in move.outgoing.items()
        }
        kept += sum(len(v.conns) - len(v.broken) for v in move.outgoing.values())
        total += sum(len(v.conns) for v in move.outgoing.values())
        say(f"{move.old} -> {move.new}: kept per frontend (TCP, then UDP flows) {each}")
    return kept == total, [f"young outgoing (0.3 s) across two planned moves: {kept}/{total} kept"]


def ipv6(g: Group, h1: HelperProcess) -> tuple[bool, list[str]]:
    """The IPv6 VIP, balanced since the member map gave the frontends' IPv6 addresses."""
    say(f"\n== IPv6 VIP {VIP6} (the member map's third column: each frontend's IPv6 address) ==")
    for mark in (
        f"ip -6 address add {VIP6}/128 dev eth0",
        f"ipvsadm -a -t '[{VIP6}]:0'",
        "ndptool",
    ):
        say("  " + next((x for x in h1.log if mark in x), f"(no line with {mark})"))
    table = ipvsadm(g.fe[0], "-L", "-n", "-t", f"[{VIP6}]:0")
    say(f"fe1: ipvsadm -Ln -t [{VIP6}]:0\n" + "\n".join("  " + t for t in table.splitlines()))
    spread = g.spread(SOURCES6[:30], VIP6)
    udp = Counter(udp_ask(g.client, VIP6, UDP, src=s) for s in SOURCES6[30:45])
    say(f"30 IPv6 SMTP connections from 30 addresses answered by {dict(sorted(spread.items()))}")
    say(f"15 IPv6 SIP/UDP requests from 15 other addresses answered by {dict(sorted(udp.items()))}")
    ok = set(spread) == {"fe1", "fe2", "fe3"} == set(udp)
    return ok, [
        f"balancing IPv6: TCP {dict(sorted(spread.items()))}, UDP {dict(sorted(udp.items()))}"
    ]


def main() -> int:
    entries = [line.split("#")[0].strip() for line in Path(VIPFILE).read_text().splitlines()]
    entries = [e for e in entries if e] + [VIP6]
    with tempfile.TemporaryDirectory() as tmp:
        vipfile = Path(tmp) / "vipaddrs"
        vipfile.write_text(Path(VIPFILE).read_text() + f"{VIP6}  # IPv6: the demo's addition\n")
        group = Group(
            "demo",
            entries,
            sources=SOURCES + SOURCES6,
            vipfile=str(vipfile),
            server=True,
            ipv6=True,
        )
        with group as g:
            say(
                "LAN 192.0.2.0/24 and 2001:db8::/64: fe1 .11/::11, fe2 .12/::12, fe3 .13/::13, "
                "client .100/::100 (+60 addresses each), server .200"
            )
            say(f"VIP file {VIPFILE} plus {VIP6}: {', '.join(entries)}")
            path = Path(tmp) / "cgp-ipvs-members"
            path.write_text("# no member yet\n")
            return run(g, g.start_all("--drain", "3", "--member-map", str(path), timeout=60), path)


def run(g: Group, helpers: list[HelperProcess], path: Path) -> int:
    h1, h2, h3 = helpers
    say(f"\nstarted on each frontend: {helpers[0].log[0][2:]}")
    all3 = g.members()
    say(
        f"\n== fe1 elected active balancer ==\nfe1 <- ACTIVATE {all3}: "
        f"{h1.request(f'ACTIVATE {all3}')}"
    )
    start = next(i for i, line in enumerate(h1.log) if line.startswith("00002"))
    logged = [line for line in h1.log[:start] if line.startswith("* ")]
    logged = logged[next(i for i, x in enumerate(logged) if "ipvsadm -A" in x) :]
    say(f"fe1's helper logged {len(logged)} lines into CGP's log for it, among them:")
    for mark in (
        "ipvsadm -A",
        "ipvsadm -a",
        "--start-daemon",
        "tcp_flags",
        "dev eth0",
        "arping -U",
        "arping -A",
    ):
        say("  " + next(x for x in logged if mark in x))
    vip = g.vips[0]
    table = ipvsadm(g.fe[0], "-L", "-n", "-t", f"{vip}:0")
    say("fe1: ipvsadm -Ln -t " + vip + ":0\n" + "\n".join("  " + t for t in table.splitlines()))
    spread = g.spread(SOURCES[:30])
    udp = Counter(udp_ask(g.client, vip, UDP, src=s) for s in SOURCES[30:45])
    say(f"30 SMTP connections from 30 client addresses answered by {dict(sorted(spread.items()))}")
    say(f"15 SIP/UDP requests from 15 other addresses answered by {dict(sorted(udp.items()))}")
    results = [set(spread) == {"fe1", "fe2", "fe3"}]
    report = [f"balancing: TCP {dict(sorted(spread.items()))}, UDP {dict(sorted(udp.items()))}"]
    ok, lines = steering(g, helpers, path)
    results.append(ok)
    report += lines
    ok, lines = preflight(g, path)
    results.append(ok)
    report += lines
    ok, lines = ipv6(g, helpers[0])
    results.append(ok)
    report += lines
    ok, lines = young_outgoing(g, h1, h3)
    results.append(ok)
    report += lines
    for name, move, young in (
        (
            "planned move: fe1 -> fe2 (DEACTIVATE and ACTIVATE at once)",
            lambda: g.switch(h1, h2, broken_after=2.0, outgoing=4, settle=YOUNG_S, window=5.0),
            YOUNG_S,  # their entries are still in fe1's sync queue when the move comes
        ),
        (
            "abrupt loss: fe2 leaves the LAN, fe3 takes over",
            lambda: g.crash(h2, h3, broken_after=2.0, outgoing=4),
            None,
        ),
    ):
        ok, lines = failover(name, g, move, young)
        results.append(ok)
        report += lines
    assert g.server is not None
    survivors = g.outgoing(count=12, hosts=[g.fe[0], g.fe[2]])
    say(f"\nafter both moves, fe1 and fe3 from {g.vips[0]}: answered {total(survivors)}")
    results.append(all(a.complete for a in survivors.values()))
    report.append(f"outgoing after both moves (fe1, fe3): {total(survivors)}")
    say("\n== report ==")
    for line in report:
        say(line)
    say(
        "result: "
        + (
            "all connections to surviving frontends kept"
            if all(results)
            else "SOMETHING WENT WRONG (see above)"
        )
    )
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
