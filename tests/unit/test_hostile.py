"""Hostile input against the helper process (-m mode): it answers, in order, and stays up.

Every line carrying a seq gets exactly one response, in order; lines without one are logged
and skipped; the process never writes to stderr and never exits on input.
"""

from __future__ import annotations

import ipaddress
import os
import random
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = str(ROOT / "sysconfig" / "vipaddrs")
COMMANDS = ("ip", "sysctl", "ipvsadm", "arping")


def output(stdin: bytes, *args: str, vipfile: str = SAMPLE, timeout: float = 60) -> list[str]:
    """Every line the -m helper printed for `stdin`; it exited 0 and said nothing on stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "cgp_ipvs_helper", "-m", "-f", vipfile, *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0 and proc.stderr == b"", proc.stderr[-2000:]
    lines = proc.stdout.decode("utf-8").split("\n")
    assert lines[-1] == ""
    assert all(len(line.encode()) <= 4096 for line in lines)
    return lines[:-1]


def split(lines: list[str]) -> tuple[list[str], list[str]]:
    """Responses, and the shell commands of the info lines."""
    replies = [line for line in lines if not line.startswith("* ")]
    commands = [
        line[2:] for line in lines if line.startswith("* ") and line[2:].split(" ")[0] in COMMANDS
    ]
    return replies, commands


def run(stdin: bytes, *args: str, timeout: float = 60) -> tuple[list[str], list[str]]:
    """Responses and shell commands the -m helper printed for `stdin`."""
    return split(output(stdin, *args, timeout=timeout))


NASTY = [
    b"\x00",
    b"1\x00 STATUS",
    b"\xff\xfe\xfd\xfc",
    b"\x1b[2J\x1b[H clear screen",
    b"* 12 OK fake info line",
    b"12 OK",
    b"13 ERROR",
    b"14 INTF 99999999999999999999",
    b"15 ACTIVATE " + b"9" * 3000,
    b"16 ACTIVATE 192.0.2.1\x00",
    b"17 STATUS " + b"A" * 1_000_000,
    b"18" + b" " * 5000 + b"STATUS",
    b"\t\t\r",
    b"19 QUIT now",
    b"20 ACTIVATE $(reboot) `id` ;rm -rf / |cat",
    b"21 " + "\u202e".encode() + b"STATUS",
    b"-1 -1 -1",
    b"%s%s%n 22",
]


def test_corpus_of_nasty_lines_each_answered_once_in_order() -> None:
    stdin = b"\n".join(NASTY) + b"\n99 STATUS\n"
    replies, commands = run(stdin)
    seqs = [r.split(" ", 1)[0] for r in replies]
    assert seqs == [
        "12",
        "13",
        "14",
        "15",
        "16",
        "17",
        "18",
        "19",
        "20",
        "21",
        "-1",
        "%s%s%n",
        "99",
    ]
    assert all(r.split(" ")[1] == "ERROR" for r in replies[:-1]), replies
    assert replies[-1].startswith("99 OK role=standby")
    assert not any(c.startswith("ipvsadm -A") for c in commands)


def test_partial_line_at_end_of_input_is_still_a_request() -> None:
    replies, _ = run(b"1 INTF 1\n2 STAT")
    assert replies == ["1 INTF 1", "2 ERROR unknown command: STAT"]


def test_thousands_of_pipelined_requests_in_order() -> None:
    n = 5000
    stdin = b"".join(b"%d STATUS\n" % i for i in range(n)) + b"x QUIT\n"
    replies, _ = run(stdin)
    assert [r.split(" ", 1)[0] for r in replies] == [str(i) for i in range(n)] + ["x"]


def test_random_bytes_never_kill_the_helper() -> None:
    rnd = random.Random(20261123)
    chunks = [bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 300))) for _ in range(300)]
    stdin = b"".join(chunks) + b"\nzz INTF 1\n"
    replies, _ = run(stdin)
    assert replies[-1] == "zz INTF 1"


def test_hostile_member_lists_change_nothing() -> None:
    hostile = [
        "127.0.0.1",
        "224.0.0.81",
        "255.255.255.255",
        "0.0.0.0",
        "198.51.100.10",
        "2001:db8::1",
        "192.0.2.1/24",
        "192.0.2.1;id",
        "$(id)",
        "192.0.2.1'",
        '"192.0.2.1"',
        " ".join(f"192.0.2.{i % 250 + 1}" for i in range(1000)),
        " ".join(f"10.{i // 250}.{i % 250}.1" for i in range(200)),
    ]
    stdin = "".join(f"{i} ACTIVATE 192.0.2.1 {m}\n" for i, m in enumerate(hostile)).encode()
    _, start_commands = run(b"")
    replies, commands = run(stdin)
    assert len(replies) == len(hostile)
    assert all(" ERROR " in r for r in replies), replies
    assert commands == start_commands  # start-up convergence only; no ACTIVATE change


def test_every_printed_command_is_safely_quoted() -> None:
    _, commands = run(
        b"1 ACTIVATE 192.0.2.1 192.0.2.2\n2 DEACTIVATE\n3 QUIT\n", "--drain", "0", "-i", "eth0"
    )
    assert commands
    for command in commands:
        argv = shlex.split(command)
        assert shlex.join(argv) == command
        assert argv[0] in COMMANDS and not any(c in command for c in ";|&`$<>\n")


# --- the VIP file, through the helper and through cgp-ipvs-vip --------------------------------

FF_IN_COMMENT = (
    b"198.51.100.8  # old:\x0c198.51.100.99\n"
    b"# \xc2\x85 \xe2\x80\xa8 \x0b \x1c\x1d\x1e caf\xe9 \xff\xfe\n"
    b"198.51.100.9\r\n"
)


def vipctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cgp_ipvs_helper.vipctl", *args],
        capture_output=True,
        timeout=60,
        cwd=ROOT,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_a_line_break_other_than_lf_inside_a_comment_applies_nothing(tmp_path: Path) -> None:
    path = tmp_path / "vipaddrs"
    path.write_bytes(FF_IN_COMMENT)
    lines = output(b"1 STATUS\n2 ACTIVATE 192.0.2.1\n", "--drain", "0", vipfile=str(path))
    replies, commands = split(lines)
    assert replies[0].startswith("1 OK role=standby vips=2 ")
    assert replies[1].startswith("2 OK active vips=2 members=")
    assert not any("198.51.100.99" in line for line in lines)
    assert "ip address add 198.51.100.9/32 dev lo" in commands
    listed = vipctl("-f", str(path), "list")
    assert (listed.returncode, listed.stdout, listed.stderr) == (
        0,
        b"198.51.100.8\n198.51.100.9\n",
        b"",
    )


def test_a_bad_entry_after_odd_comments_is_named_by_its_own_line(tmp_path: Path) -> None:
    path = tmp_path / "vipaddrs"
    path.write_bytes(FF_IN_COMMENT + b"198.51.100.10\xff\x0c# x\n")
    error = f"{path}:4: '198.51.100.10\\xff\\x0c': not an IPv4 address or a.b.c.d/m subnet"
    lines = output(b"1 ACTIVATE 192.0.2.1\n", vipfile=str(path))
    assert f"* ERROR {error}; nothing is changed until it is fixed" in "\n".join(lines)
    replies, commands = split(lines)
    assert replies == [f"1 ERROR {error}"] and commands == []
    checked = vipctl("-f", str(path), "check")
    assert checked.returncode == 1 and checked.stdout == b""
    assert checked.stderr.decode() == f"cgp-ipvs-vip: {error}\n"


# --- options ------------------------------------------------------------------------------

NOT_ASCII_NUMBERS = [
    ["-s", "1_0"],
    ["-p", "\u0665"],  # Arabic-Indic digit five
    ["-r", "+5"],
    ["-p", " 5"],
    ["-s", "5 "],
    ["-r", "\uff15"],  # fullwidth five
    ["-t", "1_0"],
    ["-t", "1e3"],
    ["-t", "inf"],
    ["-t", "\u0665"],
    ["--drain", "+1"],
    ["--drain", "0x5"],
    ["--ports", "tcp:2\u0665"],
]


def helper_exit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cgp_ipvs_helper", "-m", "-f", SAMPLE, *args],
        input=b"1 STATUS\n",
        capture_output=True,
        timeout=60,
        cwd=ROOT,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.parametrize(
    "argv", NOT_ASCII_NUMBERS + [["-t", "0.001"], ["-t", "0.99"], ["-t", ".5"]]
)
def test_numbers_are_ascii_digits_and_t_is_at_least_1s(argv: list[str]) -> None:
    proc = helper_exit(*argv)
    assert proc.returncode == 2 and proc.stdout == b""
    err = proc.stderr.decode()
    assert err.startswith("IPVSHelper.py: argument ") and err.count("\n") == 1, err
    assert err[:-1].isprintable()


def test_ascii_numbers_still_work() -> None:
    lines = output(b"1 STATUS\n", "-s", "010", "-p", "0", "-r", "5", "-t", "1", "--drain", ".5")
    assert split(lines)[0] == [
        "1 OK role=standby vips=8 members= persistence=0 syncid=10 weight=5 conflicts=0"
    ]


def test_a_missing_interface_is_said_at_start() -> None:
    lines = output(b"1 INTF 1\n", "-i", "nosuch0")
    assert "* -i nosuch0: no such interface (yet); it is needed to balance" in lines
    assert not any("no such interface" in line for line in output(b"", "-i", "lo"))


# --- the helper's own promises ------------------------------------------------------------


def lan() -> tuple[str, ipaddress.IPv4Interface]:
    """This machine's first interface with a global IPv4 address, and that address/prefix."""
    out = subprocess.run(
        ["ip", "-4", "-o", "address", "show", "scope", "global"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[1], ipaddress.IPv4Interface(out[3])


def test_a_vip_that_is_this_hosts_lan_address_is_an_error_and_nothing_is_applied(
    tmp_path: Path,
) -> None:
    iface, own = lan()
    path = tmp_path / "vipaddrs"
    path.write_text(f"198.51.100.10\n# the LAN address by mistake:\n{own.ip}\n")
    lines = output(b"1 ACTIVATE\n2 STATUS\n", "-i", iface, vipfile=str(path))
    replies, commands = split(lines)
    error = f"{path}:3: '{own.ip}': already an address of this host on {iface} ({own})"
    assert any(line.startswith(f"* ERROR {error}") for line in lines), lines
    assert replies[0].startswith(f"1 ERROR {error}")
    assert commands == []  # nothing at all, and above all no `ip address del {own} dev {iface}`


def test_only_our_own_32s_are_ever_deleted(tmp_path: Path) -> None:
    """A subnet VIP that holds the LAN address: the same error, never a delete of the LAN."""
    iface, own = lan()
    path = tmp_path / "vipaddrs"
    path.write_text(f"{ipaddress.IPv4Network(f'{own.ip}/30', strict=False)}\n")
    lines = output(b"1 ACTIVATE\n", "-i", iface, vipfile=str(path))
    assert not any(c.startswith("ip address del") for c in split(lines)[1])
    assert split(lines)[0][0].startswith(f"1 ERROR {path}:1: ")


FORGING = [
    b"1 STATUS\r* ip link set eth0 down #",
    b"2 STATUS\x0b* ip link set eth0 down #",
    b"3 STATUS\x0c* ip link set eth0 down #",
    b"4 NOPE \x1c* ip link set eth0 down #\x1d* ip link set eth0 down #\x1e* ip link x",
    b"5 NOPE \xc2\x85* ip link set eth0 down #",
    b"6 NOPE \xe2\x80\xa8* ip link set eth0 down #\xe2\x80\xa9* ip link set eth0 down #",
    b"\r* ip link set eth0 down #",
    b"ip link set eth0 down #",
]


START_COMMANDS = None


def forged(lines: list[str]) -> list[str]:
    """Lines that read like a command (`grep '^\\* ip'` and the like would run them) but are
    not one of those the helper logs at start-up, all it runs for the requests here."""
    global START_COMMANDS
    if START_COMMANDS is None:
        START_COMMANDS = {f"* {c}" for c in run(b"")[1]}
    return [
        line
        for line in lines
        if re.match(r"\* ?(ip|sysctl|arping|nft|tc)", line) and line not in START_COMMANDS
    ]


def test_no_request_text_can_forge_a_log_line_or_a_command() -> None:
    lines = output(b"\n".join(FORGING) + b"\n")
    assert forged(lines) == []
    assert all(line.isprintable() for line in lines)
    replies, _ = split(lines)
    assert [r.split(" ")[0] for r in replies] == ["1", "2", "3", "4", "5", "6", "ip"]


def test_the_4k_split_of_a_long_line_never_starts_with_a_command_word() -> None:
    stdin = b"".join(
        b"\x01" + b" " * n + b"ip link set eth0 down #\n" for n in range(4040, 4110)
    ) + b"".join(b"%d NOPE " % n + b"\x0b" * n + b"ip link set eth0 down #\n" for n in (1000,))
    lines = output(stdin)
    assert forged(lines) == []
    assert all(line.isprintable() for line in lines)


def test_a_file_name_cannot_forge_a_log_line() -> None:
    lines = output(b"1 ACTIVATE\n", vipfile="/nonexistent\n* ip link set eth0 down #")
    assert forged(lines) == []
    assert all("/nonexistent\\x0a* ip link" in line for line in lines if "ip link" in line)
    assert split(lines)[0][0].startswith("1 ERROR /nonexistent\\x0a* ip link set eth0 down #:")


@pytest.mark.parametrize("n", [65, 100, 1000, 4000, 4080, 9000])
def test_a_seq_over_64_characters_gets_exactly_one_response(n: int) -> None:
    """Echoed whole up to 4,000 characters (the line limit is 4096 bytes), else its start."""
    seq = ("1234567890" * 900)[:n]
    replies, commands = run(f"{seq} STATUS\n{seq} ACTIVATE\n2 STATUS\n".encode())
    assert len(replies) == 3, replies
    for reply in replies[:2]:
        assert reply.startswith(f"{seq[:4000]} ERROR ") and len(reply) < 4096
    assert replies[2].startswith("2 OK role=standby")
    assert not any(c.startswith("ipvsadm -A") for c in commands)


def test_the_broadcast_address_of_the_lan_is_no_member() -> None:
    iface, own = lan()
    for member in (own.network.broadcast_address, own.network.network_address):
        replies, commands = run(f"1 ACTIVATE {own.ip} {member}\n".encode(), "-i", iface)
        assert replies[0].startswith(f"1 ERROR member {member} is the ")
        assert not any(c.startswith("ipvsadm -A") for c in commands)


def test_activate_while_the_interface_is_missing_is_an_error_naming_it() -> None:
    lines = output(b"1 ACTIVATE 192.0.2.1\n2 STATUS\n", "-i", "nosuch0")
    replies, commands = split(lines)
    assert replies[0] == "1 ERROR -i nosuch0: no such interface"
    assert replies[1].startswith("2 OK role=standby")
    assert not any(c.startswith(("ipvsadm -A", "arping")) for c in commands)


def test_requests_while_quit_drains_are_each_answered_stopping() -> None:
    iface, own = lan()
    stdin = f"1 ACTIVATE {own.ip}\n2 QUIT\n3 STATUS\n4 INTF 1\n\x01 no seq\n5 ACTIVATE\n".encode()
    lines = output(stdin, "-i", iface, "--drain", "0.5")
    replies, _ = split(lines)
    assert replies[0].startswith("1 OK active")
    assert replies[1:] == ["3 ERROR stopping", "4 ERROR stopping", "5 ERROR stopping", "2 OK"]


def test_an_empty_vip_file_is_warned_about_at_start_and_on_activate(tmp_path: Path) -> None:
    iface, own = lan()
    path = tmp_path / "vipaddrs"
    path.write_text("# nothing yet\n\n")
    lines = output(f"1 ACTIVATE {own.ip}\n".encode(), "-i", iface, vipfile=str(path))
    warning = f"WARNING: {path} lists no VIP: there is nothing to balance"
    assert f"* {warning}" in lines
    assert split(lines)[0] == [f"1 OK active vips=0 members=1 {warning}"]
