"""The documents say what the code does: the README's two commands are the Makefile's and CI's,
its options table is `--help`, no document names an issue, and `make bench` writes its own
figures into docs/benchmarks.md."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from bench.__main__ import ALL, document
from bench.report import Table

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
SET_UP = "apt-get update && apt-get install -y make"


def section(title: str) -> str:
    """The README's text under `## title`, up to the next heading of that level."""
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end > 0 else None]


def test_the_readme_starts_with_the_demo_and_the_test_command_ci_runs() -> None:
    first_block = README.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in first_block.splitlines()]
    assert commands == [f"{SET_UP} && make demo", f"{SET_UP} && make test"]
    assert README.index("```sh") < README.index("\n## ")  # before anything else
    assert f"{SET_UP} && make test" in (ROOT / ".ci" / "run").read_text()
    targets = re.findall(r"^([a-z-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert {"demo", "test"} <= set(targets)


def help_options() -> dict[str, str | None]:
    """`--help` as {each spelling of an option, with its value: the default, None without one}."""
    env = {**os.environ, "COLUMNS": "1000"}  # one line per option
    out = subprocess.run(
        [sys.executable, "-m", "cgp_ipvs_helper", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=ROOT,
    ).stdout
    options = {}
    for line in out.splitlines():
        found = re.match(r"  (-\S.*?)\s{2,}(.*)$", line)
        if found:
            default = re.search(r"\(default:? ([^;)]+)", found.group(2))
            for spelling in found.group(1).split(", "):
                options[spelling] = default.group(1) if default else None
    return options


def readme_options() -> dict[str, str]:
    """The README's options table as {each spelling of an option, with its value: the default}."""
    rows = [line for line in section("Options").splitlines() if line.startswith("| `")]
    options = {}
    for row in rows:
        option, _meaning, default = (c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1])
        options.update(dict.fromkeys(re.findall(r"`([^`]+)`", option), default))
    return options


def test_the_options_table_is_the_help() -> None:
    helped, documented = help_options(), readme_options()
    assert set(documented) == set(helped)
    for spelling, default in helped.items():
        expected = {default} if default else {"off", ""}
        assert documented[spelling] in expected, spelling


def test_no_document_names_an_issue() -> None:
    documents = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *(ROOT / "docs").glob("*.md")]
    for path in documents:
        found = re.findall(r".{0,30}\bissues? \d+.{0,30}", path.read_text(), re.IGNORECASE)
        assert not found, (path.name, found)


def test_the_benchmark_document_says_when_what_and_where_before_every_table() -> None:
    info = dict(
        date="2026-12-01 02:44:52 UTC",
        commit="554356b",
        uncommitted=True,
        cpus=2,
        cpu="Some CPU",
        python="3.11.7",
        uml_kernel="6.1.176",
        uml_pinned_cpu=1,
        total_s=872,
        ran=list(ALL),
    )
    summary = Table("Summary: targets", ["benchmark", "target"], [["activation", "< 100 ms"]])
    machine = Table("The machine", ["operation", "host"], [["one system call", "0.3"]], ["n"])
    text = document(info, [summary, machine])
    head, tables = text.split("\n### ", 1)
    assert head.startswith("# Benchmarks\n")
    for fact in ("`make bench` on 2026-12-01 02:44:52 UTC", "commit 554356b with uncommitted"):
        assert fact in head
    for fact in ("2 CPUs (Some CPU)", "user-mode Linux 6.1.176", "14.5 minutes"):
        assert fact in head
    assert tables.startswith("Summary: targets\n")
    assert "| activation | < 100 ms |" in tables and "### The machine" in tables
    assert "\n- n" in tables
    assert "partial" not in head
    partial = document({**info, "ran": ["footprint"]}, [summary])
    assert "A partial run (footprint), not published" in partial


def test_the_published_benchmarks_are_such_a_document() -> None:
    published = (ROOT / "docs" / "benchmarks.md").read_text()
    assert published.startswith("# Benchmarks\n\nWritten by `make bench`")
    assert re.search(r"`make bench` on \d{4}-\d\d-\d\d [\d:]+ \w+, commit [0-9a-f]{7}", published)
    assert "### Summary: targets" in published
