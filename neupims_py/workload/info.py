"""Summaries of a trace: the `trace info` table and its optional plot (length histograms, arrival rate)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from neupims_py.errors import UserError
from neupims_py.workload.arrivals import NS_PER_S
from neupims_py.workload.trace_file import Trace, temporary_beside


@dataclass(frozen=True, slots=True)
class LengthStats:
    """Token-count statistics; percentiles interpolate linearly between ranks (numpy's default)."""

    mean: float
    median: float
    p90: float
    p99: float
    max: int

    @classmethod
    def of(cls, values: np.ndarray) -> "LengthStats":
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        return cls(
            mean=float(values.mean()),
            median=float(p50),
            p90=float(p90),
            p99=float(p99),
            max=int(values.max()),
        )


@dataclass(frozen=True, slots=True)
class Summary:
    requests: int
    duration_s: float  # last arrival - first arrival
    rate_per_s: float  # gaps / duration, i.e. (requests - 1) / duration; 0 when all arrive at once
    prompt: LengthStats
    output: LengthStats
    history: LengthStats
    sessions: int
    turns_max: int
    adapters: int
    top_adapter_share: float  # fraction of requests using the most popular adapter


def summarize(trace: Trace) -> Summary:
    r = trace.requests
    duration = (int(r["arrival_ns"][-1]) - int(r["arrival_ns"][0])) / NS_PER_S
    in_session = r["session_id"] >= 0
    adapters = r["adapter_id"][r["adapter_id"] >= 0]
    top_share = 0.0
    if len(adapters):
        top_share = float(np.bincount(adapters).max()) / len(r)
    return Summary(
        requests=len(r),
        duration_s=duration,
        rate_per_s=(len(r) - 1) / duration if duration > 0 else 0.0,
        prompt=LengthStats.of(r["prompt_tokens"]),
        output=LengthStats.of(r["output_tokens"]),
        history=LengthStats.of(r["history_tokens"]),
        sessions=len(np.unique(r["session_id"][in_session])),
        turns_max=int(r["turn"].max()) + 1 if in_session.any() else 0,
        adapters=len(np.unique(adapters)),
        top_adapter_share=top_share,
    )


def format_summary(summary: Summary, attrs: dict) -> str:
    s = summary
    lines = [
        f"requests        {s.requests:,}",
        f"duration        {s.duration_s:,.3f} s",
        f"rate            {s.rate_per_s:,.3f} req/s",
        "",
        f"{'tokens':<15} {'mean':>9} {'median':>9} {'p90':>9} {'p99':>9} {'max':>9}",
    ]
    rows = [("prompt", s.prompt), ("output", s.output)]
    if s.sessions:
        rows.append(("history", s.history))
    for name, st in rows:
        lines.append(
            f"{name:<15} {st.mean:>9.1f} {st.median:>9.1f} {st.p90:>9.1f} {st.p99:>9.1f} {st.max:>9,}"
        )
    lines.append("")
    if s.sessions:
        lines.append(
            f"sessions        {s.sessions:,} ({s.requests / s.sessions:.2f} turns each on average, "
            f"at most {s.turns_max})"
        )
    else:
        lines.append("sessions        none (single-turn requests)")
    if s.adapters:
        lines.append(
            f"adapters        {s.adapters:,} "
            f"(the most used serves {100 * s.top_adapter_share:.1f}% of requests)"
        )
    else:
        lines.append("adapters        none")
    lines.append("")
    for key in ("source", "tokenizer", "arrival_process", "arrival_params", "seed", "command"):
        lines.append(f"{key:<15} {attrs.get(key)}")
    return "\n".join(lines)


def pyplot(out: str):
    """matplotlib.pyplot for writing ``out``; a UserError if the name is not .png or matplotlib is missing."""
    if not out.lower().endswith(".png"):
        raise UserError("the plot is a PNG: give a file name ending in .png", field="--plot")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ModuleNotFoundError:
        raise UserError(
            "needs matplotlib: pip install 'neupims-py[plot]'", field="--plot"
        ) from None
    return plt


def plot_summary(trace: Trace, out: str) -> None:
    """Length histograms and the arrival rate over time, as a PNG. Needs matplotlib (extra ``plot``)."""
    plt = pyplot(out)
    r = trace.requests
    fig, (ax_len, ax_rate) = plt.subplots(1, 2, figsize=(11, 4))
    top = max(int(r["prompt_tokens"].max()), int(r["output_tokens"].max()), 1)
    bins = np.linspace(0, top, 60)
    ax_len.hist(r["prompt_tokens"], bins=bins, alpha=0.6, label="prompt")
    ax_len.hist(r["output_tokens"], bins=bins, alpha=0.6, label="output")
    ax_len.set_xlabel("tokens")
    ax_len.set_ylabel("requests")
    ax_len.set_title("length histograms")
    ax_len.legend()
    times = (r["arrival_ns"] - r["arrival_ns"][0]) / NS_PER_S
    span = float(times[-1])
    if span > 0:
        width = span / min(100, max(10, len(r) // 20))
        edges = np.arange(0, span + width, width)
        counts, edges = np.histogram(times, bins=edges)
        ax_rate.step(edges[:-1], counts / width, where="post")
        ax_rate.set_xlabel("time (s)")
        ax_rate.set_ylabel("arrivals per second")
        ax_rate.set_title(f"arrival rate ({width:.3g} s bins)")
    else:
        ax_rate.text(0.5, 0.5, "every request arrives at time 0", ha="center", va="center")
        ax_rate.set_axis_off()
    fig.suptitle(str(trace.attrs.get("source")))
    fig.tight_layout()
    tmp = None
    try:
        # Same directory + rename: an interrupted run leaves no half-written picture.
        tmp = temporary_beside(out)
        with open(tmp, "xb") as f:
            fig.savefig(f, format="png", dpi=100)
        os.replace(tmp, out)
        tmp = None
    except OSError as exc:
        raise UserError(f"cannot write the plot ({exc.strerror})", path=out) from None
    finally:
        plt.close(fig)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
