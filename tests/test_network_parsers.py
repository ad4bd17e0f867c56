"""dladm and flowadm parsable output: the libofmt format, bandwidths, malformed input."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from dtagent.parsers.network import (
    MAX_PROBLEMS,
    escape_ofmt,
    format_bw,
    parse_bw,
    parse_flowprops,
    parse_maxbw,
    parse_show_flow,
    split_ofmt,
)

# Values as a field may hold them: anything but a newline (ofmt prints one row a line).
field_text = st.text(st.characters(blacklist_characters="\n\r"), max_size=20)


def test_split_follows_libofmt_escaping() -> None:
    # ofmt.c ofmt_print_field: ':' separates, '\' escapes ':' and '\' in values
    assert split_ofmt(r"fe80\:\:1/10:tcp", 2) == ["fe80::1/10", "tcp"]
    assert split_ofmt(r"a\\b:c", 2) == ["a\\b", "c"]
    assert split_ofmt("net0:", 2) == ["net0", ""]
    # one selected field: printed raw, no escaping
    assert split_ofmt("fe80::1", 1) == ["fe80::1"]
    # malformed: wrong field count, dangling or unknown escapes
    assert split_ofmt("a:b:c", 2) is None
    assert split_ofmt("ab", 2) is None
    assert split_ofmt("a:b\\", 2) is None
    assert split_ofmt(r"a:\b", 2) is None


def test_bandwidth_as_dladm_bw2str_prints_it() -> None:
    # libdladm.c dladm_bw2str: "%5u" Mbit/s, "%5u.%03u", or "0.%03u"
    assert parse_bw("  100") == 100_000_000
    assert parse_bw("    1.030") == 1_030_000
    assert parse_bw("0.431") == 431_000
    assert parse_bw("10000") == 10_000_000_000
    assert parse_bw("") is None  # no cap (parsable mode prints nothing)
    assert parse_bw("--") is None  # property not supported
    assert parse_bw("?") is None  # ofmt: the callback failed
    for bad in ("100M", "1.5", "-1", "1e9", "abc", "1.0300"):
        try:
            parse_bw(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was accepted")
    assert format_bw(100_000_000) == "  100"
    assert format_bw(1_030_000) == "    1.030"
    assert format_bw(431_000) == "0.431"


@given(st.integers(min_value=0, max_value=10**15))
def test_bandwidth_round_trip(bits: int) -> None:
    assert parse_bw(format_bw(bits)) == bits - bits % 1000


@given(st.lists(field_text, min_size=2, max_size=5))
def test_ofmt_round_trip(values: list[str]) -> None:
    assert split_ofmt(escape_ofmt(values), len(values)) == values


def test_maxbw_table_and_smartos_duplicate_names() -> None:
    out = "ixgbe0:\nexternal0:  500\nnet0:  100\nnet0:\nnet1:    1.500\n"
    table = parse_maxbw(out)
    assert table.bw == {"ixgbe0": None, "external0": 500_000_000, "net1": 1_500_000}
    assert table.ambiguous == {"net0"}
    assert table.problems == []


def test_maxbw_garbage_is_described_and_the_rest_kept() -> None:
    out = "ixgbe0:\nthis is not dladm\nnet1:fast\n:100\nvnic0:  200\n"
    table = parse_maxbw(out)
    assert table.bw == {"ixgbe0": None, "vnic0": 200_000_000}
    assert len(table.problems) == 3
    assert "line 2" in table.problems[0] and "LINK:VALUE" in table.problems[0]
    assert "line 3" in table.problems[1] and "'fast'" in table.problems[1]


def test_show_flow_from_the_manpage_example(samples_dir: Path) -> None:
    # The flows of flowadm(8) EXAMPLES as `show-flow -p -o flow,link` prints them.
    text = (samples_dir / "flowadm_show_flow_manpage_example.txt").read_text()
    rows = [ln.split() for ln in text.splitlines() if ln and not ln.startswith(("#", "FLOW"))]
    flows = {r[0]: r[1] for r in rows if len(r) == 7}
    assert flows == {"https1": "bge0", "https-1": "bge0"}
    parsable = "".join(escape_ofmt([f, link]) + "\n" for f, link in flows.items())
    assert parse_show_flow(parsable).links == flows
    props = {(r[0], r[1]): r[2] for r in rows if len(r) == 5 and r[1] in ("maxbw", "priority")}
    assert props == {("https-1", "maxbw"): "500", ("https-1", "priority"): "high"}
    # show-flowprop -c prints the value as dladm_bw2str made it, leading spaces kept
    line = escape_ofmt(["https-1", "maxbw", format_bw(500_000_000)])
    assert line == "https-1:maxbw:  500"
    parsed = parse_flowprops(line + "\nhttps-1:priority:high\n")
    assert parsed.maxbw == {"https-1": 500_000_000}
    assert parsed.priority == {"https-1": "high"}
    assert parsed.problems == []


def test_flow_parsers_report_malformed_lines() -> None:
    flows = parse_show_flow("web:net0\nweb:net1\nbad line\n:net0\n")
    assert flows.links == {"web": "net0"}
    assert len(flows.problems) == 3
    props = parse_flowprops("web:maxbw:lots\nweb:priority:HIGH!\nweb:colour:red\nweb:priority:\n")
    assert props.maxbw == {} and props.priority == {}
    assert len(props.problems) == 3


def test_problems_are_bounded() -> None:
    table = parse_maxbw("garbage\n" * 1000)
    assert len(table.problems) == MAX_PROBLEMS + 1
    assert table.problems[-1].startswith("(more")


@given(st.text())
def test_no_input_makes_a_parser_raise(text: str) -> None:
    table = parse_maxbw(text)
    lines = [ln for ln in text.split("\n") if ln.strip()]
    # every non-blank line is accounted for: a link of its own, one of two or more
    # lines of an ambiguous link, or a problem
    if len(lines) <= MAX_PROBLEMS:
        if table.ambiguous:
            assert len(table.problems) + len(table.bw) + 2 * len(table.ambiguous) <= len(lines)
        else:
            assert len(table.problems) + len(table.bw) == len(lines)
    parse_show_flow(text)
    parse_flowprops(text)


@given(st.lists(st.tuples(field_text, field_text), max_size=8))
def test_generated_maxbw_output(rows: list[tuple[str, str]]) -> None:
    text = "".join(escape_ofmt([link, value]) + "\n" for link, value in rows)
    table = parse_maxbw(text)
    for link, value in rows:
        if [r[0] for r in rows].count(link) != 1:
            continue  # a name printed twice is ambiguous
        if link in ("", "--", "?"):
            assert link not in table.bw and table.problems  # no usable link name
            continue
        try:
            expect = parse_bw(value)
        except ValueError:
            assert link not in table.bw and table.problems
            continue
        assert table.bw[link] == expect


def test_a_last_line_without_its_newline_is_not_read_as_complete() -> None:
    # killed at its timeout mid-line, dladm may have printed "net0:  10" of "net0:  1000"
    table = parse_maxbw("net1:  100\nnet0:  10")
    assert table.bw == {"net1": 100_000_000}
    assert table.problems == ["line 2: truncated (no newline at the end): 'net0:  10'"]
    flows = parse_show_flow("https-1:bge0\nhttp")
    assert flows.links == {"https-1": "bge0"} and "truncated" in flows.problems[0]
