"""Open-loop arrival schedules, computed up front so every request has an intended send time.

Knowing the intended time of each request is what makes the generator coordinated-omission-correct:
lateness (send lag) and latency from the intended time are measured against it, not hidden by it.
Inter-arrival gaps follow vLLM bench's convention: Poisson is Gamma with shape 1; Gamma has
``shape = burstiness`` and ``scale = 1 / (rate * burstiness)`` (burstiness < 1 burstier, > 1 smoother);
constant is evenly spaced. A count-bounded schedule is scaled by one factor so that its n-th arrival is
at (n - 1) / rate, as vLLM bench does: the offered rate is then exactly the asked one (200 Poisson gaps
alone can be 10 % off) and the gaps keep their shape (a scaled exponential or gamma is still one).
A duration-bounded schedule is not scaled: how many arrivals fit is itself part of the process.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from itertools import islice, takewhile
from typing import Literal

import numpy as np

Arrival = Literal["constant", "poisson", "gamma"]


def iter_arrivals(
    rate: float, arrival: Arrival = "poisson", *, burstiness: float = 1.0, seed: int = 0, block: int = 4096
) -> Iterator[float]:
    """Endless intended send times (seconds after the start, the first at 0); same arguments, same times.

    Gaps are drawn in blocks from one seeded generator, so any prefix equals a single large draw.
    """
    if rate <= 0:
        raise ValueError("rate must be > 0")
    if burstiness <= 0:
        raise ValueError("burstiness must be > 0")
    if arrival not in ("constant", "poisson", "gamma"):
        raise ValueError(f"unknown arrival process {arrival!r}")
    if arrival == "constant":  # i / rate, not a running sum: no floating-point drift
        yield from (i / rate for i in itertools.count())
        return
    rng = np.random.default_rng(seed)
    t, first = 0.0, True
    while True:
        if arrival == "poisson":
            gaps = rng.exponential(1.0 / rate, block)
        else:
            gaps = rng.gamma(burstiness, 1.0 / (rate * burstiness), block)
        for gap in gaps.tolist():
            if not first:
                t += gap
            first = False
            yield t


def arrival_offsets(
    rate: float,
    arrival: Arrival = "poisson",
    *,
    count: int | None = None,
    duration_s: float | None = None,
    burstiness: float = 1.0,
    seed: int = 0,
) -> list[float]:
    """The schedule bounded by ``count`` and/or ``duration_s`` (whichever ends first)."""
    if count is None and duration_s is None:
        raise ValueError("an open-loop schedule needs a request count or a duration")
    arrivals = iter_arrivals(rate, arrival, burstiness=burstiness, seed=seed)
    if count is None:
        return list(takewhile(lambda t: t < duration_s, arrivals))
    offsets = list(islice(arrivals, count))
    if arrival != "constant" and count > 1 and offsets[-1] > 0:
        factor = (count - 1) / rate / offsets[-1]
        offsets = [t * factor for t in offsets]
    return offsets if duration_s is None else [t for t in offsets if t < duration_s]
