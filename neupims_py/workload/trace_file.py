"""Read, validate and write trace.h5 files: the request traces that drive the serving loop.

A trace.h5 holds one compound dataset ``requests`` of ``TRACE_REQUEST_DTYPE`` (field meanings
are documented in neupims_py/formats.py) and file attributes saying where it came from.
Every trace is validated the same way when written and when loaded, so a file this package
wrote always loads, and a file it rejects is never written.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from neupims_py.errors import UserError
from neupims_py.formats import TRACE_FORMAT_VERSION, TRACE_REQUEST_DTYPE

DATASET = "requests"

# Attributes every trace carries. `arrival_params` is a JSON object as a string; `seed` is -1
# when nothing random went into the file; `tokenizer` is "none" when lengths came as counts.
REQUIRED_ATTRS = (
    "format_version",
    "source",
    "tokenizer",
    "arrival_process",
    "arrival_params",
    "seed",
    "command",
)


@dataclass(frozen=True, slots=True)
class Trace:
    """A validated trace: ``requests`` (TRACE_REQUEST_DTYPE rows sorted by arrival) and its attributes."""

    requests: np.ndarray
    attrs: dict

    def __len__(self) -> int:
        return len(self.requests)


def empty_requests(n: int) -> np.ndarray:
    """``n`` request rows with the "none" values: no session, no turn, no adapter, no history."""
    requests = np.zeros(n, dtype=TRACE_REQUEST_DTYPE)
    requests["id"] = np.arange(n)
    requests["session_id"] = -1
    requests["turn"] = -1
    requests["adapter_id"] = -1
    return requests


def load_trace(path: str | os.PathLike) -> Trace:
    """Load and validate a trace.h5; any problem is a UserError naming the file and the row."""
    where = str(path)
    if not os.path.exists(where):
        raise UserError(
            "no such file; check the path (make a trace with `neupims-sim trace ...`)", path=where
        )
    try:
        with h5py.File(where, "r") as f:
            attrs = {key: _plain(value) for key, value in f.attrs.items()}
            _check_version(attrs, where)
            if DATASET not in f:
                raise UserError(
                    f"no `{DATASET}` dataset; this is not a trace.h5 written by neupims-sim",
                    path=where,
                )
            dataset = f[DATASET]
            _check_dtype(dataset.dtype, where)
            requests = dataset[()]
    except OSError as exc:
        raise UserError(
            f"cannot read it as HDF5 ({exc}); the file is truncated or corrupt: make it again",
            path=where,
        ) from None
    _check_attrs(attrs, where)
    validate_requests(requests, where)
    return Trace(requests=requests, attrs=attrs)


def write_trace(path: str | os.PathLike, requests: np.ndarray, attrs: dict) -> None:
    """Validate, then write atomically: a temporary file in the same directory renamed over ``path``.

    ``attrs`` values must be str, int, float or bool; ``format_version`` is added here.
    """
    where = str(path)
    attrs = {"format_version": TRACE_FORMAT_VERSION, **attrs}
    _check_attrs(attrs, where)
    requests = np.asarray(requests)
    _check_dtype(requests.dtype, where)
    validate_requests(requests, where)
    directory = os.path.dirname(os.path.abspath(where))
    if not os.path.isdir(directory):
        raise UserError(f"directory {directory} does not exist; create it first", path=where)
    tmp = temporary_beside(where)
    try:
        with h5py.File(tmp, "w") as f:
            # Chunked + compressed: imported production traces reach millions of rows. No
            # timestamps, so the same command makes the same bytes.
            f.create_dataset(
                DATASET,
                data=requests,
                compression="gzip",
                compression_opts=4,
                shuffle=True,
                track_times=False,
            )
            for key, value in attrs.items():
                f.attrs[key] = value
        os.replace(tmp, where)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def temporary_beside(path: str) -> str:
    """A fresh hidden name in ``path``'s directory, so os.replace onto ``path`` is atomic.

    (mkstemp would do, but its files are private (0600) and would stay so after the rename.)
    """
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def validate_requests(requests: np.ndarray, where: str) -> None:
    """Check the invariants the serving loop relies on; raise a UserError naming the first bad row."""
    n = len(requests)
    if n == 0:
        raise UserError("the trace holds no requests", path=where)

    def fail(mask: np.ndarray, what: str, field: str | None = None) -> None:
        rows = np.flatnonzero(mask)
        if len(rows):
            row = int(rows[0])
            subject = f"{field} = {requests[field][row]}: " if field else ""
            more = f" ({len(rows)} rows in all)" if len(rows) > 1 else ""
            raise UserError(
                f"row {row} (id {requests['id'][row]}): {subject}{what}{more}", path=where
            )

    for field in (
        "arrival_ns",
        "prompt_tokens",
        "output_tokens",
        "history_tokens",
        "think_time_ns",
    ):
        fail(requests[field] < 0, "negative; it must be >= 0", field)
    for field in ("session_id", "turn", "adapter_id"):
        fail(requests[field] < -1, "below -1; use -1 for none", field)
    arrival = requests["arrival_ns"]
    bad = np.zeros(n, dtype=bool)
    bad[1:] = arrival[1:] < arrival[:-1]
    fail(bad, "earlier than the row before; rows must be sorted by arrival time", "arrival_ns")

    order = np.argsort(requests["id"], kind="stable")
    dup = np.zeros(n, dtype=bool)
    dup[order[1:]] = requests["id"][order[1:]] == requests["id"][order[:-1]]
    fail(dup, "appears in another row too; ids must be unique", "id")

    solo = requests["session_id"] == -1
    fail(
        solo != (requests["turn"] == -1),
        "session_id and turn must both be -1 (no session) or both be set",
    )
    fail(
        solo & (requests["history_tokens"] != 0),
        "history_tokens must be 0 for a request without a session",
    )
    fail(
        (requests["turn"] <= 0) & (requests["think_time_ns"] != 0),
        "think_time_ns must be 0 unless it is a later turn",
    )
    fail(
        (requests["turn"] == 0) & (requests["history_tokens"] != 0),
        "history_tokens must be 0 on turn 0",
    )
    _check_sessions(requests, ~solo, fail)


def _check_sessions(requests: np.ndarray, in_session: np.ndarray, fail) -> None:
    # Turns of a session must be 0, 1, 2, ... in arrival order (stable sort keeps file order).
    rows = np.flatnonzero(in_session)
    if len(rows) == 0:
        return
    rows = rows[np.argsort(requests["session_id"][rows], kind="stable")]
    session = requests["session_id"][rows]
    first = np.ones(len(rows), dtype=bool)
    first[1:] = session[1:] != session[:-1]
    starts = np.flatnonzero(first)
    expected = np.arange(len(rows)) - np.repeat(starts, np.diff(np.append(starts, len(rows))))
    bad = np.zeros(len(requests), dtype=bool)
    bad[rows] = requests["turn"][rows] != expected
    fail(bad, "turn is out of sequence; a session's turns must be 0, 1, 2, ... in arrival order")


def _check_version(attrs: dict, where: str) -> None:
    version = attrs.get("format_version")
    if version is None:
        raise UserError(
            "no `format_version` attribute; this is not a trace.h5 written by neupims-sim",
            path=where,
        )
    if version != TRACE_FORMAT_VERSION:
        raise UserError(
            f"format_version is {version}, this neupims-sim reads version {TRACE_FORMAT_VERSION}; "
            "make the trace again with this version's `neupims-sim trace` command",
            path=where,
        )


def _check_attrs(attrs: dict, where: str) -> None:
    missing = [key for key in REQUIRED_ATTRS if key not in attrs]
    if missing:
        raise UserError(
            f"missing attribute(s) {', '.join(missing)}; every trace records its provenance",
            path=where,
        )
    for key, value in attrs.items():
        if not isinstance(value, (str, int, float, bool, np.integer, np.floating, np.bool_)):
            raise UserError(
                f"attribute {key} is a {type(value).__name__}; use str, int, float or bool",
                path=where,
            )


def _check_dtype(dtype: np.dtype, where: str) -> None:
    if dtype == TRACE_REQUEST_DTYPE:
        return
    names = dtype.names or ()
    for name in TRACE_REQUEST_DTYPE.names:
        if name not in names:
            raise UserError(f"`{DATASET}` has no field {name}; make the trace again", path=where)
        if dtype[name] != TRACE_REQUEST_DTYPE[name]:
            raise UserError(
                f"`{DATASET}` field {name} is {dtype[name]}, expected "
                f"{TRACE_REQUEST_DTYPE[name]}; make the trace again",
                path=where,
            )
    extra = [name for name in names if name not in TRACE_REQUEST_DTYPE.names]
    raise UserError(
        f"`{DATASET}` has unexpected field(s) {', '.join(extra) or '(layout differs)'}; make the trace again",
        path=where,
    )


def _plain(value):
    """HDF5 attribute value as a plain Python value (h5py gives numpy scalars and maybe bytes)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


def output_path(path: str | os.PathLike) -> Path:
    """Check an output path is writable-looking before expensive work starts."""
    out = Path(path)
    if out.suffix not in (".h5", ".hdf5"):
        raise UserError("the output must end in .h5 (it is an HDF5 trace)", path=str(out))
    if not out.resolve().parent.is_dir():
        raise UserError(
            f"directory {out.resolve().parent} does not exist; create it first", path=str(out)
        )
    return out
