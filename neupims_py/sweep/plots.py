"""Plots of a sweep: a metric against a swept field, one line per combination of the other
swept fields' values (matplotlib, the `plot` extra, imported only when a plot is asked for)."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from neupims_py.errors import UserError


def plot_metric(results, metric: str, field: str, path: Path) -> None:
    """Draw `metric` against `field` over the points that finished into the PNG `path`."""
    if metric not in results.columns or metric in ("point", "status", "error", "reused", "key"):
        close = difflib.get_close_matches(metric, results.columns, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"no metric {metric!r} in the results{hint} (the columns of "
                        "results.csv after the swept fields)", field="--plot")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("plots need matplotlib: pip install 'neupims-py[plot]'", field="--plot") from None
    others = [f for f in results.swept if f != field]
    lines: dict[tuple, list[tuple]] = {}
    for row in results.rows:
        if row["status"] != "ok" or row.get(metric) is None or row.get(field) is None:
            continue
        label = tuple(row.get(f) for f in others)
        lines.setdefault(label, []).append((row.get(field), row[metric]))
    numeric = all(isinstance(x, int | float) and not isinstance(x, bool)
                  for pts in lines.values() for x, _ in pts)
    categories = list(dict.fromkeys(str(x) for pts in lines.values() for x, _ in pts))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    try:
        for label, pts in lines.items():
            pts = sorted(pts, key=lambda p: p[0]) if numeric else pts
            xs = [x if numeric else categories.index(str(x)) for x, _ in pts]
            name = ", ".join(f"{f}={_short(v)}" for f, v in zip(others, label) if v is not None)
            ax.plot(xs, [y for _, y in pts], marker="o", label=name or metric)
        if not numeric:
            ax.set_xticks(range(len(categories)), [_short(c) for c in categories])
        ax.set_xlabel(field)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} vs {field}")
        ax.grid(True, alpha=0.3)
        if len(lines) > 1 or others:
            ax.legend(fontsize="small")
        fig.tight_layout()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            fig.savefig(tmp, dpi=100, format="png")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        plt.close(fig)


def _short(value) -> str:
    """A path-like value by its file name, so labels stay readable."""
    text = str(value)
    return Path(text).name if "/" in text else text
