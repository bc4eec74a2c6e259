"""Readers of DRAM request traces: DRAMsim3's ``0x<addr> READ|WRITE <cycle>`` lines and CSV.

Both give the engine's inputs (byte address, is-write, earliest cycle) and each request's
line number, for messages. The parse is vectorised over the file's bytes, with no Python loop
over lines, so a million lines take a fraction of a second. The first bad line (in file order)
is a ``UserError`` naming the file, the line, what is wrong and how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from neupims_py.errors import UserError


class DramTrace(NamedTuple):
    addr: np.ndarray  # int64 byte address
    is_write: np.ndarray  # bool
    cycle: np.ndarray  # int64 earliest cycle the front end may offer the request
    line: np.ndarray  # int64 1-based line of the request in its file
    format: str  # the key of FORMATS it was read as


@dataclass(frozen=True, slots=True)
class TraceFormat:
    name: str
    description: str
    comma_separated: bool  # fields split by commas (else by whitespace)
    decimal_addresses: bool  # an address without 0x is decimal (else it is hex all the same)
    ops: dict[str, bool]  # operation name (upper case; matched in any case) -> is a write
    example: str


FORMATS = {
    f.name: f
    for f in (
        TraceFormat(
            name="dramsim3",
            description="DRAMsim3's trace: one request a line, `0x<hex address> READ|WRITE "
            "<cycle>` (P_MEM_RD/P_MEM_WR too, any case)",
            comma_separated=False,
            decimal_addresses=False,
            ops={"READ": False, "WRITE": True, "P_MEM_RD": False, "P_MEM_WR": True},
            example="0x1f40 READ 120",
        ),
        TraceFormat(
            name="csv",
            description="`addr,op,cycle` a line, optional header line; addr decimal or 0x-hex, "
            "op READ/WRITE/R/W (any case)",
            comma_separated=True,
            decimal_addresses=True,
            ops={"READ": False, "WRITE": True, "R": False, "W": True},
            example="0x1f40,READ,120",
        ),
    )
}

_NL, _COMMA = ord("\n"), ord(",")
_OP_BYTES = 8  # the longest operation name (P_MEM_RD), packed into one uint64 key
_MAX_DIGITS = {16: 16, 10: 18}  # digits that always fit: uint64 for hex, int64 for decimal
_PAD = 24  # > any digit run looked at, and >= _OP_BYTES
_KEEP_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(_OP_BYTES + 1)], np.uint64)
_DIGIT = np.full(256, 255, np.uint8)
_DIGIT[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
_DIGIT[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16)
_DIGIT[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)
_UPPER = np.arange(256, dtype=np.uint8)
_UPPER[ord("a") : ord("z") + 1] -= 32


def _op_key(name: str) -> int:
    return int.from_bytes(name.encode("ascii"), "little")


def read_trace(path: str | Path, fmt: str = "auto") -> DramTrace:
    """Parse the trace file at `path`; `fmt` is a key of FORMATS or "auto" (by content)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read the trace: {exc.strerror or exc}", path=str(path)) from None
    return parse_trace(data, fmt, name=str(path))


def detect_format(data: bytes) -> str:
    """"csv" when the first non-blank line has a comma, else "dramsim3"."""
    for line in data[: 1 << 16].splitlines():
        if line.strip():
            return "csv" if b"," in line else "dramsim3"
    return "dramsim3"


def parse_trace(data: bytes, fmt: str = "auto", *, name: str = "<trace>") -> DramTrace:
    """Parse trace text; `name` is the file named in error messages."""
    if fmt == "auto":
        fmt = detect_format(data)
    if fmt not in FORMATS:
        raise UserError(f"unknown trace format {fmt!r}; valid: auto, " + ", ".join(FORMATS))
    return _Parser(data, FORMATS[fmt], name).parse()


