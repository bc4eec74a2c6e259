"""What a serving run measured: per-request and per-iteration records, the summary, the
files they go to, and the table on the terminal.

Outputs (`--out DIR`), all deterministic (no wall-clock time, no absolute paths):

- summary.json: configuration (hash, scheduler limits in force), requests finished and
  rejected (with reasons), throughput, latency percentiles, utilisation, energy;
- requests.csv: one row per trace request (times in ns from the trace start; empty when
  it never happened): arrival, release into the queue, first scheduled, first token
  (TTFT), finish, channel, status and rejection reason;
- tokens.csv: the time of every generated token (request id, token index, ns);
- iterations.csv: one row per iteration: batch composition (prefill vs decode requests
  and tokens, KV tokens), cycles per operator group, PIM/NPU overlap, busy cycles, energy.

Files are written under temporary names and renamed into place (a new DIR as a whole).
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import shutil
from pathlib import Path

import numpy as np

from neupims_py.serving.energy import ENERGY_PARTS
from neupims_py.serving.orchestrator import ITERATION_FIELDS, ServingResult
from neupims_py.serving.request_state import FINISHED, REJECTED

REQUEST_FIELDS = (
    "id", "session_id", "turn", "status", "reason", "channel", "context_tokens",
    "output_tokens", "generated_tokens", "arrival_ns", "release_ns", "first_scheduled_ns",
    "first_token_ns", "finish_ns", "ttft_ns", "tpot_ns", "e2e_ns",
)
PERCENTILES = (50, 90, 99)


class Clock:
    """NPU cycles to nanoseconds."""

    def __init__(self, clock_mhz: float):
        self.ns_per_cycle = 1000.0 / clock_mhz

    def ns(self, cycles) -> int | None:
        return None if cycles is None or cycles < 0 else int(round(cycles * self.ns_per_cycle))


def distribution(values) -> dict:
    """count, mean, the PERCENTILES and max of `values` (just the count when empty)."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"count": 0}
    out = {"count": int(a.size), "mean": float(a.mean())}
    for p in PERCENTILES:
        out[f"p{p}"] = float(np.percentile(a, p))
    out["max"] = float(a.max())
    return out


def request_rows(result: ServingResult, clock: Clock) -> list[dict]:
    rows = []
    for r in result.requests:
        ttft = tpot = e2e = None
        arrival = r.arrival_ns
        if r.first_token >= 0:
            ttft = clock.ns(r.first_token) - arrival
        if r.status == FINISHED:
            e2e = clock.ns(r.finish) - arrival
            if r.generated > 1:
                tpot = (clock.ns(r.finish) - clock.ns(r.first_token)) / (r.generated - 1)
        rows.append({
            "id": r.id, "session_id": r.session, "turn": r.turn, "status": r.status,
            "reason": r.reason, "channel": r.channel if r.channel >= 0 else None,
            "context_tokens": r.context, "output_tokens": r.output, "generated_tokens": r.generated,
            "arrival_ns": arrival, "release_ns": clock.ns(r.release),
            "first_scheduled_ns": clock.ns(r.first_scheduled), "first_token_ns": clock.ns(r.first_token),
            "finish_ns": clock.ns(r.finish), "ttft_ns": ttft, "tpot_ns": tpot, "e2e_ns": e2e,
        })
    return rows


