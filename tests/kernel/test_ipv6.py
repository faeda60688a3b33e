"""IPv6 VIPs in a real kernel: addresses without DAD, IPVS services and real servers, the
neighbour advertisement, and a standby that never answers neighbour solicitation for a VIP on lo.

Runs INSIDE user-mode Linux, in the two-namespace `box` (conftest.py; "ours" with eth0
2001:db8::10/64, "peer" with 2001:db8::20/64). Checks read the kernel with the usual tools.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from cgp_ipvs_helper.plan import operations as op
from cgp_ipvs_helper.plan.model import Address, Dest, Service, ServiceKey
from lab.box import OUR_MAC, Box, addresses, ip_batch, ipvsadm_rules, peer_neigh, run, wait_neigh
from lab.netns import in_netns

OUR6, PEER6 = "2001:db8::10", "2001:db8::20"
VIP6 = "2001:db8:10::1"
OTHER_MAC = "02:00:00:00:00:99"


def lan6(b: Box) -> None:
    """Global IPv6 LAN addresses on both ends (nodad: usable at once), and on the peer a route
    to the VIPs over the link, as a client's router would have."""
    ip_batch(f"address add {OUR6}/64 dev eth0 nodad\n")
    with in_netns(b.peer):
        ip_batch(f"address add {PEER6}/64 dev eth0 nodad\nroute add 2001:db8:10::/64 dev eth0\n")


# --- addresses ----------------------------------------------------------------------------------


def test_ipv6_vips_are_added_as_128_without_dad_observed_and_deleted(box: Box) -> None:
    k = box.kernel
    lan6(box)
    assert (
        k.apply_many([op.AddAddress(Address(VIP6, "lo")), op.AddAddress(Address(VIP6, "eth0"))])
        == []
    )
    assert addresses("lo", six=True) == [f"{VIP6}/128 scope global nodad"]
    assert f"{VIP6}/128 scope global nodad" in addresses(
        "eth0", six=True
    )  # not "tentative": usable now
    observed = k.observe(frozenset()).addresses
    assert Address(VIP6, "lo", 128) in observed and Address(VIP6, "eth0", 128) in observed
    assert Address(OUR6, "eth0", 64) in observed
    assert not [a for a in observed if a.ip in ("::1",) or a.ip.startswith("fe80:")]
    assert (
        k.apply_many([op.DelAddress(Address(VIP6, "eth0")), op.DelAddress(Address(VIP6, "lo"))])
        == []
    )
    assert addresses("lo", six=True) == []


# --- IPVS ---------------------------------------------------------------------------------------


def test_ipv6_services_and_real_servers_round_trip_and_equal_the_printed_commands(
    box: Box,
) -> None:
    k = box.kernel
    lan6(box)
    tcp, udp = ServiceKey("tcp", VIP6, 0), ServiceKey("udp", VIP6, 5060)
    ops = [
        op.AddService(Service(tcp, "wlc", 15)),
        op.AddService(Service(udp, "wlc", 0)),
        op.AddDest(Dest(tcp, OUR6, 50)),
        op.AddDest(Dest(tcp, "2001:db8::12", 100)),
        op.AddDest(Dest(udp, "2001:db8::12", 100)),
    ]
    assert k.apply_many(ops) == []
    state = k.observe(frozenset())
    assert state.services == {Service(tcp, "wlc", 15), Service(udp, "wlc", 0)}
    assert state.dests == {
        Dest(tcp, OUR6, 50),
        Dest(tcp, "2001:db8::12", 100),
        Dest(udp, "2001:db8::12", 100),
    }
    by_netlink = ipvsadm_rules()
    # persistence per whole client address: ipvsadm -S shows -M only when it is not /128
    assert f"-A -t [{VIP6}]:0 -s wlc -p 15" in by_netlink
    run("ipvsadm", "-A", "-t", "[2001:db8:10::99]:0", "-p", "15", "-M", "64")
    assert "-A -t [2001:db8:10::99]:0 -s wlc -p 15 -M 64" in ipvsadm_rules()
    run("ipvsadm", "-D", "-t", "[2001:db8:10::99]:0")
    assert (
        k.apply_many([op.DelDest(Dest(tcp, "2001:db8::12", 100)), op.DelService(Service(udp))])
        == []
    )
    assert ipvsadm_rules() == {
        f"-A -t [{VIP6}]:0 -s wlc -p 15",
        f"-a -t [{VIP6}]:0 -r [{OUR6}]:0 -g -w 50",
    }

    run("ipvsadm", "-C")
    for each in ops:
        subprocess.run(str(each), shell=True, check=True)
    assert ipvsadm_rules() == by_netlink