class _Parser:
    """One parse: token boundaries over the whole buffer, then each column in bulk."""

    def __init__(self, data: bytes, spec: TraceFormat, name: str):
        self.data = data
        self.buf = np.frombuffer(data, np.uint8)
        self.spec = spec
        self.name = name
        self.newlines = np.flatnonzero(self.buf == _NL)
        # Numbers and operation names are gathered from a padded copy: any token byte index
        # + _PAD is in range, and an 8-byte word can be read at any byte.
        pad = np.zeros(_PAD, np.uint8)
        self.padded = np.concatenate([pad, self.buf, pad])
        self.words = np.ndarray((len(self.padded) - 7,), "<u8", self.padded, strides=(1,))
        self.header = None  # 0-based line of a CSV header

    def fail(self, line: int, problem: str):
        raise UserError(f"line {line}: {problem}", path=self.name)

    def line_text(self, line: int) -> str:
        nl = self.newlines
        start = nl[line - 2] + 1 if line >= 2 else 0
        end = nl[line - 1] if line - 1 < len(nl) else len(self.data)
        text = self.data[start:end].decode("utf-8", errors="replace").strip()
        return text if len(text) <= 80 else text[:77] + "..."

    def token(self, start: int, end: int) -> str:
        text = self.data[start:end].decode("utf-8", errors="replace")
        return repr(text if len(text) <= 40 else text[:37] + "...")

    def parse(self) -> DramTrace:
        spec, buf = self.spec, self.buf
        # Separators: ASCII whitespace (and commas in a CSV). Tokens never contain one.
        sep = (buf == 32) | ((buf >= 9) & (buf <= 13))
        if spec.comma_separated:
            sep |= buf == _COMMA
        edge = np.diff(sep.view(np.int8), prepend=np.int8(1), append=np.int8(1))
        starts = np.flatnonzero(edge == -1)
        ends = np.flatnonzero(edge == 1)
        # Tokens on each 0-based line (the last line is the one after the final newline).
        fields = np.diff(np.searchsorted(starts, self.newlines), prepend=0, append=len(starts))
        if spec.comma_separated and len(starts):
            first = int(np.argmax(fields > 0))
            if self._is_header(starts[[0, fields[first] - 1]]):
                self.header = first
                starts, ends = starts[fields[first] :], ends[fields[first] :]
                fields[first] = 0

        # Lines before the first malformed one parse as rows; an error among them comes first.
        bad_line = self._first_malformed_line(starts, fields)
        good = fields[:bad_line]
        n = int(good.sum()) // 3
        line = np.flatnonzero(good) + 1
        s = starts[: 3 * n].reshape(n, 3)
        e = ends[: 3 * n].reshape(n, 3)

        addr, addr_err = self._addresses(s[:, 0], e[:, 0])
        is_write, op_err = self._ops(s[:, 1], e[:, 1])
        cycle, cycle_err = self._cycles(s[:, 2], e[:, 2])
        firsts = [
            (int(np.argmax(bad)), report)
            for bad, report in (addr_err, op_err, cycle_err)
            if bad.any()
        ]
        if firsts:
            row, report = min(firsts, key=lambda x: x[0])
            self.fail(int(line[row]), report(row))
        if bad_line is not None:
            self._report_malformed(bad_line)

        if n == 0:
            what = "has no requests" if self.header is None else "has only a header line"
            raise UserError(
                f"the trace {what}; give one request a line, e.g. `{spec.example}`", path=self.name
            )
        back = np.flatnonzero(cycle[1:] < cycle[:-1])
        if len(back):
            i = int(back[0]) + 1
            self.fail(
                int(line[i]),
                f"cycle {cycle[i]} is earlier than the previous request's {cycle[i - 1]} "
                f"(line {line[i - 1]}); requests must come in non-decreasing cycle order: "
                "sort the trace by cycle with a stable sort (same-cycle requests keep their order)",
            )
        return DramTrace(addr=addr, is_write=is_write, cycle=cycle, line=line, format=spec.name)

    def _is_header(self, first_and_last) -> bool:
        """A CSV's first line is a header when neither its first nor its last field starts
        with a digit (so `zz,READ,0` is a bad row, not a header)."""
        return not (_DIGIT[self.buf[first_and_last]] < 10).any()

    def _first_malformed_line(self, starts, fields) -> int | None:
        """0-based line of the first line that is neither blank nor exactly 3 fields."""
        bad = (fields != 0) & (fields != 3)
        if self.spec.comma_separated:
            commas = np.flatnonzero(self.buf == _COMMA)
            per_line = np.diff(np.searchsorted(commas, self.newlines), prepend=0,
                               append=len(commas))
            expected = np.where(fields == 0, 0, 2)
            if self.header is not None:
                expected[self.header] = per_line[self.header]
            bad |= per_line != expected
            if not bad.any():
                # Each row's two commas must sit between its fields, not before or after them.
                if self.header is not None:
                    commas = commas[per_line[: self.header].sum() + per_line[self.header] :]
                c = commas.reshape(-1, 2)
                s = starts.reshape(-1, 3)
                rows = np.flatnonzero((c[:, 0] < s[:, 0]) | (c[:, 0] > s[:, 1])
                                      | (c[:, 1] < s[:, 1]) | (c[:, 1] > s[:, 2]))
                bad[np.flatnonzero(fields)[rows]] = True
        hits = np.flatnonzero(bad)
        return int(hits[0]) if len(hits) else None

    def _report_malformed(self, line0: int):
        spec = self.spec
        text = self.line_text(line0 + 1)
        if spec.comma_separated:
            self.fail(line0 + 1, f"expected 3 comma-separated fields addr,op,cycle (e.g. "
                      f"`{spec.example}`), got {text!r}; fix or delete the line")
        fields = len(text.split())
        self.fail(line0 + 1, f"{fields} fields where 3 are expected (address, operation, cycle, "
                  f"e.g. `{spec.example}`): {text!r}; fix or delete the line")

    def _number(self, starts, ends, base):
        """Unsigned integers in `base` from tokens (digits only); values and a bad mask."""
        lengths = ends - starts
        bad = (lengths <= 0) | (lengths > _MAX_DIGITS[base])
        width = int(min(lengths.max(initial=0), _MAX_DIGITS[base]))
        first = width - lengths  # right-aligned: column j has the same weight in every token
        n = len(starts)
        at = ends + (_PAD - width)  # column j's byte in the padded buffer: at + j
        # Scratch reused by every column: no allocation (and page faults) per column.
        byte = np.empty(n, np.uint8)
        char = np.empty(n, np.intp)
        digit = np.empty(n, np.uint8)
        mask = np.empty(n, bool)
        value = np.zeros(n, np.uint64)
        ubase = np.uint64(base)
        for j in range(width):
            np.take(self.padded, at, out=byte)
            np.copyto(char, byte)
            np.take(_DIGIT, char, out=digit)
            np.greater(first, j, out=mask)  # before the token's first digit
            np.putmask(digit, mask, 0)
            np.greater_equal(digit, base, out=mask)
            bad |= mask
            value *= ubase
            value += digit
            at += 1
        bad |= value > np.uint64(np.iinfo(np.int64).max)
        return value.astype(np.int64), bad

    def _addresses(self, starts, ends):
        lengths = ends - starts
        at = starts + _PAD
        x = _UPPER[self.padded[at + 1]] == ord("X")
        prefixed = (lengths >= 2) & (self.padded[at] == ord("0")) & x
        hex_starts = starts + 2 * prefixed
        if self.spec.decimal_addresses:
            addr = np.zeros(len(starts), np.int64)
            bad = np.zeros(len(starts), bool)
            for rows, base, begin in ((prefixed, 16, hex_starts), (~prefixed, 10, starts)):
                addr[rows], bad[rows] = self._number(begin[rows], ends[rows], base)
            what, fix = "a decimal or 0x-hex number", "write it as e.g. 8000 or 0x1f40"
        else:
            addr, bad = self._number(hex_starts, ends, 16)
            what, fix = "a hex number", "write it as 0x<hex digits>, e.g. 0x1f40"

        def report(row):
            return (f"address {self.token(starts[row], ends[row])} is not {what} below 2**63; "
                    f"{fix}")

        return addr, (bad, report)

    def _ops(self, starts, ends):
        lengths = ends - starts
        raw = self.words[starts + _PAD] & _KEEP_BYTES[np.minimum(lengths, _OP_BYTES)]
        key = _UPPER[raw.view(np.uint8)].view(np.uint64)
        known = np.zeros(len(starts), bool)
        is_write = np.zeros(len(starts), bool)
        for op, write in self.spec.ops.items():
            match = key == np.uint64(_op_key(op))
            known |= match
            if write:
                is_write |= match
        bad = ~known | (lengths > _OP_BYTES)

        def report(row):
            return (f"unknown operation {self.token(starts[row], ends[row])}; valid: "
                    + ", ".join(self.spec.ops) + " (any case)")

        return is_write, (bad, report)

    def _cycles(self, starts, ends):
        cycle, bad = self._number(starts, ends, 10)

        def report(row):
            tok = self.token(starts[row], ends[row])
            if self.buf[starts[row]] == ord("-"):
                return f"cycle {tok} is negative; cycles count up from 0"
            return (f"cycle {tok} is not a whole number of cycles (0 to 10**18); give the "
                    "request's issue cycle in memory-clock cycles, e.g. 120")

        return cycle, (bad, report)
