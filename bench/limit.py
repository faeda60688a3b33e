"""The limit of benchmark 1 (inside UML): what the kernel itself needs for an ACTIVATE.

A bare process makes the same kernel changes as the helper's ACTIVATE from standby: the same
IPVS and address messages byte for byte (encoded by the helper's own netlink kernel from the
helper's own plan, the gratuitous ARP frames as the helper builds them), in one netlink
datagram per channel run (one IPVS, one rtnetlink) acked once, then the frames in one
sendmmsg. Everything is built and every socket opened before the clock starts; the clock
covers only the system calls: sending, the kernel's work, the acks. Afterwards the namespace's
state is read and compared with the helper's (services, real servers, daemons, addresses).

The same frames are also sent with one send() each (after the timed part), to show what the
system calls alone cost in this kernel.

    python -m bench.limit DATA.pickle    (the bare process: prints one JSON object)
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any

from cgp_ipvs_helper import arp, mmsg, nd
from cgp_ipvs_helper.model import Settings
from cgp_ipvs_helper.netlink import HANDLERS, NetlinkKernel
from cgp_ipvs_helper.nlsocket import NETLINK_GENERIC, NETLINK_ROUTE
from cgp_ipvs_helper.nlwire import NLMSGHDR
from cgp_ipvs_helper.planner import Role, announce, desired_state, plan, sysctl_paths
from tests.lab.netns import in_netns

from .lab import FE_IP, fresh_lan, snapshot
from .report import Table, Target, median, ms, ratio, spread

LIMIT_CASES = ((256, 4), (8, 4))  # issue 12: ACTIVATE within 2x of the limit for these
LIMIT_RATIO = 2.0
NLM_F_REQUEST, NLM_F_ACK, NLMSG_ERROR = 1, 4, 2
SOL_NETLINK, NETLINK_CAP_ACK = 270, 10
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33
_PROTOCOLS = {"genl": NETLINK_GENERIC, "rtnl": NETLINK_ROUTE}


def _datagram(requests: list[tuple[int, int, bytes]], first: int) -> bytes:
    """The requests as one netlink datagram, sequence numbers from `first`, the last acked."""
    last = first + len(requests) - 1
    return b"".join(
        NLMSGHDR.pack(
            16 + len(body), mtype, flags | NLM_F_REQUEST | (NLM_F_ACK if seq == last else 0), seq, 0
        )
        + body
        for seq, (mtype, flags, body) in enumerate(requests, first)
    )


def _frame(mac: bytes, kind: int, addr: bytes) -> tuple[int, bytes]:
    """(Ethernet protocol, frame) as the helper's frame sender builds it."""
    if kind == arp.NA:
        return nd.ETH_P_IPV6, nd.frame(addr, mac)
    return arp.ETH_P_ARP, arp.frame(mac, addr, kind == arp.REPLY)


def build(vipfile: str, vips: list[str], members: list[str], mac: bytes) -> dict[str, Any]:
    """In the frontend's namespace, in standby: the helper's ACTIVATE, encoded by its kernel."""
    kernel = NetlinkKernel()
    try:
        state = kernel.observe(sysctl_paths("eth0"))
        settings = Settings(vipfile=vipfile, iface="eth0")
        desired = desired_state(settings, vips, Role.ACTIVE, members, FE_IP)
        ops = plan(desired, state) + announce(vips, "eth0")
        runs: list[tuple[str, list[Any]]] = []
        for op in ops:
            channel = HANDLERS[type(op)].channel
            if channel is None:
                raise RuntimeError(f"an operation the limit cannot batch: {op}")
            if not runs or runs[-1][0] != channel:
                runs.append((channel, []))
            runs[-1][1].append(kernel._encode(op))
    finally:
        kernel.close()
    datagrams, frames, seq, counts = [], [], 1, {}
    for channel, requests in runs:
        counts[channel] = counts.get(channel, 0) + len(requests)
        if channel == "frames":
            frames += [_frame(mac, kind, addr) for _dev, kind, addr in requests]
            continue
        datagrams.append((_PROTOCOLS[channel], _datagram(requests, seq), seq + len(requests) - 1))
        seq += len(requests)
    return {"datagrams": datagrams, "frames": frames, "counts": counts}


def measure(vipfile: str, vips: list[str], members: list[str]) -> dict[str, Any]:
    """One limit run in fresh namespaces from the helper's standby; its times and the state."""
    from .activation import standby  # (activation imports this module)

    with fresh_lan("lim") as (_lan, fe, _client), tempfile.TemporaryDirectory() as tmp:
        standby(fe, vipfile)
        path = os.path.join(tmp, "limit.pickle")
        with in_netns(fe.ns):
            data = build(vipfile, vips, members, bytes.fromhex(fe.mac.replace(":", "")))
            with open(path, "wb") as f:
                pickle.dump(data, f)
            out = subprocess.run(
                [sys.executable, "-m", "bench.limit", path], capture_output=True, text=True
            )
        if out.returncode != 0:
            raise RuntimeError(f"bench.limit failed: {out.stderr[-500:]}")
        result: dict[str, Any] = json.loads(out.stdout)
        result["counts"] = data["counts"]
        result["bytes"] = [len(d) for _p, d, _l in data["datagrams"]]
        result["state"] = snapshot(fe)
        return result


