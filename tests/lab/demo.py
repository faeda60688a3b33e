"""The README's main job: a CGP load-balancer group in user-mode Linux, balancing and failing over.

Three frontends (fe1-fe3) and a client on one LAN; every frontend runs the real helper with the
shipped sample VIP file, driven over stdin/stdout as CommuniGate Pro drives it. The demo shows
who answers, then moves the balancer twice (planned, then by pulling the cable) while 12
long-lived TCP connections keep pinging, and prints what the client saw. Run it with
`make demo` (it boots the kernel through tests.lab.uml).
"""

from __future__ import annotations

import signal
import sys
import time
from collections import Counter
from pathlib import Path

from .driver import HelperProcess
from .net import EchoService, Host, Lan, LongLived, ipvsadm, tcp_ask, udp_ask

ROOT = Path(__file__).resolve().parents[2]
VIPFILE = str(ROOT / "sysconfig" / "vipaddrs")
VIP = "198.51.100.10"
SOURCES = [f"192.0.2.{n}" for n in range(128, 188)]
SMTP, SIP = 25, 5060


def say(text: str = "") -> None:
    print(text, flush=True)


def ask_many(client: Host, sources: list[str]) -> Counter:
    return Counter(tcp_ask(client, VIP, SMTP, src=s) for s in sources)


def failover(
    name: str,
    client: Host,
    old: HelperProcess | None,
    new: HelperProcess,
    members: str,
    cut: Host | None = None,
) -> tuple[bool, list[str]]:
    """Move the balancer under 12 long-lived connections; report what the client saw."""
    say(f"\n== {name} ==")
    with LongLived(client, VIP, SMTP, count=12, sources=SOURCES[:12], broken_after=2.0) as ll:
        before = ll.snapshot().by_frontend
        say(f"12 long-lived SMTP connections, served by {dict(sorted(before.items()))}")
        time.sleep(3.0)  # the master sync daemon sends its connection table about every 2 s
        t0 = time.monotonic()
        if cut is not None:
            cut.link_down()
            assert old is not None
            old.proc.send_signal(signal.SIGKILL)
            say(f"{cut.name}: cable pulled and helper killed")
        elif old is not None:
            old.send("00100 DEACTIVATE")
        new.send(f"00100 ACTIVATE {members}")
        reply = new.wait_response("00100")
        answered = time.monotonic() - t0
        if old is not None and cut is None:
            say(f"{old.host.name} <- DEACTIVATE: {old.wait_response('00100')}")
        say(f"{new.host.name} <- ACTIVATE {members}: {reply}  ({answered * 1000:.0f} ms)")
        arp = None
        while time.monotonic() - t0 < 3 and arp is None:
            if client.neigh(VIP) == new.host.mac:
                arp = time.monotonic() - t0
            time.sleep(0.01)
        time.sleep(3.5)
        stats = ll.stop()
    lost = {c.frontend for c in stats.conns if c.broken}
    survivors = [c for c in stats.conns if cut is None or c.frontend != cut.name]
    kept = sum(not c.broken for c in survivors)
    gap = max((c.max_gap for c in survivors), default=0.0)
    fresh = ask_many(client, SOURCES[24:36])
    say(
        f"client's ARP entry for {VIP} -> {new.host.name}'s MAC after "
        f"{'%.0f ms' % (arp * 1000) if arp is not None else 'NEVER'}"
    )
    say(
        f"connections to surviving frontends kept: {kept}/{len(survivors)}; "
        f"longest time without an answer: {gap:.3f} s"
        + (
            f"; lost with {', '.join(sorted(lost))}: {len(stats.conns) - len(survivors)}"
            if cut is not None
            else ""
        )
    )
    say(f"12 new connections after the move: {dict(sorted(fresh.items()))}")
    ok = kept == len(survivors) and arp is not None and gap < 1.0
    return ok, [
        f"{name}: {kept}/{len(survivors)} kept, longest gap {gap:.3f} s, "
        f"ACTIVATE answered in {answered * 1000:.0f} ms"
    ]


def main() -> int:
    with Lan("demo") as lan:
        fes = [lan.add_host(f"fe{i}", f"192.0.2.{10 + i}") for i in (1, 2, 3)]
        client = lan.add_host("client", "192.0.2.100", extra_ips=SOURCES)
        vips = [line.split("#")[0].strip() for line in open(VIPFILE)]
        say("LAN 192.0.2.0/24: fe1 .11, fe2 .12, fe3 .13, client .100 (+60 addresses)")
        say(f"VIP file {VIPFILE}: {', '.join(v for v in vips if v)}")
        with EchoService(
            fes,
            [f"198.51.100.{i}" for i in (10, 11, 12, 13, 20, 21, 22, 23)],
            tcp_ports=[SMTP],
            udp_ports=[SIP],
        ):
            helpers = [HelperProcess(fe, VIPFILE, "--drain", "3") for fe in fes]
            try:
                return run(client, fes, helpers)
            finally:
                for h in helpers:
                    h.kill()


def run(client: Host, fes: list[Host], helpers: list[HelperProcess]) -> int:
    h1, h2, h3 = helpers
    for h in helpers:
        h.wait_started()
    say(f"\nstarted on each frontend: {helpers[0].log[0][2:]}")
    all3 = " ".join(fe.ip for fe in fes)
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
        "--stop-daemon",
        "--start-daemon",
        "dev eth0",
        "arping -U",
        "arping -A",
    ):
        say("  " + next(x for x in logged if mark in x))
    table = ipvsadm(fes[0], "-L", "-n", "-t", f"{VIP}:0")
    say("fe1: ipvsadm -Ln -t " + VIP + ":0\n" + "\n".join("  " + t for t in table.splitlines()))
    spread = ask_many(client, SOURCES[:30])
    udp = Counter(udp_ask(client, VIP, SIP, src=s) for s in SOURCES[30:45])
    say(f"30 SMTP connections from 30 client addresses answered by {dict(sorted(spread.items()))}")
    say(f"15 SIP/UDP requests from 15 other addresses answered by {dict(sorted(udp.items()))}")
    results = [set(spread) == {"fe1", "fe2", "fe3"}]
    report = [f"balancing: TCP {dict(sorted(spread.items()))}, UDP {dict(sorted(udp.items()))}"]
    ok, lines = failover(
        "planned move: fe1 -> fe2 (DEACTIVATE and ACTIVATE at once)", client, h1, h2, all3
    )
    results.append(ok)
    report += lines
    ok, lines = failover(
        "abrupt loss: fe2 leaves the LAN, fe3 takes over",
        client,
        h2,
        h3,
        f"{fes[0].ip} {fes[2].ip}",
        cut=fes[1],
    )
    results.append(ok)
    report += lines
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
