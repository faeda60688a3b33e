"""The activation benchmark's limit (inside UML): what the kernel itself needs for an ACTIVATE,
and where the helper's distance to it goes."""

from __future__ import annotations

from typing import Any

from .report import Table, Target, median, mm, ms, pick

LIMIT_CASES = ((256, 4), (8, 4))  # ACTIVATE within 2x of the limit for these
PAIRS = 15  # helper and limit runs of those cases at least (their medians decide the target)
PARTS = ("netlink_s", "frames_s", "frames_one_send_each_s")  # the columns after the limit
PIPED = ("piped", "least", "helper")  # behind the pipe, timed alike
Runs = dict[tuple[int, int], list[dict[str, Any]]]
NOTES = [
    "limit = a bare process (lab/bare.py) making, from the same standby, the kernel changes of "
    "the helper's ACTIVATE (a takeover, planned by the helper's planner) from the messages its "
    "netlink kernel encodes: the sysctls written, one datagram per protocol acked once, then "
    "the gratuitous ARP frames in one sendmmsg (and one sendto() each, untimed); its clock "
    "covers only the system calls. same state: its IPVS services, real servers, sync daemons, "
    "addresses and reset guard equal the helper's in every run.",
    "helper OK: ACTIVATE written -> OK read, so also the pipe both ways, the plan, the "
    "encoding, the log lines and their write.",
    f"runs: of every case the bench's, of the target cases at least {PAIRS} (more helper and "
    "limit runs in turn), as a median of a few moves between runs of the bench.",
]
PIPED_ROWS = [
    "limit: the system calls alone",
    "the limit behind the pipe: ACTIVATE written -> OK read",
    "the least helper behind the pipe: ACTIVATE written -> OK read",
    "helper: ACTIVATE written -> OK read",
    "of the helper's: the pipe, the wake-up, the read (limit behind the pipe - limit)",
    "of the helper's: the request's own work in Python (least helper - limit behind the pipe)",
    "of the helper's: its own beyond the least helper",
    "first gratuitous ARP after: the limit behind the pipe",
    "first gratuitous ARP after: the least helper",
    "first gratuitous ARP after: the helper",
    "the limit behind the pipe / limit",
    "the least helper / limit",
    "helper / limit",
    "same state, and the least helper logs the helper's lines (every run)",
]
PIPED_NOTES = [
    "the limit behind the pipe = the limit's process where the helper stands: from the same "
    "standby it answers the INTF, waits in read(), reads the ACTIVATE, sends the same messages "
    "and frames and writes OK, timed by the same reader in the same runs as the helper. No "
    "helper behind CGP's pipe answers sooner.",
    "the least helper = that process keeping while standby, as the helper does, what does not "
    "depend on the members: it splits the line, orders and checks the members, makes the real "
    "servers' requests (the helper's encoder and kept parts) and log lines, sends, writes the "
    "log and OK; it skips the helper's checks (interface, members against the VIPs and the "
    "host's addresses, the MAC) and state: the smallest Python answer we could write.",
]


def table(runs: Runs) -> tuple[Table, list[Target]]:
    """The helper's ACTIVATE -> OK beside the limit, per case; the targets of LIMIT_CASES."""
    t = Table(
        "ACTIVATE against the kernel's own limit (inside user-mode Linux)",
        "VIPs x members | runs | messages (IPVS + addresses, tc) | frames | limit ms | "
        "of it netlink ms | of it frames ms (sendmmsg) | frames ms, one sendto() each | "
        "helper OK ms | helper / limit | same state".split(" | "),
        notes=list(NOTES),
    )
    targets = []
    for (v, m), rs in runs.items():
        total, ok, n = pick(rs, "limit", "total_s"), pick(rs, "helper", "ok_s"), rs[0]["limit"]
        ratio, n = median(ok) / median(total), n["counts"]
        parts = [ms(median(pick(rs, "limit", k)), 2) for k in PARTS]
        cells = [f"{v} x {m}", len(rs), f"{n.get('genl', 0)} + {n.get('rtnl', 0)}"]
        same = all(x["limit"]["state"] == y["helper"]["state"] for x in rs for y in rs)
        cells += [n.get("frames", 0), mm(total, 1000, 2, 1), *parts, mm(ok, 1000, 2, 1)]
        t.add(*cells, f"{ratio:.2f}x", "yes" if same else "NO")
        if (v, m) in LIMIT_CASES:
            name = f"{v} VIPs x {m} members: OK within 2x of the limit"
            targets.append(Target("activation", name, "<= 2x", f"{ratio:.2f}x", ratio <= 2))
    return t, targets


def piped_table(runs: Runs) -> Table:
    """LIMIT_CASES: the helper's distance to the limit split into the pipe's part, the part any
    Python helper spends on the request, and its own."""
    columns = []
    for rs in (runs[vm] for vm in LIMIT_CASES):
        oks = {"limit": pick(rs, "limit", "total_s")} | {k: pick(rs, k, "ok_s") for k in PIPED}
        lim, pipe, least, ok = (median(oks[k]) for k in ("limit", *PIPED))
        same = all(
            r[k]["state"] == r["helper"]["state"] and not r[k]["errors"]
            for r in rs
            for k in PIPED[:2]
        ) and all(r["least"]["cmds"] == r["helper"]["cmds"] for r in rs)
        columns.append(
            [
                *(mm(oks[k], 1000, 2, 2) for k in ("limit", *PIPED)),
                *(ms(a - b, 2) for a, b in ((pipe, lim), (least, pipe), (ok, least))),
                *(mm([s for s in pick(rs, k, "arp_s") if s], 1000, 2, 2) for k in PIPED),
                *(f"{x / lim:.2f}x" for x in (pipe, least, ok)),
                "yes" if same else "NO",
            ]
        )
    return Table(
        "Where the distance to the limit goes: the limit and the least helper behind the "
        "helper's pipe (inside user-mode Linux)",
        ["ms (median, min-max)", *(f"{v} x {m}" for v, m in LIMIT_CASES)],
        [list(row) for row in zip(PIPED_ROWS, *columns)],
        list(PIPED_NOTES),
    )
