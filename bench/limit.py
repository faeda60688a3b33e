"""The limit of benchmark 1 (inside UML): what the kernel itself needs for an ACTIVATE.

The limit is a bare process making the helper's kernel changes from the messages its netlink
kernel encodes, with only the system calls timed (lab/ways.py, lab/bare.py), the state it leaves
compared with the helper's; behind the helper's pipe, alone and as the least helper, it splits
the distance to the limit into the pipe's part, the request's own work, and the helper's own.
"""

from __future__ import annotations

from typing import Any

from .report import Table, Target, median, mm, ms, pick

LIMIT_CASES = ((256, 4), (8, 4))  # ACTIVATE within 2x of the limit for these
PAIRS = 15  # helper and limit runs of those cases at least (their medians decide the target)
PARTS = ("netlink_s", "frames_s", "frames_one_send_each_s")  # the columns after the limit
PIPED = ("piped", "least", "helper")  # behind the pipe, timed alike
Runs = dict[tuple[int, int], list[dict[str, Any]]]
NOTES = [
    "limit = a bare process making the same kernel changes as the helper's ACTIVATE from "
    "the same standby state: the messages the helper's netlink kernel encodes for the "
    "helper's plan, one datagram per protocol acked once, then the gratuitous ARP frames "
    "in one sendmmsg; its clock covers only the system calls (lab/bare.py).",
    "same state: the limit's IPVS services, real servers, sync daemons and addresses equal "
    "the helper's in every run. helper OK: from writing ACTIVATE to reading OK, so it also "
    "holds the pipe both ways, the plan, the encoding, the log lines and their write.",
    "frames, one sendto() each: the same frames again after the timed part.",
    f"runs: medians of the bench's runs of every case, and of at least {PAIRS} for the "
    "target cases (more helper and limit runs in turn): their ratio is the target, as a "
    "median of a few runs moves between runs of the bench.",
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
    "the limit behind the pipe = the limit's process (lab/bare.py piped) standing "
    "where the helper stands: started from the same standby, it answers the INTF, waits "
    "idle in read() like the helper in select(), reads the ACTIVATE line, sends the "
    "same prebuilt messages and frames, writes OK, and waits for the end of input; timed "
    "by the same reader as the helper, from writing ACTIVATE to reading OK (the same runs "
    "as the table above). No helper behind CGP's pipe answers sooner.",
    "the least helper (least) = the same process, but with only what does not depend on "
    "the members kept while standby, as the helper keeps it: once the line is read it "
    "splits it, orders the members (checking each is an address), makes the real "
    "servers' requests (the helper's encoder and kept parts) and their log lines, joins "
    "them to the kept messages and lines, sends, and writes the log and OK. It skips what "
    "the helper checks: the interface, the members against the VIPs and the host's "
    "addresses, the device's MAC; and its state. The smallest Python answer to this "
    "request we could write: its distance to the limit is not the helper's to close.",
]


def table(runs: Runs) -> tuple[Table, list[Target]]:
    """The helper's ACTIVATE -> OK beside the limit, per case; the targets of LIMIT_CASES."""
    t = Table(
        "ACTIVATE against the kernel's own limit (inside user-mode Linux)",
        "VIPs x members | runs | messages (IPVS + address) | frames | limit ms | "
        "of it netlink ms | of it frames ms (sendmmsg) | frames ms, one sendto() each | "
        "helper OK ms | helper / limit | same state".split(" | "),
        notes=[*NOTES],
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
    """LIMIT_CASES: the helper against the limit, the limit behind the helper's pipe and
    the least helper behind it, so the distance splits into the pipe's part, the part any
    Python helper spends on the request, and the helper's own beyond that."""
    cases = [vm for vm in LIMIT_CASES if vm in runs]
    t = Table(
        "Where the distance to the limit goes: the limit and the least helper behind the "
        "helper's pipe (inside user-mode Linux)",
        ["ms (median, min-max)", *(f"{v} x {m}" for v, m in cases)],
        notes=[*PIPED_NOTES],
    )
    columns = []
    for rs in (runs[vm] for vm in cases):
        oks = {"limit": pick(rs, "limit", "total_s")} | {k: pick(rs, k, "ok_s") for k in PIPED}
        lim, pipe, least, ok = (median(oks[k]) for k in ("limit", *PIPED))
        same = all(
            r[k]["state"] == r["helper"]["state"] and r[k]["errors"] == 0
            for r in rs
            for k in ("piped", "least")
        )
        same = same and all(r["least"]["cmds"] == r["helper"]["cmds"] for r in rs)
        columns.append(
            [
                *(mm(oks[k], 1000, 2, 2) for k in ("limit", *PIPED)),
                *(ms(a - b, 2) for a, b in ((pipe, lim), (least, pipe), (ok, least))),
                *(mm([s for s in pick(rs, k, "arp_s") if s], 1000, 2, 2) for k in PIPED),
                *(f"{x / lim:.2f}x" for x in (pipe, least, ok)),
                "yes" if same else "NO",
            ]
        )
    for row in zip(PIPED_ROWS, *columns):
        t.add(*row)
    return t
