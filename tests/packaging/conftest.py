"""The RPM, built once per test run for every packaging test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.packaging.test_rpm import TOOLS, make_rpm


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run make setup (Debian: apt-get install rpm)")
    base = tmp_path_factory.mktemp("rpm")
    return make_rpm(base / "top", base / "dist")
