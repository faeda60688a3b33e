"""Options, the stdin line reader, and the helper as a process in -m mode."""

from __future__ import annotations

import fcntl
import importlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cgp_ipvs_helper.cli import PIPE_SIZE, LineReader, Output, main, make_kernel, parse_settings
from cgp_ipvs_helper.core.engine import Helper
from cgp_ipvs_helper.core.protocol import Reply, Response, render
from cgp_ipvs_helper.plan.model import Settings
from tests.forked import as_nobody

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = str(ROOT / "sysconfig" / "vipaddrs")


def test_defaults() -> None:
    assert parse_settings([]) == Settings()


def test_every_option() -> None:
    s = parse_settings(
        [
            "-p",
            "0",
            "-i",
            "bond0.100",
            "-s",
            "7",
            "-t",
            "2.5",
            "-f",
            "/x",
            "-r",
            "0",
            "-m",
            "--ports",
            "tcp:25,udp:5060,tcp:25",
            "--drain",
            "1",
        ]
    )
    assert s == Settings(
        persistence=0,
        iface="bond0.100",
        syncid=7,
        timeout=2.5,
        vipfile="/x",
        weight=0,
        dry_run=True,
        ports=(("tcp", 25), ("udp", 5060)),
        drain=1.0,
    )


BAD = [
    ["-p", "-1"],
    ["-p", "x"],
    ["-s", "256"],
    ["-t", "0"],
    ["-t", "nan"],
    ["-r", "70000"],
    ["-i", "eth0 eth1"],
    ["-i", "a" * 16],
    ["-i", "../x"],
    ["--ports", "sctp:5"],
    ["--ports", "tcp:0"],
    ["--drain", "-1"],
    ["-x"],
    ["extra"],
    ["-p"],
]


@pytest.mark.parametrize("argv", BAD)
def test_bad_option_is_one_stderr_line_and_exit_2(argv, capsys) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("IPVSHelper.py: ")