# --- neighbour advertisements -------------------------------------------------------------------


def test_the_neighbour_advertisement_moves_the_peers_entry_to_our_mac(box: Box) -> None:
    lan6(box)
    ip_batch(f"address add {VIP6}/128 dev eth0 nodad\n")
    with in_netns(box.peer):
        ip_batch(f"neigh replace {VIP6} lladdr {OTHER_MAC} dev eth0 nud reachable\n")
    assert OTHER_MAC in peer_neigh(box, VIP6)
    box.kernel.apply(op.SendNa(VIP6, "eth0"))
    seen = wait_neigh(box, VIP6, OUR_MAC)
    assert OUR_MAC in seen, seen  # override: a REACHABLE entry moves too


def test_the_printed_ndptool_command_has_the_same_effect(box: Box) -> None:
    if shutil.which("ndptool") is None:
        pytest.fail("ndptool missing: make setup installs Debian's libndp-tools")
    lan6(box)
    ip_batch(f"address add {VIP6}/128 dev eth0 nodad\n")
    with in_netns(box.peer):
        ip_batch(f"neigh replace {VIP6} lladdr {OTHER_MAC} dev eth0 nud reachable\n")
    subprocess.run(str(op.SendNa(VIP6, "eth0")), shell=True, check=True, capture_output=True)
    seen = wait_neigh(box, VIP6, OUR_MAC)
    assert OUR_MAC in seen, seen


def test_na_errors(box: Box) -> None:
    k = box.kernel
    assert k.apply_many([op.SendNa(VIP6, "lo")])[0].reason == "lo is not an Ethernet device"
    assert k.apply_many([op.SendNa(VIP6, "nosuch0")])[0].reason == "No such device"
    assert k.apply_many([op.SendNa("198.51.100.7", "eth0")])[0].reason.startswith("not an IPv6")


# --- a standby never answers for a VIP on lo ----------------------------------------------------


def test_a_standby_with_the_vip_on_lo_does_not_answer_neighbour_solicitation(box: Box) -> None:
    lan6(box)
    ip_batch(f"address add {VIP6}/128 dev lo nodad\n")  # what every standby holds
    with in_netns(box.peer):
        ping = subprocess.run(["ping", "-6", "-c", "2", "-W", "1", VIP6], capture_output=True)
        solicited = run("ip", "-6", "neigh", "show", VIP6, "dev", "eth0")
    assert ping.returncode != 0
    assert OUR_MAC not in solicited and "lladdr" not in solicited, solicited
    # with the default sysctls: no ndisc setting is needed (Linux answers a solicitation only
    # for an address on the interface it came in on, unlike ARP without arp_ignore)
    assert run("sysctl", "-n", "net.ipv6.conf.eth0.proxy_ndp").strip() == "0"

    ip_batch(f"address add {VIP6}/128 dev eth0 nodad\n")  # the active balancer: it answers
    with in_netns(box.peer):
        ip_batch("neigh flush dev eth0\n")
        ping = subprocess.run(["ping", "-6", "-c", "1", "-W", "2", VIP6], capture_output=True)
    assert ping.returncode == 0
    assert OUR_MAC in peer_neigh(box, VIP6)
