"""Synthetic token-length and adapter distributions, written on the command line as small specs.

A length spec is ``fixed:N``, ``uniform:LO:HI`` (integers, both ends included) or
``zipf:ALPHA:LO:HI`` (a power law P(k) ~ k^-ALPHA on the integers LO..HI). Adapter
popularity is a power law too: adapter k (0-based) is picked with probability ~ (k+1)^-alpha.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from neupims_py.errors import UserError

# Name -> the spec's form (help text and error messages).
LENGTH_KINDS = {
    "fixed": "fixed:N",
    "uniform": "uniform:LO:HI",
    "zipf": "zipf:ALPHA:LO:HI",
}

# Longest support a zipf spec may have: its probability table is held in memory.
MAX_ZIPF_SPAN = 10_000_000


@dataclass(frozen=True, slots=True)
class LengthDist:
    """A distribution of token counts: ``kind`` from LENGTH_KINDS and its parameters."""

    kind: str
    lo: int
    hi: int
    alpha: float = 0.0

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.kind == "fixed":
            return np.full(n, self.lo, dtype=np.int32)
        if self.kind == "uniform":
            return rng.integers(self.lo, self.hi + 1, size=n).astype(np.int32)
        # Inverse-CDF sampling on the bounded support keeps it exact and seed-stable.
        support = np.arange(self.lo, self.hi + 1, dtype=np.float64)
        cdf = np.cumsum(support**-self.alpha)
        picks = np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right")
        return (self.lo + np.minimum(picks, len(support) - 1)).astype(np.int32)

    def describe(self) -> str:
        """JSON for the trace attributes."""
        params = {"kind": self.kind, "lo": self.lo, "hi": self.hi}
        if self.kind == "zipf":
            params["alpha"] = self.alpha
        return json.dumps(params, sort_keys=True)


def parse_length_spec(spec: str, flag: str) -> LengthDist:
    """Parse a length spec; a UserError names the flag and the valid forms."""
    forms = ", ".join(LENGTH_KINDS.values())
    kind, _, rest = spec.partition(":")
    parts = rest.split(":") if rest else []
    if kind not in LENGTH_KINDS:
        raise UserError(
            f"unknown length distribution {kind!r} in {spec!r}; use one of {forms}", field=flag
        )
    expected = LENGTH_KINDS[kind].count(":")
    if len(parts) != expected:
        raise UserError(f"{spec!r} needs the form {LENGTH_KINDS[kind]}", field=flag)
    try:
        if kind == "zipf":
            alpha = float(parts[0])
            ints = [int(p) for p in parts[1:]]
        else:
            alpha = 0.0
            ints = [int(p) for p in parts]
    except ValueError:
        raise UserError(
            f"{spec!r}: token counts are integers (and ALPHA a number); form {LENGTH_KINDS[kind]}",
            field=flag,
        ) from None
    lo = ints[0]
    hi = ints[-1]
    if lo < 0 or hi < lo:
        raise UserError(f"{spec!r}: need 0 <= LO <= HI", field=flag)
    if kind == "zipf":
        if lo < 1:
            raise UserError(f"{spec!r}: a power law needs LO >= 1", field=flag)
        if not alpha >= 0:
            raise UserError(f"{spec!r}: ALPHA must be >= 0", field=flag)
        if hi - lo >= MAX_ZIPF_SPAN:
            raise UserError(f"{spec!r}: HI - LO must be below {MAX_ZIPF_SPAN}", field=flag)
    return LengthDist(kind=kind, lo=lo, hi=hi, alpha=alpha)


def adapter_popularity(n_adapters: int, alpha: float) -> np.ndarray:
    """Probability of each of ``n_adapters`` adapters: ~ (k+1)^-alpha, k = 0..n-1 (alpha 0 is uniform)."""
    if n_adapters < 1:
        raise UserError(f"need at least one adapter, not {n_adapters}", field="--adapters")
    if not alpha >= 0:
        raise UserError(
            f"the popularity exponent must be >= 0, not {alpha}", field="--adapter-alpha"
        )
    weights = np.arange(1, n_adapters + 1, dtype=np.float64) ** -alpha
    return weights / weights.sum()


def sample_adapters(rng: np.random.Generator, n: int, n_adapters: int, alpha: float) -> np.ndarray:
    """Adapter id of each of ``n`` requests; -1 for all when ``n_adapters`` is 0 (no adapters)."""
    if n_adapters == 0:
        return np.full(n, -1, dtype=np.int32)
    probs = adapter_popularity(n_adapters, alpha)
    return rng.choice(n_adapters, size=n, p=probs).astype(np.int32)
