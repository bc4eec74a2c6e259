"""Running a sweep: every point is a `neupims-sim run`, locally in-process (`jobs=1`), in a
process pool, or as Ray tasks; results gathered into one table.

Layout of the output directory:

    OUT/points/KEY/   summary.json, requests.csv, tokens.csv, iterations.csv of one point;
                      KEY hashes its resolved configuration (spec.point_key), so a point whose
                      summary.json exists is not run again, and equal points run once
    OUT/results.csv   one row per point: its swept fields, status (ok or error), error
                      message, whether it was reused from an earlier run, its KEY, and every
                      number of its summary.json as a dotted column (throughput.
                      output_tokens_per_s, latency_ms.ttft.p50, ...)
    OUT/results.parquet  the same, when pyarrow is installed
    OUT/plots/        METRIC-vs-FIELD.png

A point runs in a temporary directory and hands its files back to the driver, which writes
them into OUT/points (atomically, as `run --out` does): Ray workers on other nodes need the
input files (hardware, model, trace) at the same absolute paths, but not OUT.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import multiprocessing
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager, nullcontext, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

from neupims_py.errors import UserError
from neupims_py.outputs import ProgressLine
from neupims_py.sweep.spec import Sweep, point_key, run_argv

POINTS_DIR = "points"
FIXED_COLUMNS = ("point", "status", "error", "reused", "key")
# summary.json keys that say what was run rather than what it measured
SUMMARY_META = ("neupims_sim", "hw", "hw_config_hash", "mode", "model", "trace", "seed",
                "overrides", "scheduler", "cost_model", "units")


@dataclass
class Results:
    columns: list[str]
    rows: list[dict]
    swept: tuple[str, ...]
    ran: int  # points simulated by this call (equal points count once)
    reused: int
    failed: int


def run_point(argv: list[str]) -> dict:
    """One point: `neupims-sim run` (the Python function, not a subprocess) into a temporary
    directory. Returns {"status": "ok", "files": {name: text}} or {"status": "error",
    "error": message}; never raises, so one point cannot stop the sweep."""
    from neupims_py.serving import cli as serving_cli

    parser = argparse.ArgumentParser(prog="neupims-sim", exit_on_error=False)
    serving_cli.register(parser.add_subparsers())
    err = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="neupims-sweep-") as tmp:
        out = os.path.join(tmp, "run")
        try:
            with redirect_stdout(io.StringIO()), redirect_stderr(err):
                args = parser.parse_args([*argv, "--out", out])
                args.func(args)
            files = {p.name: p.read_text(encoding="utf-8") for p in sorted(Path(out).iterdir())
                     if p.is_file()}
        except UserError as exc:
            return {"status": "error", "error": str(exc)}
        except (SystemExit, argparse.ArgumentError) as exc:  # a value `run` does not accept
            lines = err.getvalue().strip().splitlines()
            return {"status": "error", "error": lines[-1] if lines else str(exc)}
        except Exception as exc:  # a bug in one point: report it, keep sweeping
            return {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    return {"status": "ok", "files": files}


def run_sweep(sweep: Sweep, out: Path, *, jobs: int = 1, ray: str | None = None,
              progress: Callable | None = None) -> Results:
    """Run the points of `sweep` that have no summary.json under `out` yet, then gather
    every point into results.csv (and results.parquet)."""
    # connected to Ray before anything is written, so a wrong address leaves no files
    with _ray_session(ray) if ray is not None else nullcontext() as ray_module:
        return _run_sweep(sweep, out, jobs, ray_module, progress)


def _run_sweep(sweep, out, jobs, ray_module, progress) -> Results:
    points_dir = out / POINTS_DIR
    points_dir.mkdir(parents=True, exist_ok=True)
    digests: dict = {}
    keys: list[tuple[str | None, str]] = []
    for point in sweep.points:
        try:
            keys.append((point_key(point, digests), ""))
        except UserError as exc:
            keys.append((None, str(exc)))
    todo: dict[str, list[str]] = {}
    done_before = set()
    for point, (key, _) in zip(sweep.points, keys):
        if key is None:
            continue
        if (points_dir / key / "summary.json").is_file():
            done_before.add(key)
        elif key not in todo:
            todo[key] = run_argv(point)
    errors: dict[str, str] = {}
    finished = 0
    for key, outcome in _execute(todo, jobs, ray_module):
        if outcome["status"] == "ok":
            _write_point(points_dir / key, outcome["files"])
        else:
            errors[key] = outcome["error"]
        finished += 1
        if progress is not None:
            progress(finished, len(todo), len(errors))
    rows = []
    for i, (point, (key, error)) in enumerate(zip(sweep.points, keys)):
        row = {"point": i, **{f: point.get(f) for f in sweep.swept}, "key": key,
               "reused": key in done_before}
        if key is None or key in errors:
            row.update(status="error", error=error or errors[key])
        else:
            summary = json.loads((points_dir / key / "summary.json").read_text(encoding="utf-8"))
            row.update(status="ok", error="", **metrics(summary))
        rows.append(row)
    columns = ["point", *sweep.swept, "status", "error", "reused", "key"]
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    results = Results(columns=columns, rows=rows, swept=sweep.swept, ran=len(todo),
                      reused=len(done_before), failed=sum(r["status"] == "error" for r in rows))
    write_table(out, results)
    return results


def metrics(summary: dict) -> dict:
    """Every number of a summary.json, as dotted keys (what was run is left out)."""
    out = {}

    def walk(d, prefix):
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                if key != "requests.rejected_reasons":
                    walk(v, key + ".")
            elif isinstance(v, int | float) and not isinstance(v, bool):
                out[key] = v

    walk({k: v for k, v in summary.items() if k not in SUMMARY_META}, "")
    return out


def _execute(todo: dict[str, list[str]], jobs: int, ray) -> Iterator[tuple[str, dict]]:
    if not todo:
        return
    if ray is not None:
        yield from _execute_ray(todo, ray)
    elif jobs <= 1 or len(todo) == 1:
        for key, argv in todo.items():
            yield key, run_point(argv)
    else:
        # forkserver (spawn where there is none): a forked Numba/LLVM state is not safe
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=ctx) as pool:
            futures = {pool.submit(run_point, argv): key for key, argv in todo.items()}
            for future in as_completed(futures):
                try:
                    outcome = future.result()
                except Exception as exc:  # the worker process died (out of memory, a signal)
                    outcome = {"status": "error", "error": f"worker failed: {type(exc).__name__}: {exc}"}
                yield futures[future], outcome


@contextmanager
def _ray_session(address: str):
    """The ray module, connected to the cluster at `address` unless this process already
    is (then that connection is used and left open)."""
    try:
        import ray
    except ImportError:
        raise UserError("Ray is not installed; install the extra: pip install 'neupims-py[ray]'",
                        field="--ray") from None
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise UserError(f"cannot connect to the Ray cluster at {address!r}: {exc}",
                            field="--ray") from None
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _execute_ray(todo: dict[str, list[str]], ray) -> Iterator[tuple[str, dict]]:
    task = ray.remote(num_cpus=1)(run_point)
    refs = {task.remote(argv): key for key, argv in todo.items()}
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        for ref in ready:
            try:
                outcome = ray.get(ref)
            except Exception as exc:  # the task or its worker died
                outcome = {"status": "error", "error": f"ray task failed: {type(exc).__name__}: {exc}"}
            yield refs[ref], outcome


def _write_point(path: Path, files: dict[str, str]) -> None:
    from neupims_py.serving.metrics import write_outputs

    write_outputs(path, files)


# ---------------------------------------------------------------------- the table


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 2**53 else repr(v)
    return str(v)


def table_text(results: Results) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(results.columns)
    for row in results.rows:
        w.writerow([_cell(row.get(c)) for c in results.columns])
    return buf.getvalue()


def write_table(out: Path, results: Results) -> None:
    """results.csv, and results.parquet when pyarrow imports; each written atomically."""
    _atomic(out / "results.csv", lambda p: p.write_text(table_text(results), encoding="utf-8"))
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return
    arrays = {}
    for c in results.columns:
        values = [row.get(c) for row in results.rows]
        present = [v for v in values if v is not None]
        if present and all(isinstance(v, bool) for v in present):
            arrays[c] = pa.array(values, pa.bool_())
        elif present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
            kind = pa.int64() if all(isinstance(v, int) for v in present) else pa.float64()
            arrays[c] = pa.array(values, kind)
        else:
            arrays[c] = pa.array([None if v is None else _cell(v) for v in values], pa.string())
    _atomic(out / "results.parquet", lambda p: pq.write_table(pa.table(arrays), p))


def _atomic(path: Path, write) -> None:
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class Progress(ProgressLine):
    """`[####....] points 3/12 run, 1 failed, 40 s` on stderr (as `run`'s progress line)."""

    def __call__(self, done: int, total: int, failed: int) -> None:
        if self.due(force=done >= total):
            width = 20
            bar = "#" * (width * done // total) + "." * (width - width * done // total)
            self.show(f"[{bar}] points {done}/{total} run, {failed} failed, {self.elapsed():.0f} s")