def _socket(proto: int) -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, proto)
    sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 8 << 20)  # the whole run in one datagram
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
    sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
    sock.bind((0, 0))
    return sock


def bare(path: str) -> dict[str, Any]:
    """The bare process: load, open, then time the system calls alone."""
    with open(path, "rb") as f:
        data = pickle.load(f)
    socks = {proto: _socket(proto) for proto in _PROTOCOLS.values()}
    packet = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    packet.bind(("eth0", 0))
    index = socket.if_nametoindex("eth0")
    frames = mmsg.Round([(arp.sockaddr_ll(index, proto), f) for proto, f in data["frames"]])
    buf = bytearray(1 << 16)
    errors = 0
    t0 = time.perf_counter()
    for proto, datagram, last in data["datagrams"]:
        sock = socks[proto]
        sock.send(datagram)
        acked = False
        while not acked:
            n = sock.recv_into(buf)
            offset = 0
            while offset + 20 <= n:
                length, mtype, _flags, seq, _pid = NLMSGHDR.unpack_from(buf, offset)
                if mtype == NLMSG_ERROR:
                    errors += struct.unpack_from("=i", buf, offset + 16)[0] != 0
                    acked |= seq == last
                offset += (length + 3) & ~3
    t1 = time.perf_counter()
    sent = 0
    while sent < len(data["frames"]):
        sent += frames.send(packet.fileno(), sent)
    t2 = time.perf_counter()
    for proto, frame in data["frames"]:
        packet.sendto(frame, ("eth0", proto))
    t3 = time.perf_counter()
    return {
        "netlink_s": t1 - t0,
        "frames_s": t2 - t1,
        "total_s": t2 - t0,
        "frames_one_send_each_s": t3 - t2,
        "errors": errors,
    }


def table(
    cases: list[tuple[int, int]],
    helper: dict[tuple[int, int], list[dict[str, Any]]],
    limits: dict[tuple[int, int], list[dict[str, Any]]],
) -> tuple[Table, list[Target]]:
    """The helper's ACTIVATE -> OK beside the limit, per case; the targets of issue 12."""
    t = Table(
        "ACTIVATE against the kernel's own limit (inside user-mode Linux)",
        [
            "VIPs x members",
            "messages (IPVS + address)",
            "frames",
            "limit ms",
            "of it netlink ms",
            "of it frames ms (sendmmsg)",
            "frames ms, one sendto() each",
            "helper OK ms",
            "helper / limit",
            "same state",
        ],
    )
    targets = []
    for case in cases:
        ls, hs = limits[case], helper[case]
        total = [x["total_s"] for x in ls]
        ok = [h["ok_s"] for h in hs]
        counts = ls[0]["counts"]
        r = ratio(median(ok), median(total))
        t.add(
            f"{case[0]} x {case[1]}",
            f"{counts.get('genl', 0)} + {counts.get('rtnl', 0)}",
            counts.get("frames", 0),
            f"{ms(median(total), 2)} ({spread(total, 1000, 1)})",
            ms(median([x["netlink_s"] for x in ls]), 2),
            ms(median([x["frames_s"] for x in ls]), 2),
            ms(median([x["frames_one_send_each_s"] for x in ls]), 2),
            f"{ms(median(ok))} ({spread(ok, 1000)})",
            "-" if r is None else f"{r:.1f}x",
            "yes" if all(x["state"] == h["state"] for x in ls for h in hs) else "NO",
        )
        if case in LIMIT_CASES:
            label = f"{case[0]} VIPs x {case[1]} members: OK within {LIMIT_RATIO:g}x of the limit"
            met = None if r is None else r <= LIMIT_RATIO
            value = "-" if r is None else f"{r:.1f}x"
            targets.append(Target("activation", label, f"<= {LIMIT_RATIO:g}x", value, met))
    t.notes += [
        "limit = a bare process making the same kernel changes as the helper's ACTIVATE from "
        "the same standby state: the messages the helper's netlink kernel encodes for the "
        "helper's plan, in one datagram per protocol acked once, then the gratuitous ARP frames "
        "in one sendmmsg; everything built and every socket open before its clock starts, "
        "which covers only the system calls (bench/limit.py).",
        "same state: the limit's IPVS services, real servers, sync daemons and addresses equal "
        "the helper's in every run. helper OK: from writing ACTIVATE to reading OK, so it also "
        "holds the pipe both ways, the plan, the encoding, the log lines and their write.",
        "frames, one sendto() each: the same frames again after the timed part, as the helper "
        "sent them before (Python looks the interface up for every sendto).",
    ]
    return t, targets


if __name__ == "__main__":
    print(json.dumps(bare(sys.argv[1])))