def summarize(result: ServingResult, clock: Clock, *, hw, meta: dict) -> dict:
    """The run in one JSON-ready dict (`meta`: what was run, from the CLI)."""
    reqs = result.requests
    rows = request_rows(result, clock)
    its = result.iterations
    col = {name: its[:, i] for i, name in enumerate(ITERATION_FIELDS)}
    finished = [r for r in rows if r["status"] == FINISHED]
    rejected = [r for r in reqs if r.status == REJECTED]
    reasons: dict[str, int] = {}
    for r in rejected:
        reasons[r.reason] = reasons.get(r.reason, 0) + 1
    span_ns = clock.ns(result.end_cycle) or 0
    seconds = span_ns / 1e9
    out_tokens = sum(r.generated for r in reqs)
    prefill_tokens = float(col["prefill_tokens"].sum()) if len(its) else 0.0
    itl = []
    for r in reqs:
        t = [clock.ns(c) for c in r.token_cycles]
        itl.extend(b - a for a, b in zip(t, t[1:]))
    cycles = col["cycles"].sum() if len(its) else 0.0
    npu = hw.npu
    energy = {p: float(col[f"energy_{p}_pj"].sum()) / 1e12 for p in ENERGY_PARTS} if len(its) else {}
    total_j = sum(energy.values())
    channels = hw.memory.geometry.channels
    return {
        **meta,
        "limits": {k: getattr(result.limits, k) for k in result.limits.__dataclass_fields__},
        "requests": {
            "total": len(reqs),
            "finished": len(finished),
            "rejected": len(rejected),
            "rejected_reasons": dict(sorted(reasons.items())),
        },
        "simulated_seconds": seconds,
        "throughput": {
            "output_tokens_per_s": out_tokens / seconds if seconds else 0.0,
            "prefill_tokens_per_s": prefill_tokens / seconds if seconds else 0.0,
            "requests_per_s": len(finished) / seconds if seconds else 0.0,
            "output_tokens": out_tokens,
            "prefill_tokens": int(prefill_tokens),
        },
        "latency_ms": {
            "ttft": to_ms(distribution([r["ttft_ns"] for r in rows if r["ttft_ns"] is not None])),
            "tpot": to_ms(distribution([r["tpot_ns"] for r in finished if r["tpot_ns"] is not None])),
            "inter_token": to_ms(distribution(itl)),
            "e2e": to_ms(distribution([r["e2e_ns"] for r in finished])),
            "e2e_per_output_token": to_ms(distribution([r["e2e_ns"] / r["generated_tokens"] for r in finished
                                                if r["generated_tokens"]])),
        },
        "iterations": {
            "count": int(len(its)),
            "mean_cycles": float(cycles / len(its)) if len(its) else 0.0,
            "mean_requests": float(col["requests"].mean()) if len(its) else 0.0,
            "max_requests": int(col["requests"].max()) if len(its) else 0,
            "with_prefill": int((col["prefill_requests"] > 0).sum()) if len(its) else 0,
            "sub_batched": int((col["sub_batches"] > 1).sum()) if len(its) else 0,
            "op_cycles": {f.removesuffix("_cycles"): float(col[f].sum()) for f in ITERATION_FIELDS
                          if f.endswith("_cycles") and f not in ("cycles", "overlap_cycles")} if len(its) else {},
        },
        "utilization": {
            "systolic_arrays": float(col["array_busy"].sum() / (cycles * npu.systolic_arrays)) if cycles else 0.0,
            "vector_units": float(col["vector_busy"].sum() / cycles) if cycles else 0.0,
            "pim": float(col["pim_busy"].sum() / (cycles * channels)) if cycles else 0.0,
            "pim_under_npu": float(col["overlap_cycles"].sum() / cycles) if cycles else 0.0,
            "dram_bus": float(col["dram_busy"].sum() / (cycles * channels)) if cycles else 0.0,
        },
        "dram_row_hit_rate": (float(col["dram_row_hits"].sum() / col["dram_column_cmds"].sum())
                              if len(its) and col["dram_column_cmds"].sum() else 0.0),
        "energy_j": {**energy, "total": total_j},
        "energy_mj_per_output_token": total_j * 1e3 / out_tokens if out_tokens else 0.0,
    }


def to_ms(d: dict) -> dict:
    """A `distribution` of nanoseconds in milliseconds."""
    return {k: (v / 1e6 if k != "count" else v) for k, v in d.items()}


# ---------------------------------------------------------------------- files


