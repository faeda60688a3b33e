"""Property tests: whatever arrives, at most one response, in order, and the helper stays up."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cgp_ipvs_helper.cli import LineReader
from cgp_ipvs_helper.config.vipfile import parse_vips
from cgp_ipvs_helper.core.protocol import render
from cgp_ipvs_helper.errors import VipFileError
from cgp_ipvs_helper.kernel.testing import FakeKernel

from .conftest import Clock, fresh_state, make_helper

VERBS = st.sampled_from(["INTF", "ACTIVATE", "DEACTIVATE", "STATUS", "QUIT", "activate", "X"])
TOKENS = st.one_of(
    st.from_regex(r"\d{1,3}(\.\d{1,3}){3}", fullmatch=True),
    st.text(min_size=1, max_size=12).filter(lambda t: not any(c.isspace() for c in t)),
)
LINES = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda seq, verb, args: f"{seq} {verb} {' '.join(args)}".encode(),
        st.from_regex(r"[0-9]{1,6}", fullmatch=True),
        VERBS,
        st.lists(TOKENS, max_size=6),
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(LINES, max_size=20))
def test_any_lines_get_at_most_one_response_each(lines) -> None:
    clock = Clock()
    h = make_helper(FakeKernel(fresh_state()), clock)
    h.start()
    for line in lines:
        out = render(h.handle(line))  # the lines as written: the property is about the wire
        responses = [r for r in out if not r.startswith("* ")]
        assert len(responses) <= 1
        assert all(len(r.encode()) <= 4096 and "\n" not in r for r in out)
        first = line.split(maxsplit=1)[0] if line.split() else b""
        if responses and not h.finished:
            assert responses[0].split(" ")[0].encode() == first
        clock.advance(0.7)
        h.tick()


@settings(deadline=None)
@given(st.binary(max_size=2000), st.integers(min_value=1, max_value=50))
def test_line_reader_never_loses_or_overruns(data, piece) -> None:
    r = LineReader()
    out = []
    for i in range(0, len(data), piece):
        out += r.feed(data[i : i + piece])
    out += r.finish()
    assert all(len(line) <= 4097 and b"\n" not in line for line in out)
    expected = [line[:4097] for line in data.split(b"\n")]
    if expected and expected[-1] == b"":
        expected.pop()
    assert out == expected


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_vip_file_loads_or_names_file_and_line(text) -> None:
    try:
        vips = parse_vips(text, "/etc/sysconfig/vipaddrs")
    except VipFileError as e:
        assert e.path == "/etc/sysconfig/vipaddrs"
        assert e.lineno is not None and 1 <= e.lineno <= len(text.splitlines())
        assert str(e).startswith(f"/etc/sysconfig/vipaddrs:{e.lineno}: ")
    else:
        assert len(set(vips)) == len(vips)
