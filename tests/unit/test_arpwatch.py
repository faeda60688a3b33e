"""The split-brain watch's logic: which ARP frames are claims, and when a warning is due."""

from __future__ import annotations

import pytest

from cgp_ipvs_helper.core.arpwatch import ArpWatch, Conflict, sender
from lab.sniff import arp_frame as frame

VIP, OTHER = "198.51.100.10", "198.51.100.11"
THEIRS = bytes.fromhex("020000000002")
FORGED = bytes.fromhex("02000000bad0")


def test_requests_and_replies_gratuitous_or_not_name_their_sender() -> None:
    assert sender(frame(1, THEIRS, VIP, tpa=VIP)) == (VIP, THEIRS)  # gratuitous request
    assert sender(frame(2, THEIRS, VIP, THEIRS, VIP)) == (VIP, THEIRS)  # gratuitous reply
    assert sender(frame(2, THEIRS, VIP, FORGED, "192.0.2.100")) == (VIP, THEIRS)  # an answer
    assert sender(frame(1, THEIRS, "192.0.2.100", tpa=VIP)) == ("192.0.2.100", THEIRS)


@pytest.mark.parametrize(
    "bad",
    [
        frame(3, THEIRS, VIP),  # RARP request
        frame(1, THEIRS, VIP)[:41],  # short
        frame(1, THEIRS, VIP)[:12] + b"\x08\x00" + frame(1, THEIRS, VIP)[14:],  # IPv4, not ARP
        frame(1, THEIRS, VIP)[:16] + b"\x86\xdd" + frame(1, THEIRS, VIP)[18:],  # not IPv4 ARP
        b"",
    ],
)
def test_other_frames_are_no_claims(bad: bytes) -> None:
    assert sender(bad) is None


def watching(*vips: str) -> ArpWatch:
    w = ArpWatch(confirm=0.5, repeat=60.0)
    w.watch(vips or (VIP, OTHER))
    return w


def test_one_warning_per_vip_and_mac_after_the_confirmation_delay() -> None:
    w = watching()
    for t in (0.0, 0.01, 0.2):
        w.seen(VIP, THEIRS, 100 + t)
    w.seen(OTHER, THEIRS, 100.0)
    w.seen(VIP, FORGED, 100.1)
    assert w.deadline() == 100.5
    assert w.due(100.49) == [] and w.conflicts == 0
    warned = w.due(100.6)
    assert warned == [
        Conflict(VIP, "02:00:00:00:00:02", 3, again=False),
        Conflict(OTHER, "02:00:00:00:00:02", 1, again=False),
        Conflict(VIP, "02:00:00:00:ba:d0", 1, again=False),
    ]
    assert w.conflicts == 3 and w.deadline() is None
    assert str(warned[0]).startswith(
        "WARNING: ARP conflict: 198.51.100.10 is claimed by 02:00:00:00:00:02 while this "
        "helper is the active balancer"
    )


def test_claims_that_go_on_are_repeated_at_most_every_repeat_seconds() -> None:
    w = watching()
    w.seen(VIP, THEIRS, 0.0)
    w.due(0.5)
    reminders = []
    for t in range(1, 200, 3):
        w.seen(VIP, THEIRS, float(t))
        reminders += [(t, c) for c in w.due(float(t))]
    assert [t for t, _ in reminders] == [61, 121, 181]
    assert [(c.again, c.frames) for _, c in reminders] == [(True, 21), (True, 20), (True, 20)]
    assert str(reminders[0][1]) == (
        "WARNING: ARP conflict goes on: 198.51.100.10 claimed by 02:00:00:00:00:02 "
        "21 more times since the last warning"
    )
    assert w.conflicts == 1


def test_a_claim_after_a_quiet_repeat_period_is_a_new_conflict() -> None:
    w = watching()
    w.seen(VIP, THEIRS, 0.0)
    assert len(w.due(1.0)) == 1
    assert w.due(70.0) == []  # over
    w.seen(VIP, THEIRS, 70.0)
    assert [c.again for c in w.due(70.5)] == [False] and w.conflicts == 2


def test_no_claim_for_addresses_that_are_not_ours_now() -> None:
    w = watching(VIP)
    w.seen("192.0.2.12", THEIRS, 0.0)
    w.seen(OTHER, THEIRS, 0.0)
    assert w.due(10.0) == [] and w.deadline() is None
    w.watch([OTHER])  # a reload
    w.seen(VIP, THEIRS, 11.0)
    assert w.due(12.0) == []


def test_leaving_the_active_role_drops_unconfirmed_claims() -> None:
    """A planned switch: the old balancer hears the new one just before its DEACTIVATE."""
    w = watching()
    w.seen(VIP, THEIRS, 0.0)
    w.reset()
    assert w.due(1.0) == [] and w.conflicts == 0 and w.deadline() is None


def test_a_flood_of_forged_macs_is_bounded() -> None:
    w = ArpWatch(confirm=0.5, repeat=60.0, limit=10)
    w.watch([VIP])
    for i in range(10_000):
        w.seen(VIP, i.to_bytes(6, "big"), 0.0)
    assert len(w.due(1.0)) == 10 and w.conflicts == 10
