"""A VIP file that lists the frontend's own LAN address takes nothing away.

Runs INSIDE user-mode Linux:
    python -m lab.uml -- python -m pytest tests/kernel/test_own_addresses.py
"""

from __future__ import annotations

import tempfile

from lab.driver import HelperProcess, write_vipfile
from lab.lan import Lan, unique


def test_the_lan_address_listed_as_a_vip_stays_and_nothing_is_applied() -> None:
    with tempfile.TemporaryDirectory() as tmp, Lan(unique("oa")) as lan:
        fe1 = lan.add_host("fe1", "192.0.2.11")
        fe1.add_address("203.0.113.9", dev="eth0", prefixlen=24)  # a second subnet on -i
        vipfile = write_vipfile(f"{tmp}/vipaddrs", ["198.51.100.10", "192.0.2.11", "203.0.113.9"])
        h = HelperProcess(fe1, "-i", "eth0", "-f", vipfile, "-t", "1")
        try:
            h.wait_started()
            error = f"{vipfile}:2: '192.0.2.11': already an address of this host on eth0"
            assert any(line.startswith(f"* ERROR {error}") for line in h.log), h.log
            assert h.request("ACTIVATE").startswith(f"ERROR {error}", 6)
            assert h.request("DEACTIVATE").endswith("OK standby")
            h.send("90001 QUIT")
            assert h.wait_response("90001").line.endswith(" OK")
            assert h.wait() == 0
        finally:
            h.kill()
        assert fe1.addresses("eth0") == ["192.0.2.11/24", "203.0.113.9/24"]
        assert fe1.addresses("lo") == ["127.0.0.1/8"]  # nothing applied at all
        assert h.commands() == []
