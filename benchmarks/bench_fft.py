"""method="fft" and method="auto" against the direct conv, SciPy and jax.scipy.

Prints, for each case, the median time (ms) of interleaved runs of:

* ``direct``: ``fc.convolve(..., method="direct")``, one ``lax.conv_general_dilated``;
* ``fft``: ``fc.convolve(..., method="fft")``;
* ``auto``: ``fc.convolve(..., method="auto")``, with the method it picked;
* ``jax.scipy``: ``jax.scipy.signal.fftconvolve`` (single-channel cases);
* ``scipy``: ``scipy.signal.fftconvolve`` on NumPy arrays (single-channel cases);

and the ratios the targets are stated in (same run): direct/fft (>= 15 at
8,192 taps), fft/scipy (<= 1.3 there), jax.scipy/fft (>= 5 there) and
auto/min(direct, fft) (<= 1.3 everywhere). ``err`` is ``max|fft - ref| /
max|ref|`` against SciPy in float64 (or the direct method where SciPy does
not apply).

``--calibrate`` instead times the direct and FFT methods (the FFT one also
with forced overlap-save block lengths) over a grid of shapes around the
crossover, fits the cost models of ``flipconv._fft`` and ``flipconv._auto``
by non-negative least squares on relative errors, and prints the constants,
the crossovers they imply and how ``auto`` with them does on the grid.
``--accuracy`` prints the float32 error of both methods against float64.
``--finite-cost`` times, on finite inputs, the FFT path that is exact on
non-finite values (``exact=True``: the FFT, then one reduction over the output
and a ``lax.cond`` that keeps it) against the bare FFT path (``exact=False``),
both ``flipconv._fft.conv_general_dilated_fft`` under ``jit``, on the cases
where ``auto`` picks the FFT; target: exact/bare <= 1.05 on every one.

  python benchmarks/bench_fft.py [--quick] [--repeats 15]
  python benchmarks/bench_fft.py --calibrate [--save calib.json | --load calib.json ...]
  python benchmarks/bench_fft.py --accuracy
  python benchmarks/bench_fft.py --finite-cost [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from _timing import interleaved  # benchmarks/_timing.py, beside this script
from jax import lax

import flipconv as fc
from flipconv import _auto, _fft

try:
  import scipy.optimize
  import scipy.signal
except ImportError:  # pragma: no cover - the bench needs SciPy for its references
  scipy = None


def timed(
  fns: dict[str, Callable[[], object]], repeats: int, budget_s: float = 20.0
) -> dict[str, float]:
  """Median seconds of each zero-argument function, runs interleaved (see ``_timing``)."""
  return {k: statistics.median(v) for k, v in interleaved(fns, repeats, budget_s).items()}


@dataclasses.dataclass(frozen=True)
class Case:
  """One benchmark case: a true convolution with fc's default channels-last layout."""

  name: str
  batch: int
  c_in: int
  c_out: int
  size: tuple[int, ...]
  taps: tuple[int, ...]
  padding: str
  scipy_mode: str | None  # scipy.signal.fftconvolve's mode, for single-channel cases

  def arrays(self, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((self.batch, *self.size, self.c_in), dtype=np.float32)
    k = rng.standard_normal((*self.taps, self.c_in, self.c_out), dtype=np.float32)
    return x, k


def cases(quick: bool) -> list[Case]:
  kernels_1d = (33, 2049, 8192) if quick else (33, 257, 2049, 8192)
  kernels_2d = (7, 63) if quick else (7, 31, 63)
  out = [Case(f"1-D 65536, k={k}", 1, 1, 1, (65536,), (k,), "FULL", "full") for k in kernels_1d]
  out.append(Case("1-D 8x16->16, 16384, k=1024", 8, 16, 16, (16384,), (1024,), "SAME", None))
  out += [
    Case(f"2-D 512x512, k={k}x{k}", 1, 1, 1, (512, 512), (k, k), "SAME", "same") for k in kernels_2d
  ]
  # Where the direct method should win: auto must pick it.
  if not quick:
    out.append(Case("1-D 8x16->16, 16384, k=9", 8, 16, 16, (16384,), (9,), "SAME", None))
  out.append(Case("2-D 8x64->64, 56x56, k=3x3", 8, 64, 64, (56, 56), (3, 3), "SAME", None))
  return out


def run_case(case: Case, repeats: int) -> dict[str, object]:
  x, k = case.arrays()
  xj, kj = jnp.asarray(x), jnp.asarray(k)
  fns: dict[str, Callable[[], object]] = {}
  jitted = {}
  for method in ("direct", "fft", "auto"):
    jitted[method] = jax.jit(
      lambda a, b, m=method: fc.convolve(a, b, padding=case.padding, method=m)
    )
    fns[method] = lambda m=method: jitted[m](xj, kj)
  ref = None
  if case.scipy_mode is not None and scipy is not None:
    xs, ks = x[0, ..., 0], k[..., 0, 0]
    xsj, ksj = jnp.asarray(xs), jnp.asarray(ks)
    jsp = jax.jit(lambda a, b: jax.scipy.signal.fftconvolve(a, b, mode=case.scipy_mode))
    fns["jax.scipy"] = lambda: jsp(xsj, ksj)
    fns["scipy"] = lambda: scipy.signal.fftconvolve(xs, ks, mode=case.scipy_mode)
    ref = scipy.signal.fftconvolve(
      xs.astype(np.float64), ks.astype(np.float64), mode=case.scipy_mode
    )
    got = np.asarray(jitted["fft"](xj, kj))[0, ..., 0]
  else:
    ref = np.asarray(jitted["direct"](xj, kj))
    got = np.asarray(jitted["fft"](xj, kj))
  times = timed(fns, repeats)
  picked = _auto.choose_method(*_shapes(case), **_lax_kwargs(case))
  err = float(np.abs(got - ref).max() / np.abs(ref).max())
  return {"case": case.name, "times": times, "picked": picked, "err": err}


def _shapes(case: Case) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """The input's and the kernel's shapes, as fc.convolve passes them to lax."""
  return (case.batch, *case.size, case.c_in), (*case.taps, case.c_in, case.c_out)


def _lax_kwargs(case: Case) -> dict[str, object]:
  """The lax arguments that fc.convolve passes for this case (to ask choose_method)."""
  n = len(case.size)
  sp = "DHW"[3 - n :]
  dn = lax.conv_dimension_numbers(
    (case.batch, *case.size, case.c_in),
    (*case.taps, case.c_in, case.c_out),
    (f"N{sp}C", f"{sp}IO", f"N{sp}C"),
  )
  pads = lax.padtype_to_pads(case.size, case.taps, (1,) * n, "SAME")
  if case.padding == "FULL":
    pads = [(t - 1, t - 1) for t in case.taps]
  return dict(
    window_strides=(1,) * n,
    padding=pads,
    lhs_dilation=(1,) * n,
    rhs_dilation=(1,) * n,
    dimension_numbers=dn,
    feature_group_count=1,
  )


def print_table(rows: list[dict[str, object]]) -> None:
  cols = ("direct", "fft", "auto", "jax.scipy", "scipy")
  print(
    f"{'case':30s}"
    + "".join(f"{c:>11s}" for c in cols)
    + f"{'dir/fft':>9s}{'fft/scipy':>10s}{'jsp/fft':>9s}{'auto/best':>10s}{'err':>9s}"
  )
  for row in rows:
    t = row["times"]
    cells = "".join(f"{t[c] * 1e3:11.2f}" if c in t else f"{'-':>11s}" for c in cols)
    best = min(t["direct"], t["fft"])
    scipy_ratio = f"{t['fft'] / t['scipy']:10.2f}" if "scipy" in t else f"{'-':>10s}"
    jsp_ratio = f"{t['jax.scipy'] / t['fft']:9.1f}" if "jax.scipy" in t else f"{'-':>9s}"
    print(
      f"{row['case']:30s}{cells}{t['direct'] / t['fft']:9.1f}{scipy_ratio}{jsp_ratio}"
      f"{t['auto'] / best:10.2f}{row['err']:9.1e}  auto={row['picked']}"
    )


# ---------------------------------------------------------------- calibration


@dataclasses.dataclass(frozen=True)
class Shape:
  """A conv in lax terms (NC..., OI...), for calibration."""

  batch: int
  c_in: int
  c_out: int
  groups: int
  size: tuple[int, ...]
  taps: tuple[int, ...]
  stride: int = 1
  input_dilation: int = 1

  def kwargs(self) -> dict[str, object]:
    n = len(self.size)
    pads = [((t - 1) // 2, t // 2) for t in self.taps]
    return dict(
      window_strides=(self.stride,) * n,
      padding=pads,
      lhs_dilation=(self.input_dilation,) * n,
      rhs_dilation=(1,) * n,
      dimension_numbers=None,
      feature_group_count=self.groups,
    )

  def shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return ((self.batch, self.c_in, *self.size), (self.c_out, self.c_in // self.groups, *self.taps))


def calibration_grid(quick: bool) -> list[Shape]:
  grid = []
  for size in ((4096,), (65536,)):
    grid += [Shape(1, 1, 1, 1, size, (k,)) for k in (8, 16, 32, 64, 128, 256, 1024)]
  grid += [Shape(8, 16, 16, 1, (16384,), (k,)) for k in (16, 32, 64, 128, 256)]
  grid += [Shape(4, 64, 64, 1, (4096,), (k,)) for k in (16, 32, 64, 128, 256)]
  grid += [Shape(16, 4, 4, 1, (8192,), (k,)) for k in (16, 64, 256)]
  grid += [Shape(8, 16, 16, 16, (16384,), (k,)) for k in (16, 64, 256)]
  grid += [Shape(8, 16, 16, 1, (16384,), (k,), stride=2) for k in (64, 256)]
  grid += [Shape(8, 16, 16, 1, (8192,), (k,), input_dilation=2) for k in (64, 256)]
  grid += [Shape(8, 16, 16, 1, (16384,), (k,)) for k in (1, 3, 8)]
  grid += [Shape(1, 1, 1, 1, (65536,), (k,)) for k in (1, 3)]
  grid += [Shape(1, 1, 1, 1, (s, s), (k, k)) for s in (128, 512) for k in (1, 3, 5, 7, 11)]
  grid += [Shape(4, 16, 16, 1, (128, 128), (k, k)) for k in (3, 5, 7, 11, 15)]
  grid += [Shape(8, 64, 64, 1, (32, 32), (k, k)) for k in (1, 3, 5, 7, 9)]
  grid += [Shape(1, 1, 1, 1, (64, 64, 64), (k, k, k)) for k in (1, 3, 5)]
  grid += [Shape(2, 8, 8, 1, (32, 32, 32), (k, k, k)) for k in (1, 3, 5, 7)]
  return grid[::3] if quick else grid


def measure(shape: Shape, repeats: int) -> dict[str, object]:
  """Times direct and FFT (chosen plan, one transform, two block lengths) for one shape."""
  lhs_shape, rhs_shape = shape.shapes()
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal(lhs_shape, dtype=np.float32))
  k = jnp.asarray(rng.standard_normal(rhs_shape, dtype=np.float32))
  kw = shape.kwargs()
  chosen = _fft.plan(lhs_shape, rhs_shape, **kw)
  plans = {
    "fft": chosen,
    "fft:whole": _fft.plan(lhs_shape, rhs_shape, **kw, block_lengths=(0,) * len(shape.size)),
  }
  q = [a.kernel_blocks for a in chosen.axes]
  for f in (4, 16):
    lengths = tuple(_fft.fast_length(f * v) for v in q)
    if all(n < a.length or a.block for n, a in zip(lengths, plans["fft:whole"].axes, strict=True)):
      plans[f"fft:x{f}"] = _fft.plan(lhs_shape, rhs_shape, **kw, block_lengths=lengths)
  direct = jax.jit(lambda a, b: lax.conv_general_dilated(a, b, **kw))
  fns = {"direct": lambda: direct(x, k)}
  for name, p in plans.items():
    lengths = tuple(a.length if a.block else 0 for a in p.axes)
    f = jax.jit(
      lambda a, b, bl=lengths: _fft.conv_general_dilated_fft(a, b, **kw, block_lengths=bl)
    )
    fns[name] = lambda f=f: f(x, k)
  times = timed(fns, repeats, budget_s=6.0)
  return {
    "shape": dataclasses.asdict(shape),
    "direct": times.pop("direct"),
    "fft": [
      {
        "name": name,
        "time": t,
        "block_lengths": [a.length if a.block else 0 for a in plans[name].axes],
      }
      for name, t in times.items()
    ],
  }


def _shape(d: dict[str, object]) -> Shape:
  return Shape(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def fft_work(shape: Shape, block_lengths: list[int]) -> list[float]:
  return [1.0, *_fft.plan(*shape.shapes(), **shape.kwargs(), block_lengths=block_lengths).work()]


def fit(rows: list[list[float]], times: list[float]) -> np.ndarray:
  """Non-negative ``c`` minimising ``sum((log(rows @ c) - log(t)) ** 2)``.

  Log errors, since the times span five orders of magnitude and what auto
  needs is the right ratio between the two models.
  """
  a, t = np.asarray(rows, float), np.asarray(times, float)
  scale = a.max(axis=0)
  scale[scale == 0] = 1
  a = a / scale
  start, _ = scipy.optimize.nnls(a / t[:, None], np.ones(len(t)))  # relative errors first
  res = scipy.optimize.least_squares(
    lambda c: np.log(a @ c + 1e-9) - np.log(t), np.maximum(start, 1e-9), bounds=(0, np.inf)
  )
  return res.x / scale


def calibrate(args: argparse.Namespace) -> None:
  if args.load:
    data = []
    for path in args.load:
      with open(path) as f:
        data += json.load(f)
  else:
    data = []
    for shape in calibration_grid(args.quick):
      row = measure(shape, args.repeats)
      data.append(row)
      best = min(row["fft"], key=lambda r: r["time"])
      print(
        f"{shape}: direct {row['direct'] * 1e3:.2f} ms, fft {row['fft'][0]['time'] * 1e3:.2f}"
        f" ms (best {best['name']} {best['time'] * 1e3:.2f})",
        flush=True,
      )
    if args.save:
      with open(args.save, "w") as f:
        json.dump(data, f)

  # 1x1 kernels are always direct (a matrix product for XLA); they stay out of the fit.
  data = [row for row in data if math.prod(row["shape"]["taps"]) > 1]
  fft_rows, fft_times = [], []
  for row in data:
    for r in row["fft"]:
      fft_rows.append(fft_work(_shape(row["shape"]), r["block_lengths"]))
      fft_times.append(r["time"] * 1e9)
  fc_ = fit(fft_rows, fft_times)
  print(
    "\nFFT_NS = (" + ", ".join(f"{v:.3g}" for v in fc_) + ")  # per call, per point*log2, "
    "per point, per product, per product 2-D+, per element moved"
  )
  dir_rows = [
    _auto.direct_features(_shape(row["shape"]).shapes(), **_shape(row["shape"]).kwargs())
    for row in data
  ]
  dir_times = [row["direct"] * 1e9 for row in data]
  dc = fit(dir_rows, dir_times)
  print(
    "DIRECT_NS = (" + ", ".join(f"{v:.3g}" for v in dc) + ")  # " + ", ".join(_auto.DIRECT_FEATURES)
  )
  rows = []
  for row, feats in zip(data, dir_rows, strict=True):
    shape = _shape(row["shape"])
    m_fft = float(np.dot(fft_work(shape, row["fft"][0]["block_lengths"]), fc_))
    rows.append(
      (shape, row["direct"], row["fft"][0]["time"], float(np.dot(feats, dc)) * 1e-9, m_fft * 1e-9)
    )

  def ratios(margin: float) -> list[float]:
    return [(t_f if m_f * margin < m_d else t_d) / min(t_d, t_f) for _, t_d, t_f, m_d, m_f in rows]

  margins = [round(1 + 0.1 * i, 1) for i in range(11)]
  margin = min(margins, key=lambda m: (round(max(ratios(m)), 2), statistics.fmean(ratios(m))))
  for name, model, t in (("direct", 3, 1), ("fft", 4, 2)):
    rms = math.sqrt(statistics.fmean(math.log(r[model] / r[t]) ** 2 for r in rows))
    print(f"{name} model: rms log error {rms:.2f} over {len(rows)} shapes")
  print(
    f"AUTO_MARGIN = {margin}  # worst auto/best on the grid by margin: "
    + ", ".join(f"{m}: {max(ratios(m)):.2f}" for m in margins)
  )
  print(f"\n{'shape':70s}{'direct':>9s}{'fft':>9s}{'model d':>9s}{'model f':>9s}  pick  ratio")
  for (shape, t_d, t_f, m_d, m_f), ratio in zip(rows, ratios(margin), strict=True):
    pick = "fft" if m_f * margin < m_d else "direct"
    print(
      f"{shape!s:70.70s}{t_d * 1e3:9.2f}{t_f * 1e3:9.2f}{m_d * 1e3:9.2f}{m_f * 1e3:9.2f}"
      f"  {pick:6s}{ratio:5.2f}"
    )
  print(
    f"\nworst auto/best on the calibration grid with these constants: {max(ratios(margin)):.2f}"
  )

  # The crossovers that the fitted constants imply: the smallest kernel auto sends to the FFT.
  _fft.FFT_NS, _auto.DIRECT_NS, _auto.AUTO_MARGIN = tuple(fc_), tuple(dc), margin
  print("\ncrossover (smallest kernel for which auto picks fft on CPU):")
  families = [
    (1, 1, 1, (65536,)),
    (1, 1, 1, (4096,)),
    (8, 16, 16, (16384,)),
    (4, 64, 64, (4096,)),
    (1, 1, 1, (512, 512)),
    (4, 16, 16, (128, 128)),
    (8, 64, 64, (32, 32)),
    (2, 8, 8, (32, 32, 32)),
  ]
  for b, c, o, size in families:
    for k in range(1, 1025):
      shape = Shape(b, c, o, 1, size, (k,) * len(size))
      if _auto.choose_method(*shape.shapes(), platform="cpu", **shape.kwargs()) == "fft":
        print(
          f"  batch {b}, {c} -> {o} channels, size {'x'.join(map(str, size))}: kernel "
          f"{'x'.join([str(k)] * len(size))}"
        )
        break
    else:
      print(f"  batch {b}, {c} -> {o} channels, size {size}: none up to 1024")


# ------------------------------------------------------------------- accuracy


def accuracy() -> None:
  """float32 max|err| / max|y| of both methods against float64, for the docstring."""
  print(f"{'case':30s}{'fft':>10s}{'direct':>10s}")
  for case in cases(quick=False):
    x, k = case.arrays(seed=1)
    with jax.enable_x64(True):
      ref = np.asarray(
        fc.convolve(x.astype(np.float64), k.astype(np.float64), padding=case.padding)
      )
    errs = []
    for method in ("fft", "direct"):
      y = np.asarray(fc.convolve(x, k, padding=case.padding, method=method))
      errs.append(float(np.abs(y - ref).max() / np.abs(ref).max()))
    print(f"{case.name:30s}{errs[0]:10.1e}{errs[1]:10.1e}")


def finite_cost(quick: bool, repeats: int) -> None:
  """The exact-on-non-finite FFT path against the bare one, on finite inputs."""
  print(f"{'case':30s}{'bare ms':>10s}{'exact ms':>10s}{'exact/bare':>11s}")
  ratios = []
  for case in cases(quick):
    kw = _lax_kwargs(case)
    if _auto.choose_method(*_shapes(case), **kw) != "fft":
      continue  # auto runs the direct method here: the FFT path's cost does not apply
    x, k = (jnp.asarray(a) for a in case.arrays())
    fns = {
      name: jax.jit(lambda a, b, e=exact, kw=kw: _fft.conv_general_dilated_fft(a, b, exact=e, **kw))
      for name, exact in (("bare", False), ("exact", True))
    }
    y_exact, y_bare = np.asarray(fns["exact"](x, k)), np.asarray(fns["bare"](x, k))
    # Not bit for bit: the check changes how XLA fuses the final steps.
    np.testing.assert_allclose(y_exact, y_bare, rtol=0, atol=1e-5 * np.abs(y_bare).max())
    t = timed({name: (lambda f=f, x=x, k=k: f(x, k)) for name, f in fns.items()}, repeats)
    ratios.append(t["exact"] / t["bare"])
    print(f"{case.name:30s}{t['bare'] * 1e3:10.2f}{t['exact'] * 1e3:10.2f}{ratios[-1]:11.3f}")
  if not ratios:
    print(f"auto picks the FFT in none of these cases on {jax.default_backend()}")
    return
  geo = statistics.geometric_mean(ratios)
  print(f"{'geometric mean':30s}{'':20s}{geo:11.3f}   [max {max(ratios):.3f}]")


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="fewer cases and repeats")
  parser.add_argument("--repeats", type=int, default=None)
  parser.add_argument("--calibrate", action="store_true")
  parser.add_argument("--accuracy", action="store_true")
  parser.add_argument(
    "--finite-cost", action="store_true", help="exact FFT path vs the bare one, finite inputs"
  )
  parser.add_argument("--save", help="calibration: write the timings to this JSON file")
  parser.add_argument(
    "--load",
    nargs="+",
    help="calibration: fit the timings in these JSON "
    "files (written by --save) instead of measuring",
  )
  args = parser.parse_args(argv)
  if args.repeats is None:
    args.repeats = 3 if args.quick else 15
  print(
    f"jax {jax.__version__}, backend {jax.default_backend()}, {jax.devices()[0].device_kind}",
    flush=True,
  )
  if args.calibrate:
    calibrate(args)
  elif args.accuracy:
    accuracy()
  elif args.finite_cost:
    finite_cost(args.quick, args.repeats)
  else:
    start = time.perf_counter()
    rows = []
    for case in cases(args.quick):
      rows.append(run_case(case, args.repeats))
      print(f"  {case.name}: done", file=sys.stderr, flush=True)
    print_table(rows)
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
  main()
