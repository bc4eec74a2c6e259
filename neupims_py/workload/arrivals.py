"""Synthetic arrival processes: when requests (or conversation sessions) arrive.

Each process draws inter-arrival gaps from a seeded numpy Generator. The first request
arrives at time 0 and request i at the sum of the first i gaps; every gap is rounded to
integer nanoseconds before the sum, so times are exact integers and never drift.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from neupims_py.errors import UserError

NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Arrivals:
    """An arrival process: ``kind`` from PROCESSES, ``rate`` in requests/s, ``cv`` for gamma."""

    kind: str
    rate: float | None = None
    cv: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in PROCESSES:
            raise UserError(
                f"unknown arrival process {self.kind!r}; choose one of {', '.join(PROCESSES)}",
                field="--arrival",
            )
        needs_rate = self.kind != "at-once"
        if needs_rate and (self.rate is None or not math.isfinite(self.rate) or self.rate <= 0):
            raise UserError(
                f"arrival process {self.kind} needs a rate > 0 in requests per second",
                field="--rate",
            )
        if not needs_rate and self.rate is not None:
            raise UserError("at-once arrivals take no rate; drop --rate", field="--rate")
        if self.kind == "gamma":
            if self.cv is None or not math.isfinite(self.cv) or self.cv <= 0:
                raise UserError(
                    "gamma arrivals need a coefficient of variation > 0 (1 is Poisson)",
                    field="--cv",
                )
        elif self.cv is not None:
            raise UserError(
                f"--cv applies to gamma arrivals only, not {self.kind}; use --arrival gamma",
                field="--cv",
            )

    def params(self) -> str:
        """The parameters as a JSON object, for the trace's ``arrival_params`` attribute."""
        params: dict = {}
        if self.rate is not None:
            params["rate_per_s"] = self.rate
        if self.kind == "gamma":
            shape = 1.0 / self.cv**2
            params.update(cv=self.cv, shape=shape, scale_s=1.0 / (self.rate * shape))
        return json.dumps(params, sort_keys=True)

    def gaps_s(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` inter-arrival gaps in seconds."""
        if self.kind == "poisson":
            return rng.exponential(1.0 / self.rate, n)
        if self.kind == "gamma":
            # shape = 1/cv^2 and scale = 1/(rate*shape): mean gap 1/rate, std/mean = cv.
            shape = 1.0 / self.cv**2
            return rng.gamma(shape, 1.0 / (self.rate * shape), n)
        if self.kind == "fixed":
            return np.full(n, 1.0 / self.rate)
        return np.zeros(n)

    def times_ns(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Arrival times of ``n`` requests, int64 ns, the first at 0."""
        if n <= 0:
            raise UserError(f"the number of requests must be > 0, not {n}", field="--n")
        times = np.zeros(n, dtype=np.int64)
        np.cumsum(_to_ns(self.gaps_s(rng, n - 1)), out=times[1:])
        return times

    def times_within_ns(self, rng: np.random.Generator, duration_s: float) -> np.ndarray:
        """Arrival times in [0, duration_s), int64 ns, the first at 0."""
        if not math.isfinite(duration_s) or duration_s <= 0:
            raise UserError(
                f"the duration must be > 0 seconds, not {duration_s}", field="--duration"
            )
        if self.kind == "at-once":
            raise UserError(
                "at-once arrivals all come at time 0: give --n, not --duration", field="--duration"
            )
        limit = round(duration_s * NS_PER_S)
        # Draw in blocks of a fixed size so the result depends on the seed only.
        block = int(min(max(self.rate * duration_s * 1.1 + 100, 1000), 10_000_000))
        gaps = [np.zeros(1, dtype=np.int64)]
        end = 0
        while end < limit:
            chunk = _to_ns(self.gaps_s(rng, block))
            gaps.append(chunk)
            end += int(chunk.sum())
        times = np.cumsum(np.concatenate(gaps))
        return times[times < limit]


def _to_ns(gaps_s: np.ndarray) -> np.ndarray:
    return np.rint(gaps_s * NS_PER_S).astype(np.int64)


# Name -> what it is (the CLI's help text).
PROCESSES = {
    "poisson": "exponential gaps at --rate (requests/s)",
    "gamma": "gamma gaps at --rate with coefficient of variation --cv (shape 1/cv^2, scale 1/(rate*shape))",
    "fixed": "one request every 1/--rate seconds",
    "at-once": "every request at time 0",
}


def add_arrival_arguments(
    parser, *, default: str | None = "poisson", what: str = "requests"
) -> None:
    """The --arrival/--rate/--cv/--seed flags, shared by the trace sub-commands.

    ``default`` None means the file's own times unless an arrival flag is given.
    """
    parser.add_argument(
        "--arrival",
        choices=tuple(PROCESSES),
        default=default,
        help="arrival process: "
        + "; ".join(f"{k}: {v}" for k, v in PROCESSES.items())
        + f" (default: {default or 'the file times; poisson when --rate is given'})",
    )
    parser.add_argument("--rate", type=float, help=f"mean arrival rate, {what} per second")
    parser.add_argument(
        "--cv", type=float, help="coefficient of variation of the gaps (gamma only; 1 = Poisson)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of every random draw (default: 0)"
    )


def arrivals_from_args(args) -> Arrivals:
    return Arrivals(kind=args.arrival, rate=args.rate, cv=args.cv)
