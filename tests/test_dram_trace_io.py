"""DRAM request trace readers: both formats, auto-detection, and every bad input's message."""

from pathlib import Path

import numpy as np
import pytest

from neupims_py.dram.trace_io import FORMATS, detect_format, parse_trace, read_trace
from neupims_py.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def slow_parse(text: str, fmt: str):
    """The obviously correct twin: line by line, for well-formed traces."""
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split(",") if fmt == "csv" else line.split()
        if not line.strip() or (fmt == "csv" and number == 1 and not line[0].isdigit()):
            continue
        addr, op, cycle = (f.strip() for f in fields)
        hex_addr = fmt == "dramsim3" or addr.lower().startswith("0x")
        rows.append((int(addr, 16 if hex_addr else 10), FORMATS[fmt].ops[op.upper()],
                     int(cycle), number))
    return [np.array(c) for c in zip(*rows)]


def check_against_slow(text: str, fmt: str):
    t = parse_trace(text.encode(), fmt)
    addr, is_write, cycle, line = slow_parse(text, fmt)
    np.testing.assert_array_equal(t.addr, addr)
    np.testing.assert_array_equal(t.is_write, is_write)
    np.testing.assert_array_equal(t.cycle, cycle)
    np.testing.assert_array_equal(t.line, line)
    assert t.addr.dtype == np.int64 and t.cycle.dtype == np.int64 and t.is_write.dtype == bool


def test_dramsim3_variants():
    text = "0x0 READ 0\n\n0x40 write 1\r\n0X80 P_MEM_WR 2\n  0xC0\tp_mem_rd   2  \n1f40 Read 9"
    t = parse_trace(text.encode(), "dramsim3")
    assert t.addr.tolist() == [0, 0x40, 0x80, 0xC0, 0x1F40]
    assert t.is_write.tolist() == [False, True, True, False, False]
    assert t.cycle.tolist() == [0, 1, 2, 2, 9]
    assert t.line.tolist() == [1, 3, 4, 5, 6]


def test_csv_variants():
    text = "addr,op,cycle\n64,R,0\n\n0x80, W ,1\r\n0XfF,write,1\n192,read,7\n"
    t = parse_trace(text.encode(), "csv")
    assert t.addr.tolist() == [64, 0x80, 0xFF, 192]
    assert t.is_write.tolist() == [False, True, True, False]
    assert t.cycle.tolist() == [0, 1, 1, 7]
    assert t.line.tolist() == [2, 4, 5, 6]
    assert parse_trace(b"64,R,0", "csv").addr.tolist() == [64]  # no header, no final newline


@pytest.mark.parametrize("fmt", ["dramsim3", "csv"])
def test_random_traces_match_the_slow_twin(fmt):
    rng = np.random.default_rng(7)
    n = 2000
    addr = rng.integers(0, 1 << 40, n) >> rng.integers(0, 40, n)
    ops = [op for op in FORMATS[fmt].ops]
    op = [ops[i] for i in rng.integers(0, len(ops), n)]
    op = [o.lower() if flip else o for o, flip in zip(op, rng.integers(0, 2, n))]
    cycle = np.cumsum(rng.integers(0, 3, n)) * rng.integers(1, 10**6)
    if fmt == "dramsim3":
        lines = [f"{a:#x} {o} {c}" for a, o, c in zip(addr, op, cycle)]
    else:
        lines = ["addr,op,cycle"] + [
            (f"{a:#x}" if a % 2 else str(a)) + f",{o},{c}" for a, o, c in zip(addr, op, cycle)
        ]
    blank = set(rng.integers(1, n, 50).tolist())
    text = "\n".join(line + ("\n" if i in blank else "") for i, line in enumerate(lines)) + "\n"
    check_against_slow(text, fmt)


def test_shipped_trace_and_auto_detection():
    path = REPO / "traces" / "dram" / "stream_r8w2_10k.trace"
    t = read_trace(path)
    check_against_slow(path.read_text(), "dramsim3")
    assert len(t.addr) == 10_000
    assert detect_format(path.read_bytes()) == "dramsim3"
    assert detect_format(b"\n\naddr,op,cycle\n1,R,0\n") == "csv"
    assert detect_format(b"") == "dramsim3"
    assert parse_trace(b"\n64,W,3\n").is_write.tolist() == [True]  # auto
    assert parse_trace(b"0x40 WRITE 3\n").addr.tolist() == [64]