def csv_text(fields, rows) -> str:
    """CSV with a header row; None is an empty cell."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(fields)
    for row in rows:
        w.writerow(["" if v is None else _fmt(v) for v in row])
    return buf.getvalue()


def _fmt(v):
    if isinstance(v, float | np.floating):
        v = float(v)
        return str(int(v)) if v.is_integer() and abs(v) < 2**53 else format(v, ".10g")
    return v


def output_texts(result: ServingResult, summary: dict, clock: Clock) -> dict[str, str]:
    """File name -> contents of every output file."""
    rows = request_rows(result, clock)
    its = result.iterations
    start = its[:, ITERATION_FIELDS.index("start_cycle")] if len(its) else np.zeros(0)
    cyc = its[:, ITERATION_FIELDS.index("cycles")] if len(its) else np.zeros(0)
    it_rows = (
        [*row, clock.ns(s), clock.ns(s + c)] for row, s, c in zip(its.tolist(), start, cyc)
    )
    tokens = ((r.id, k, clock.ns(c)) for r in result.requests for k, c in enumerate(r.token_cycles))
    return {
        "summary.json": json.dumps(summary, indent=2, sort_keys=False) + "\n",
        "requests.csv": csv_text(REQUEST_FIELDS, ([r[f] for f in REQUEST_FIELDS] for r in rows)),
        "iterations.csv": csv_text((*ITERATION_FIELDS, "start_ns", "end_ns"), it_rows),
        "tokens.csv": csv_text(("request_id", "token", "time_ns"), tokens),
    }


def write_outputs(out: Path, files: dict[str, str]) -> None:
    """Write `files` into `out` atomically: a new directory is filled under a temporary
    name and renamed; in an existing one each file is (temporary file, then rename)."""
    tag = f"{os.getpid()}.{secrets.token_hex(4)}"
    if not out.exists():
        tmp = out.resolve().parent / f".{out.name}.{tag}.tmp"
        tmp.mkdir()
        try:
            for name, text in files.items():
                (tmp / name).write_text(text, encoding="utf-8")
            os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return
    for name, text in files.items():
        tmp = out / f".{name}.{tag}.tmp"
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, out / name)
        except BaseException:
            if tmp.exists():
                tmp.unlink()
            raise


def format_table(summary: dict, wall_seconds: float | None = None) -> str:
    """The summary as an aligned two-column table for the terminal."""
    r, t, lat = summary["requests"], summary["throughput"], summary["latency_ms"]
    u, it = summary["utilization"], summary["iterations"]

    def ms(d, k):
        return f"{d[k]:.2f}" if k in d else "-"

    lines = [
        ("system", f"{summary['hw']} ({summary['mode']}), model {summary['model']}, "
                   f"{summary['scheduler']['policy']} scheduler, {summary['cost_model']['cost_model']} costs"),
        ("requests", f"{r['finished']} finished, {r['rejected']} rejected of {r['total']}"),
        ("simulated time", f"{summary['simulated_seconds']:.3f} s in {it['count']} iterations"),
        ("throughput", f"{t['output_tokens_per_s']:.1f} output tokens/s, {t['requests_per_s']:.2f} requests/s"),
        ("TTFT ms", f"mean {ms(lat['ttft'], 'mean')}  p50 {ms(lat['ttft'], 'p50')}  p99 {ms(lat['ttft'], 'p99')}"),
        ("TPOT ms", f"mean {ms(lat['tpot'], 'mean')}  p50 {ms(lat['tpot'], 'p50')}  p99 {ms(lat['tpot'], 'p99')}"),
        ("e2e latency ms", f"mean {ms(lat['e2e'], 'mean')}  p50 {ms(lat['e2e'], 'p50')}  p99 {ms(lat['e2e'], 'p99')}"),
        ("batch", f"mean {it['mean_requests']:.1f} requests (max {it['max_requests']}), "
                  f"{it['with_prefill']} iterations with prefill, {it['sub_batched']} sub-batched"),
        ("utilization", f"arrays {u['systolic_arrays']:.1%}, vector {u['vector_units']:.1%}, "
                        f"PIM {u['pim']:.1%}, PIM under NPU {u['pim_under_npu']:.1%}, "
                        f"DRAM bus {u['dram_bus']:.1%}; row hits {summary['dram_row_hit_rate']:.1%}"),
        ("energy", f"{summary['energy_j']['total']:.3f} J, "
                   f"{summary['energy_mj_per_output_token']:.3f} mJ per output token"),
    ]
    for reason, n in r["rejected_reasons"].items():
        lines.append(("rejected", f"{n} x {reason}"))
    if wall_seconds is not None:
        rate = summary["simulated_seconds"] / wall_seconds if wall_seconds else 0.0
        lines.append(("wall time", f"{wall_seconds:.1f} s ({rate:.2f} simulated s per wall s)"))
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in lines)
