"""sendmmsg through ctypes (mmsg.py), on the host: datagrams to a local UDP socket."""

from __future__ import annotations

import errno
import os
import socket
import struct

import pytest

from cgp_ipvs_helper.kernel.frames import mmsg


def _sockaddr_in(port: int) -> bytes:
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H4s8x", port, bytes([127, 0, 0, 1]))


@pytest.fixture
def receiver():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    yield sock
    sock.close()


def test_the_c_layout_is_checked_and_sendmmsg_is_found_on_linux() -> None:
    assert mmsg.available()  # glibc on every machine this runs on


def test_a_round_sends_every_datagram_in_order_in_one_call(receiver) -> None:
    datagrams = [bytes([i % 256]) * (1 + i % 7) for i in range(1500)]  # more than one call's 1,024
    address = _sockaddr_in(receiver.getsockname()[1])
    batch = mmsg.Round([(address, d) for d in datagrams])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        assert batch.send(sender.fileno()) == mmsg.MAX_VLEN
        assert batch.send(sender.fileno(), mmsg.MAX_VLEN) == 1500 - mmsg.MAX_VLEN
        assert batch.send(sender.fileno(), 1500) == 0
        assert [receiver.recv(64) for _ in datagrams] == datagrams
        assert batch.send(sender.fileno(), 1499) == 1  # sent again from its C arrays
    assert receiver.recv(64) == datagrams[-1]


def test_an_error_is_raised_for_the_first_datagram_with_the_kernels_reason() -> None:
    batch = mmsg.Round([(_sockaddr_in(9), b"x")])
    with open(os.devnull, "rb") as not_a_socket:
        with pytest.raises(OSError) as info:
            batch.send(not_a_socket.fileno())
    assert (info.value.errno, info.value.strerror) == (errno.ENOTSOCK, os.strerror(errno.ENOTSOCK))


def test_each_datagram_goes_to_its_own_address(receiver) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind(("127.0.0.1", 0))
        other.settimeout(5)
        here, there = (_sockaddr_in(s.getsockname()[1]) for s in (receiver, other))
        batch = mmsg.Round([(here, b"1"), (there, b"2"), (here, b"3")])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            assert batch.send(sender.fileno()) == 3
        assert [receiver.recv(8), other.recv(8), receiver.recv(8)] == [b"1", b"2", b"3"]