def test_version_and_help() -> None:
    for flag, text in (("--version", "cgp-ipvs-helper 0.1.0"), ("--help", "-p N")):
        run = subprocess.run(
            [sys.executable, "-m", "cgp_ipvs_helper", flag],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
        assert run.returncode == 0 and text in run.stdout


def test_the_helper_loads_only_the_netlink_modules_of_pyroute2() -> None:
    """pyroute2's package __init__ (every protocol it speaks, its databases) is never run."""
    code = (
        "import sys, cgp_ipvs_helper.cli, cgp_ipvs_helper.kernel.netlink.kernel\n"
        "print(' '.join(m for m in sys.modules if m.startswith('pyroute2')))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    loaded = set(run.stdout.split())
    assert run.returncode == 0 and "pyroute2.netlink.generic.ipvs" in loaded, run.stderr
    assert not loaded & {f"pyroute2.{name}" for name in ("ndb", "ipdb", "iproute", "conntrack")}


def test_line_reader_splits_and_bounds() -> None:
    r = LineReader()
    assert r.feed(b"1 INTF 3\r\n2 STA") == [b"1 INTF 3\r"]
    assert r.feed(b"TUS\n") == [b"2 STATUS"]
    long = r.feed(b"3 STATUS " + b"x" * 10000)
    assert len(long) == 1 and len(long[0]) == 4097 and long[0].startswith(b"3 STATUS")
    assert r.feed(b"y" * 10000 + b"\n4 QUIT\n") == [b"4 QUIT"]
    assert r.feed(b"5 QUIT") == [] and r.finish() == [b"5 QUIT"] and r.finish() == []


def lan_interface() -> tuple[str, str]:
    """This machine's first interface with a global IPv4 address, and that address."""
    out = subprocess.run(
        ["ip", "-4", "-o", "address", "show", "scope", "global"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    fields = out.split()
    return fields[1], fields[3].split("/")[0]


def run_helper(stdin: bytes, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cgp_ipvs_helper", "-m", "-f", SAMPLE, *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )


def test_dry_run_session_prints_commands_then_responses() -> None:
    """The contract's example session, with this host's own LAN address as a member."""
    run = run_helper(
        b"00001 INTF 3\n00002 STATUS\n00003 ACTIVATE\n00004 DEACTIVATE\n00005 QUIT\n",
        "-i",
        lan_interface()[0],
        "--drain",
        "0.2",
    )
    assert run.returncode == 0 and run.stderr == b""
    lines = run.stdout.decode().splitlines()
    replies = [line for line in lines if not line.startswith("* ")]
    assert replies == [
        "00001 INTF 1",
        "00002 OK role=standby vips=8 members= persistence=15 syncid=0 weight=100 conflicts=0",
        "00003 OK active vips=8 members=1",
        "00004 OK standby",
        "00005 OK",
    ]
    assert lines[0].startswith("* cgp-ipvs-helper 0.1.0: 8 VIPs from ")
    assert (
        "* -m: dry run, nothing is changed; each command below is what real mode would run" in lines
    )
    commands = [
        line[2:] for line in lines if line.split(" ")[1] in ("ip", "sysctl", "ipvsadm", "arping")
    ]
    assert "ipvsadm -A -t 198.51.100.10:0 -s wlc -p 15" in commands
    assert f"arping -U -c 1 -I {lan_interface()[0]} 198.51.100.23" in commands
    assert commands[-1] == "ipvsadm --stop-daemon master"


def test_partial_last_line_and_garbage_do_not_stop_the_helper() -> None:
    run = run_helper(b"\x00\xff\xfe garbage\n1 NOPE\n\n2 INTF 9\n" + b"z" * 9000 + b"\n3 QUIT")
    replies = [line for line in run.stdout.decode().splitlines() if not line.startswith("* ")]
    # 9,000 z: the first token is a seq (printable ASCII), too long, in a line too long
    too_long = "z" * 4000 + " ERROR request line longer than 4096 bytes"
    assert replies == ["1 ERROR unknown command: NOPE", "2 INTF 1", too_long, "3 OK"]
    assert run.returncode == 0 and run.stderr == b""


def test_output_widens_its_pipe_and_leaves_anything_else_alone(tmp_path: Path) -> None:
    """A dual-stack ACTIVATE's 400 KB go into the pipe in one write, without waiting for the
    reader; a file (or a stream without a descriptor) is written as it is."""
    r, w = os.pipe()
    with os.fdopen(r, "rb") as reader, os.fdopen(w, "wb") as writer:
        Output(writer)  # type: ignore[arg-type]
        assert fcntl.fcntl(w, 1032) == PIPE_SIZE  # F_GETPIPE_SZ
        writer.write(b"x" * (PIPE_SIZE - 1))  # would block on a 64 KiB pipe
        writer.flush()
        assert len(reader.read(PIPE_SIZE - 1)) == PIPE_SIZE - 1
    with open(tmp_path / "log", "wb") as f:
        Output(f)
    Output(io.BytesIO()).write(Reply((), Response("1", "OK")))


def _dry_run_as_nobody(iface: str, ip: str) -> dict:
    settings = parse_settings(["-m", "-f", SAMPLE, "-i", iface])
    kernel, notes = make_kernel(settings)
    helper = Helper(settings, kernel)
    lines = render(helper.start(notes)) + render(helper.handle(f"1 ACTIVATE {ip}"))
    return {"notes": notes, "lines": lines}


def test_dry_run_without_root_plans_from_what_it_can_read() -> None:
    """-m needs no privilege: what it cannot read it says once, and plans from empty."""
    iface, ip = lan_interface()
    # imported before the fork: as nobody, the child may not read the Python under /root
    importlib.import_module("cgp_ipvs_helper.kernel.netlink.kernel")
    importlib.import_module("multiprocessing")
    result = as_nobody(_dry_run_as_nobody, iface, ip)
    assert "crash" not in result, result
    notes = result["notes"]
    assert len(notes) == 2 and notes[1].endswith("; planning IPVS from an empty state")
    lines = result["lines"]
    assert lines[-1] == "1 OK active vips=8 members=1"
    assert "* ipvsadm --start-daemon backup --mcast-interface " in "\n".join(lines)
    assert "* ipvsadm -A -t 198.51.100.10:0 -s wlc -p 15" in lines
