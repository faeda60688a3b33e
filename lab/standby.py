"""One frontend in standby, the start of every ACTIVATE the benchmarks time.

`standby` gives fresh namespaces (fe at 192.0.2.11 and a client on a LAN) with a real-mode
helper on fe, started and in standby: every ACTIVATE measured starts from there (the helper's,
the probe's, and, with the helper killed, the classic script's and the limit's); `activate`
times one, `probed` a probe's; `snapshot` is what a namespace's kernel holds, to compare two
ways of reaching a state. `lab.sniff.ArpWatch` times the first gratuitous ARP the client receives.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cgp_ipvs_helper.kernel.netlink.kernel import NetlinkKernel
from lab.driver import HelperProcess, Response, helper_argv
from lab.group import expand
from lab.lan import Host, Lan, unique
from lab.netns import in_netns

FE_IP = "192.0.2.11"


def vips_in(vipfile: str) -> list[str]:
    with open(vipfile) as f:
        return expand(f.read().split())


def members_of(count: int) -> list[str]:
    """This frontend first, then addresses on the LAN that nobody holds (IPVS accepts them)."""
    return [FE_IP] + [f"192.0.2.{12 + i}" for i in range(count - 1)]


@contextmanager
def standby(
    tag: str, vipfile: str, *options: str, argv: Sequence[str] = (), ipv6: bool = False
) -> Iterator[tuple[HelperProcess, Host, Host]]:
    """(helper, fe, client): `python -m cgp_ipvs_helper` (or `argv`) -f vipfile -i eth0
    `options`, answering."""
    with Lan(unique(tag), ipv6=ipv6) as lan:
        fe, client = lan.add_host("fe", FE_IP), lan.add_host("client", "192.0.2.100")
        args = [*(argv or helper_argv()), "-f", vipfile, "-i", "eth0", *options]
        helper = HelperProcess(fe, argv=args, timed=True)
        try:
            helper.wait_started(timeout=180)
            yield helper, fe, client
        finally:
            helper.kill()


def activate(helper: HelperProcess, members: Sequence[str], vips: int) -> Response:
    """ACTIVATE, timed from writing the line to reading the OK."""
    reply = helper.exchange("ACTIVATE " + " ".join(members), timeout=180)
    if f" OK active vips={vips} " not in reply.line + " ":
        raise RuntimeError(f"ACTIVATE answered {reply.line!r}")
    return reply


def probed(probe: HelperProcess, members: list[str], path: Path, vips: int) -> dict[str, Any]:
    """The timed ACTIVATE of a started lab.probe and the record it wrote about it (`path`);
    before it, the pipe's round trip alone (INTF: no kernel work)."""
    intf = statistics.median([probe.exchange("INTF 1", timeout=60).seconds for _ in range(5)])
    reply = activate(probe, members, vips)
    probe.request("STATUS", timeout=180)  # answered once the record is written
    return {**json.loads(path.read_text()), "wall_ok": reply.seconds, "wall_intf": intf}


def snapshot(host: Host) -> tuple[object, ...]:
    """IPVS services, real servers, sync daemons, addresses and eth0's reset guard of `host`
    (the helper's reader)."""
    with in_netns(host.ns):
        kernel = NetlinkKernel()
        try:
            s = kernel.observe(frozenset(), guard_dev="eth0")
        finally:
            kernel.close()
    return s.services, s.dests, s.daemons, frozenset((a.dev, a.ip) for a in s.addresses), s.guard
