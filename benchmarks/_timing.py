"""Interleaved timing shared by the benchmark scripts (run as ``python benchmarks/<name>.py``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import jax


def interleaved(
  fns: dict[str, Callable[[], object]], repeats: int, budget_s: float | None = None
) -> dict[str, list[float]]:
  """Seconds of each zero-argument function per round, runs interleaved.

  Each function runs once first (compilation, warm-up); then ``repeats``
  rounds run every function once, in an order that rotates between rounds, so
  that load from other processes hits all of them alike. With ``budget_s``,
  fewer rounds run (at least 3) where the rounds so far project past it.
  """
  for fn in fns.values():
    jax.block_until_ready(fn())
  names = list(fns)
  times: dict[str, list[float]] = {k: [] for k in names}
  for r in range(repeats):
    order = names[r % len(names) :] + names[: r % len(names)]
    for name in order:
      start = time.perf_counter()
      jax.block_until_ready(fns[name]())
      times[name].append(time.perf_counter() - start)
    spent = sum(statistics.median(v) for v in times.values()) * (r + 1)
    if budget_s is not None and r >= 2 and spent > budget_s:
      break
  return times
