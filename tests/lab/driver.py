"""Drive a real helper process the way CommuniGate Pro does: lines on stdin, lines on stdout.

Runs INSIDE user-mode Linux, one helper per frontend namespace. Every line the helper writes is
kept (`log`), so a test can assert on the info lines (what CGP's log would show) as well as on
the responses.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from .net import Host


class HelperProcess:
    """`python -m cgp_ipvs_helper` in a host's namespace, with a request/response API."""

    def __init__(self, host: Host, vipfile: str, *args: str, iface: str = "eth0") -> None:
        self.host = host
        self.argv = [sys.executable, "-m", "cgp_ipvs_helper", "-i", iface, "-f", vipfile, *args]
        self.proc = host.popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.log: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._seq = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.log.append(line)
            self._lines.put(line)
        self._lines.put(None)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def request(self, text: str, timeout: float = 20.0) -> str:
        """Send `<seq> text`; return the response line (info lines go to `log` only)."""
        self._seq += 1
        seq = f"{self._seq:05d}"
        self.send(f"{seq} {text}")
        return self.wait_response(seq, timeout)

    def wait_response(self, seq: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(
                    f"no response to {seq} in {timeout}s; log: {self.log[-20:]}"
                ) from None
            if line is None:
                raise EOFError(f"helper exited before answering {seq}: {self.stderr()}")
            if line.startswith(f"{seq} "):
                return line

    def wait_started(self, timeout: float = 20.0) -> None:
        """Wait until start-up converged (INTF is answered only after it)."""
        assert self.request("INTF 1", timeout).endswith("INTF 1")

    def commands(self) -> list[str]:
        """The shell commands the helper logged, in order."""
        return [
            line[2:]
            for line in self.log
            if line.startswith("* ")
            and line[2:].split(" ")[0] in ("ip", "sysctl", "ipvsadm", "arping")
        ]

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def wait(self, timeout: float = 20.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read().decode("utf-8", "replace")


def write_vipfile(path: str, entries: Sequence[str]) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(f"{e}\n" for e in entries))
    return path
