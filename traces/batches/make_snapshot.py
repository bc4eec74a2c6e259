"""Make a NeuPIMs request snapshot (`seq_len,ch_idx`) with ShareGPT lengths, seeded.

Every request is in generation: its sequence length is its prompt plus a uniformly drawn
number (1 .. its output length) of tokens generated so far. Requests are drawn (with
replacement) from a trace.h5 — by default the repository's ShareGPT trace — until `--n`
fall within `--lo` .. `--hi` tokens; channels go round-robin over `--channels`.

    python traces/batches/make_snapshot.py --n 64 --seed 0 \
        --out traces/batches/neupims-snapshot-64.csv
"""

import argparse
from pathlib import Path

import numpy as np

from neupims_py.workload.trace_file import load_trace

HERE = Path(__file__).resolve().parent


def snapshot(trace_path, n: int, seed: int, lo: int, hi: int) -> np.ndarray:
    r = load_trace(trace_path).requests
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        i = int(rng.integers(len(r)))
        generated = int(rng.integers(1, max(int(r["output_tokens"][i]), 1) + 1))
        seq = int(r["prompt_tokens"][i]) + generated
        if lo <= seq <= hi:
            out.append(seq)
    return np.asarray(out, np.int64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", default=str(HERE.parent / "sharegpt-1k-poisson.h5"))
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--lo", type=int, default=50)
    ap.add_argument("--hi", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    seq = snapshot(a.trace, a.n, a.seed, a.lo, a.hi)
    lines = ["seq_len,ch_idx"] + [f"{s},{i % a.channels}" for i, s in enumerate(seq)]
    Path(a.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