BAD = [
    # (format, content, line, words the message must contain)
    ("dramsim3", "0x0 READ 0\n0x40 READ\n", 2, ["2 fields where 3 are expected", "0x40 READ"]),
    ("dramsim3", "0x0 READ 0 0x40\nREAD 1\n", 1, ["4 fields"]),
    ("dramsim3", "0x0 READ 0\n\n0xZZ READ 1\n", 3, ["address '0xZZ'", "hex", "0x<hex digits>"]),
    ("dramsim3", "0x READ 1\n", 1, ["address '0x'"]),
    ("dramsim3", "0x1ffffffffffffffff READ 1\n", 1, ["below 2**63"]),
    ("dramsim3", "0x0 READ 0\n0x0 LOAD 1\n", 2,
     ["unknown operation 'LOAD'", "READ, WRITE, P_MEM_RD, P_MEM_WR"]),
    ("dramsim3", "0x0 READ 0\n0x0 READ -1\n", 2, ["cycle '-1' is negative"]),
    ("dramsim3", "0x0 READ 1.5\n", 1, ["cycle '1.5' is not a whole number"]),
    ("dramsim3", "0x0 READ 5\n\n0x0 READ 4\n", 3,
     ["cycle 4 is earlier than", "5 (line 1)", "non-decreasing", "sort"]),
    # the first bad line in the file is reported, whatever its kind
    ("dramsim3", "0x0 READ 0\n0x0 READ x\n0x0 READ\n", 2, ["cycle 'x'"]),
    ("dramsim3", "0x0 READ 0\n0x0 READ\n0x0 READ x\n", 2, ["2 fields"]),
    ("dramsim3", "0x0 READ 0\n0x0 LOAD 1\n0xq READ 2\n", 2, ["LOAD"]),
    ("csv", "64,R,0\n64,R,0,1\n", 2, ["3 comma-separated fields", "64,R,0,1"]),
    ("csv", "64,R,0\n64 R,0,1\n", 2, ["3 comma-separated fields"]),
    ("csv", "64,R,0\n,64,R 0\n", 2, ["3 comma-separated fields"]),
    ("csv", "64,R,0\n64,,0\n", 2, ["3 comma-separated fields"]),
    ("csv", "zz,READ,0\n", 1, ["address 'zz'", "decimal or 0x-hex"]),
    ("csv", "addr,op,cycle\n64,READ,0\n6a4,READ,1\n", 3, ["address '6a4'"]),
    ("csv", "64,READ,0\n64,LOAD,1\n", 2, ["unknown operation 'LOAD'", "READ, WRITE, R, W"]),
    ("csv", "64,READ,3\n64,READ,2\n", 2, ["earlier than"]),
    ("dramsim3", "0x40,READ,0\n", 1, ["1 fields"]),  # a CSV read as DRAMsim3
]


@pytest.mark.parametrize("fmt,content,line,words", BAD)
def test_bad_input_names_file_line_and_problem(fmt, content, line, words):
    with pytest.raises(UserError) as err:
        parse_trace(content.encode(), fmt, name="t.trace")
    msg = str(err.value)
    assert msg.startswith(f"t.trace: line {line}: "), msg
    for w in words:
        assert w in msg, msg


@pytest.mark.parametrize("fmt,content,words", [
    ("dramsim3", "", "has no requests"),
    ("dramsim3", "\n \n\t\n", "has no requests"),
    ("csv", "addr,op,cycle\n", "has only a header line"),
])
def test_empty_trace(fmt, content, words):
    with pytest.raises(UserError, match=f"t.trace: the trace {words}; give one request a line"):
        parse_trace(content.encode(), fmt, name="t.trace")


def test_unreadable_file_and_unknown_format(tmp_path):
    with pytest.raises(UserError, match="nope.trace: cannot read the trace"):
        read_trace(tmp_path / "nope.trace")
    with pytest.raises(UserError, match="unknown trace format 'xml'; valid: auto, dramsim3, csv"):
        parse_trace(b"0x0 READ 0\n", "xml")
