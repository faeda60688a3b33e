"""The limit's own process (lab/ways.py builds its data): the kernel changes of the helper's
ACTIVATE as prebuilt messages and frames, sent with nothing else around them.

    python -m lab.bare DATA.pickle limit    (the bare process: prints one JSON object)
    python -m lab.bare DATA.pickle piped    (answers INTF, then ACTIVATE, on its pipes)
    python -m lab.bare DATA.pickle least    (the same, as the least helper)
"""

from __future__ import annotations

import gc
import json
import os
import pickle
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

from cgp_ipvs_helper import cli
from cgp_ipvs_helper.kernel import sysctl
from cgp_ipvs_helper.kernel.frames import arp, mmsg
from cgp_ipvs_helper.kernel.netlink import ipvs as ipvswire
from cgp_ipvs_helper.kernel.netlink.sockets import (
    NETLINK_CAP_ACK,
    NETLINK_GENERIC,
    NETLINK_ROUTE,
    NLMSG_ERROR,
    SO_RCVBUFFORCE,
    SO_SNDBUFFORCE,
    SOL_NETLINK,
    datagram,
)
from cgp_ipvs_helper.kernel.netlink.wire import NLMSGHDR
from cgp_ipvs_helper.plan import operations
from cgp_ipvs_helper.plan.model import Sysctl
from cgp_ipvs_helper.plan.operations import AddDests
from cgp_ipvs_helper.plan.realservers import ip_order

PROTOCOLS = {"genl": NETLINK_GENERIC, "rtnl": NETLINK_ROUTE}


def _opened(data: dict[str, Any]) -> tuple[dict[int, socket.socket], socket.socket, mmsg.Round]:
    """Every socket the limit sends on, opened and bound, and its round of frames laid out."""
    socks = {
        proto: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, proto)
        for proto in PROTOCOLS.values()
    }
    for sock in socks.values():
        sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 8 << 20)  # a run in one datagram
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
        sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)  # acks without the request
        sock.bind((0, 0))
    packet = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    packet.bind(("eth0", 0))
    index = socket.if_nametoindex("eth0")
    frames = mmsg.Round([(arp.sockaddr_ll(index, proto), f) for proto, f in data["frames"]])
    return socks, packet, frames


def _send(
    sysctls: list[Sysctl],
    datagrams: list[tuple[int, int, bytes]],
    socks: dict[int, socket.socket],
    packet: socket.socket,
    round_: mmsg.Round,
) -> tuple[int, float]:
    """The sysctls written (to /proc, as the helper writes them), the datagrams, each run acked
    once, then the frames in one sendmmsg: (errors, the time the netlink part ended)."""
    for setting in sysctls:
        sysctl.write(setting)
    buf, errors, sent = bytearray(1 << 16), 0, 0
    for proto, last, payload in datagrams:
        socks[proto].send(payload)
        acked = False
        while not acked:
            n, offset = socks[proto].recv_into(buf), 0
            while offset + 20 <= n:
                length, mtype, _flags, seq, _pid = NLMSGHDR.unpack_from(buf, offset)
                if mtype == NLMSG_ERROR:  # an ack, or an error
                    errors += struct.unpack_from("=i", buf, offset + 16)[0] != 0
                    acked |= seq == last
                offset += (length + 3) & ~3
    t1 = time.perf_counter()
    while sent < len(round_.items):
        sent += round_.send(packet.fileno(), sent)
    return errors, t1


def bare(path: str) -> dict[str, Any]:
    """The bare process: load, open, then time the system calls alone."""
    data = pickle.loads(Path(path).read_bytes())
    socks, packet, round_ = _opened(data)
    t0 = time.perf_counter()
    errors, t1 = _send(data["sysctls"], data["datagrams"], socks, packet, round_)
    t2 = time.perf_counter()
    for proto, frame in data["frames"]:
        packet.sendto(frame, ("eth0", proto))
    t3 = time.perf_counter()
    return dict(
        netlink_s=t1 - t0,
        frames_s=t2 - t1,
        total_s=t2 - t0,
        frames_one_send_each_s=t3 - t2,
        errors=errors,
    )


def _line(buf: bytearray) -> bytes:
    """The next line on stdin, read as the helper reads (os.read, no Python buffering)."""
    while b"\n" not in buf:
        chunk = os.read(0, 1 << 16)
        if not chunk:
            raise EOFError("stdin closed")
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line


def piped(path: str, least: bool) -> None:
    """The limit behind the helper's pipe: answer INTF like the helper once started, wait idle
    for the ACTIVATE line, make the changes, answer OK, then wait for the end of input as the
    helper waits in select() (exiting at once would keep the reader waiting for the exit on
    one CPU); the errors go to PATH.json. With `least`, the least helper: what depends on the
    members is done once their line is read (`_members`)."""
    data, buf = pickle.loads(Path(path).read_bytes()), bytearray()
    socks, packet, round_ = _opened(data)
    keys = data["least"]["keys"]
    ipvswire.prepare_real_servers(keys)  # what the helper does while standby
    operations.prepare_real_servers(keys)
    gc.freeze()
    cli.warm()
    cli.widen_pipe(sys.stdout)
    seq, _ = _line(buf).split(b" ", 1)
    os.write(1, seq + b" INTF 1\n")
    line = _line(buf)
    if least:
        seq, log, datagrams = _members(data["least"], line)
    else:
        seq, log, datagrams = line.split(b" ", 1)[0], b"", data["datagrams"]
    errors, _t1 = _send(data["sysctls"], datagrams, socks, packet, round_)
    os.write(1, log + seq + b" OK active vips=%d\n" % data["vips"])
    while os.read(0, 1 << 16):
        pass
    Path(path + ".json").write_text(json.dumps({"errors": errors}))


def _members(
    kept: dict[str, Any], line: bytes
) -> tuple[bytes, bytes, list[tuple[int, int, bytes]]]:
    """The least a helper does with an ACTIVATE line from standby: split it, check each member
    is an address, order them, make their real servers' requests from the services' kept parts
    and their log lines, and join both to what was kept: (seq, log, datagrams)."""
    seq, _verb, *members = line.decode().split()
    self_ip, own, others = kept["weights"]
    ordered = sorted(members, key=ip_order)  # the helper's order (which also checks each)
    servers = [(m, own if m == self_ip else others) for m in ordered]
    dests = list(ipvswire.dest_requests(kept["family"], kept["keys"], servers))
    proto, before, after = kept["around"]
    requests = before + dests + after
    joined = (proto, len(requests), datagram(requests, 1))
    datagrams = [joined if d is None else d for d in kept["datagrams"]]
    lines = AddDests(kept["keys"], tuple(servers)).logged()
    return seq.encode(), kept["log"][0] + lines + kept["log"][1], datagrams


if __name__ == "__main__":
    if sys.argv[2] == "limit":
        print(json.dumps(bare(sys.argv[1])))
    else:
        piped(sys.argv[1], sys.argv[2] == "least")
