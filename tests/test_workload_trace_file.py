"""trace.h5: exact round trips, validation of every invariant, atomic writes, damaged files."""

import os

import h5py
import numpy as np
import pytest

from neupims_py.errors import UserError
from neupims_py.formats import TRACE_FORMAT_VERSION, TRACE_REQUEST_DTYPE
from neupims_py.workload import Trace, load_trace, write_trace
from neupims_py.workload.trace_file import empty_requests

ATTRS = {
    "source": "test",
    "tokenizer": "none",
    "arrival_process": "fixed",
    "arrival_params": '{"rate_per_s": 2.0}',
    "seed": 3,
    "command": "made by hand in a test",
}


def two_sessions() -> np.ndarray:
    """Session 0 has turns at 0 s and 2 s, session 1 one turn at 1 s, plus a lone request at 3 s."""
    rows = np.zeros(4, dtype=TRACE_REQUEST_DTYPE)
    # id, arrival_ns, session_id, think_time_ns, prompt, output, history, turn, adapter
    rows[0] = (0, 0, 0, 0, 10, 20, 0, 0, -1)
    rows[1] = (1, 1_000_000_000, 1, 0, 5, 6, 0, 0, 2)
    rows[2] = (2, 2_000_000_000, 0, 1_500_000_000, 7, 8, 30, 1, -1)
    rows[3] = (3, 3_000_000_000, -1, 0, 1, 1, 0, -1, -1)
    return rows


def test_round_trip_is_exact(tmp_path):
    path = tmp_path / "t.h5"
    rows = two_sessions()
    write_trace(path, rows, ATTRS)
    trace = load_trace(path)
    assert isinstance(trace, Trace)
    assert trace.requests.dtype == TRACE_REQUEST_DTYPE
    assert trace.requests.tobytes() == rows.tobytes()
    assert trace.attrs == {**ATTRS, "format_version": TRACE_FORMAT_VERSION}
    assert trace.requests["arrival_ns"].tolist() == [0, 1_000_000_000, 2_000_000_000, 3_000_000_000]
    assert list(os.listdir(tmp_path)) == ["t.h5"]  # no temporary file left


def test_empty_requests_are_the_none_values():
    rows = empty_requests(3)
    assert rows["id"].tolist() == [0, 1, 2]
    assert rows["session_id"].tolist() == [-1, -1, -1]
    assert rows["turn"].tolist() == [-1, -1, -1]
    assert rows["adapter_id"].tolist() == [-1, -1, -1]
    assert rows["history_tokens"].tolist() == [0, 0, 0]


def mutate(field, row, value):
    rows = two_sessions()
    rows[field][row] = value
    return rows


@pytest.mark.parametrize(
    "rows, expected",
    [
        (mutate("prompt_tokens", 1, -5), "row 1 (id 1): prompt_tokens = -5: negative"),
        (mutate("output_tokens", 3, -1), "row 3 (id 3): output_tokens = -1: negative"),
        (
            mutate("arrival_ns", 2, 500),
            "row 2 (id 2): arrival_ns = 500: earlier than the row before",
        ),
        (mutate("id", 3, 1), "row 3 (id 1): id = 1: appears in another row too"),
        (mutate("adapter_id", 0, -2), "row 0 (id 0): adapter_id = -2: below -1"),
        (mutate("turn", 3, 0), "row 3 (id 3): session_id and turn must both be -1"),
        (mutate("turn", 2, 2), "row 2 (id 2): turn is out of sequence"),
        (mutate("history_tokens", 0, 4), "row 0 (id 0): history_tokens must be 0 on turn 0"),
        (
            mutate("think_time_ns", 1, 9),
            "row 1 (id 1): think_time_ns must be 0 unless it is a later turn",
        ),
    ],
)
def test_each_bad_row_gets_its_own_message(tmp_path, rows, expected):
    path = tmp_path / "bad.h5"
    with pytest.raises(UserError) as err:
        write_trace(path, rows, ATTRS)
    assert expected in str(err.value)
    assert not path.exists()  # validated before anything is written
    # The same check runs on load, for files written by other means.
    with h5py.File(path, "w") as f:
        f.create_dataset("requests", data=rows)
        for key, value in {**ATTRS, "format_version": TRACE_FORMAT_VERSION}.items():
            f.attrs[key] = value
    with pytest.raises(UserError) as err:
        load_trace(path)
    assert expected in str(err.value) and str(path) in str(err.value)


def test_history_on_a_request_without_session_is_rejected(tmp_path):
    with pytest.raises(UserError, match="history_tokens must be 0 for a request without a session"):
        write_trace(tmp_path / "x.h5", mutate("history_tokens", 3, 1), ATTRS)


def test_empty_trace_is_rejected(tmp_path):
    with pytest.raises(UserError, match="no requests"):
        write_trace(tmp_path / "x.h5", np.zeros(0, dtype=TRACE_REQUEST_DTYPE), ATTRS)


def test_missing_attribute_is_named(tmp_path):
    attrs = dict(ATTRS)
    del attrs["command"]
    with pytest.raises(UserError, match="missing attribute.*command"):
        write_trace(tmp_path / "x.h5", two_sessions(), attrs)


def test_wrong_version(tmp_path):
    path = tmp_path / "t.h5"
    write_trace(path, two_sessions(), ATTRS)
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = TRACE_FORMAT_VERSION + 1
    with pytest.raises(UserError) as err:
        load_trace(path)
    assert f"format_version is {TRACE_FORMAT_VERSION + 1}" in str(err.value)
    assert f"reads version {TRACE_FORMAT_VERSION}" in str(err.value)


def test_truncated_file(tmp_path):
    path = tmp_path / "t.h5"
    write_trace(path, two_sessions(), ATTRS)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated or corrupt"):
        load_trace(path)


def test_not_hdf5(tmp_path):
    path = tmp_path / "t.h5"
    path.write_text("id,arrival\n")
    with pytest.raises(UserError, match="truncated or corrupt"):
        load_trace(path)


def test_wrong_dtype_names_the_field(tmp_path):
    path = tmp_path / "t.h5"
    rows = two_sessions()
    other = np.zeros(len(rows), dtype=[(n, np.int64) for n in TRACE_REQUEST_DTYPE.names])
    with h5py.File(path, "w") as f:
        f.create_dataset("requests", data=other)
        for key, value in {**ATTRS, "format_version": TRACE_FORMAT_VERSION}.items():
            f.attrs[key] = value
    with pytest.raises(UserError, match="field prompt_tokens is int64, expected int32"):
        load_trace(path)


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "t.h5"
    write_trace(path, two_sessions(), ATTRS)
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(h5py.Group, "create_dataset", broken)
    rows = two_sessions()
    rows["output_tokens"] = 99
    with pytest.raises(OSError, match="disk full"):
        write_trace(path, rows, ATTRS)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["t.h5"]


def test_missing_directory(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        write_trace(tmp_path / "nope" / "t.h5", two_sessions(), ATTRS)
