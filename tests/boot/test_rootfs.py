"""The mirror the root is built from is the one apt uses here (one-line or deb822 sources)."""

from __future__ import annotations

from tests.boot.rootfs import apt_mirror

DEB822 = """Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main

Types: deb deb-src
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main contrib
"""
ONE_LINE = """# deb http://commented.example/debian bookworm main
deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main
deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm contrib main
"""


def test_the_first_deb_source_of_bookworm_main() -> None:
    assert apt_mirror([DEB822]) == "http://mirror.example/debian"
    assert apt_mirror([ONE_LINE]) == "http://one.example/debian"
    assert apt_mirror([ONE_LINE, DEB822]) == "http://one.example/debian"


def test_none_without_a_bookworm_main_source() -> None:
    assert apt_mirror([]) is None
    assert apt_mirror([DEB822.replace("main contrib", "contrib")]) is None
    assert apt_mirror(["deb-src http://src.example/debian bookworm main\n"]) is None
