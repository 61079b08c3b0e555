"""A causal filter on a time series: in one dimension, the flip is causality.

The story: an FIR filter with taps ``h`` computes ``y[t] = sum_j h[j] x[t - j]``
(``scipy.signal.lfilter(h, 1, x)``): ``h[0]`` weighs the newest sample, and
``y[t]`` depends on no input after ``t``. That sum is a true convolution:
``fc.convolve(x, h, padding="CAUSAL")`` (all padding before the series)
computes it. A cross-correlation, what PyTorch, TensorFlow and Flax layers
compute, slides ``h`` unflipped: with ``padding="CAUSAL"`` it still reads no
future, but applies the taps backwards (the oldest sample weighs most), so it
is another filter; with ``padding="SAME"`` (centred, the default of many
layers) it reads the future and responds before an event happens.

A synthetic sensor signal with spikes and a unit step, two filters:

* exponential decay (24 taps ``exp(-j / 5)``, asymmetric): ``fc.convolve``
  equals ``lfilter``, nothing moves before the step, ``fc.correlate`` differs
  (the example prints by how much), and the ``"SAME"`` correlation responds
  before the step (it prints how many samples early);
* a 5-tap moving average (symmetric): here the flip changes nothing, but
  ``"SAME"`` still reads 2 samples ahead.

Then 64 channels of a long series (16384 samples) through a 1024-tap
exponential filter with ``method="auto"``, which picks the FFT there: equal to
``lfilter`` per channel to float32 rounding.

Last, what does not matter: a filter *learned* from data by gradient descent.
Through ``fc.convolve`` it learns ``h``; through ``fc.correlate``, from the
mirrored (equally likely) start, it learns ``h`` reversed, step by step the
mirror image, with the same loss. Either form fits; the flip matters when the
learned weights move to a layer of the other form.

Every claim is checked (the claims for one filter are
``flipconv.demo.causal_checks``, which ``flipconv demo`` runs too).

Run it (needs matplotlib and scipy; writes examples/causal_filter.png unless
told otherwise):

    python examples/causal_filter.py [--out PATH]

It prints a line per check and where the PNG went; exit code 0 only if all
checks hold.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import scipy.signal

import flipconv as fc
from flipconv import _auto
from flipconv.demo import (
  MOVING_AVERAGE,
  TOL,
  causal_checks,
  exponential_taps,
  filter1d,
  rel_err,
  sensor_signal,
)

N, STEP = 300, 150  # the sensor signal: length, where the step is
CHANNELS, LONG, LONG_TAPS = 64, 16384, 1024  # the batch
DEFAULT_OUT = Path(__file__).with_suffix(".png")


def report(checks: list[tuple[str, bool]], ok: list[bool]) -> None:
  for claim, holds in checks:
    ok.append(bool(holds))
    print(f"  {'ok' if holds else 'FAILED':6s} {claim}")


def batch_checks() -> list[tuple[str, bool]]:
  """64 channels of a long series through a long causal filter, ``method="auto"``."""
  rng = np.random.default_rng(1)
  steps = rng.integers(LONG // 4, 3 * LONG // 4, CHANNELS)
  t = np.arange(LONG)
  baseline = np.cumsum(0.05 * rng.standard_normal((CHANNELS, LONG)), axis=1).astype(np.float32)
  x = baseline + (t >= steps[:, None]).astype(np.float32)
  taps = exponential_taps(LONG_TAPS, LONG_TAPS / 6)

  # What the auto rule decides for the lax convolution that fc.convolve makes here:
  # input (N, W, C) = (64, 16384, 1), kernel (W, I, O), all padding before the series.
  chosen = _auto.choose_method(
    (CHANNELS, LONG, 1),
    (LONG_TAPS, 1, 1),
    dtype=np.float32,
    platform=jax.default_backend(),
    window_strides=(1,),
    padding=[(LONG_TAPS - 1, 0)],
    dimension_numbers=("NWC", "WIO", "NWC"),
  )
  y = {m: filter1d(fc.convolve, x, taps, padding="CAUSAL", method=m) for m in ("auto", "fft")}
  y0 = filter1d(fc.convolve, baseline, taps, padding="CAUSAL", method="auto")
  ref = scipy.signal.lfilter(np.float64(taps), 1.0, np.float64(x), axis=1)
  errs = np.abs(y["auto"] - ref).max(axis=1) / np.abs(ref).max(axis=1)
  moved = np.abs(y["auto"] - y0)
  before = max(moved[c, : steps[c]].max() for c in range(CHANNELS))
  at = min(moved[c, steps[c]] for c in range(CHANNELS))
  return [
    (
      f"{CHANNELS} channels x {LONG} samples, {LONG_TAPS} taps: method='auto' picks the FFT "
      f"(flipconv._auto.choose_method says {chosen!r}; the output is bit for bit "
      "method='fft''s)",
      chosen == "fft" and bool(np.array_equal(y["auto"], y["fft"])),
    ),
    (
      f"fc.convolve(padding='CAUSAL', method='auto') == scipy.signal.lfilter per channel "
      f"(largest relative error over the channels {errs.max():.1e})",
      bool(errs.max() < TOL),
    ),
    (
      f"causal in every channel: before its step the output moves by at most {before:.1e} "
      f"(FFT rounding), at the step by at least {at:.3f} (taps[0] = {taps[0]:.4f})",
      before < 1e-4 and at > 0.99 * taps[0],
    ),
  ]


def learning_checks() -> list[tuple[str, bool]]:
  """Learn an unknown FIR filter from data by gradient descent, through each operation."""
  rng = np.random.default_rng(2)
  x = rng.standard_normal(4096).astype(np.float32)
  h = exponential_taps()  # the filter to learn, from x and its output alone
  target = jnp.asarray(scipy.signal.lfilter(np.float64(h), 1.0, np.float64(x)), jnp.float32)

  def descend(op, w):
    def loss(w):
      y = op(x[None, :, None], w[:, None, None], padding="CAUSAL")[0, :, 0]
      return jnp.mean((y - target) ** 2)

    # White noise of variance 1: the loss's Hessian is about 2 I, so a step of 0.25
    # halves the distance to the optimum.
    step = jax.jit(lambda w: w - 0.25 * jax.grad(loss)(w))
    path = [w]
    for _ in range(60):
      path.append(step(path[-1]))
    return np.asarray(jnp.stack(path)), float(loss(path[-1]))

  start = rng.standard_normal(len(h)).astype(np.float32) * 0.3  # a random initialisation
  conv, conv_loss = descend(fc.convolve, jnp.asarray(start))
  corr, corr_loss = descend(fc.correlate, jnp.asarray(start[::-1].copy()))
  mirrored = float(np.abs(corr - conv[:, ::-1]).max())
  wrong = rel_err(filter1d(fc.convolve, x, corr[-1], padding="CAUSAL"), np.asarray(target))
  return [
    (
      f"gradient descent through fc.convolve learns the taps h (max |w - h| = "
      f"{np.abs(conv[-1] - h).max():.1e}, loss {conv_loss:.1e})",
      bool(np.abs(conv[-1] - h).max() < 1e-4),
    ),
    (
      f"through fc.correlate, from the mirrored start (as likely as the start itself), it "
      f"learns h reversed; every step is the mirror image of the other's (max |difference| "
      f"{mirrored:.1e}), the loss the same ({corr_loss:.1e})",
      bool(np.abs(corr[-1] - h[::-1]).max() < 1e-4) and mirrored < 1e-5,
    ),
    (
      f"so either form fits the data; what matters is moving the weights: the correlation's "
      f"taps in a convolution are off by {wrong:.2f} of max |output| without a flip",
      wrong > 0.1,
    ),
  ]


def plot(path: Path, signal: np.ndarray, outs: dict[str, np.ndarray], early: int) -> None:
  from matplotlib.figure import Figure  # no pyplot: no GUI backend, nothing global

  t = np.arange(len(signal))
  fig = Figure(figsize=(11, 8), layout="constrained")
  axes = fig.subplots(3, 1, sharex=True)
  axes[0].plot(t, signal, color="black", lw=1)
  axes[0].set_title("a sensor signal: drift, noise, spikes and a unit step", fontsize=11)
  axes[1].plot(t, outs["lfilter"], color="tab:blue", lw=4, alpha=0.35, label="lfilter(h, 1, x)")
  axes[1].plot(t, outs["convolve_causal"], color="tab:blue", lw=1.2, label="fc.convolve")
  axes[1].plot(
    t, outs["ma_convolve_causal"], color="tab:green", lw=1, label="fc.convolve, 5-tap average"
  )
  axes[1].set_title(
    "causal convolution, padding='CAUSAL': == lfilter; the response starts at the step",
    fontsize=11,
  )
  axes[2].plot(t, outs["lfilter"], color="tab:blue", lw=4, alpha=0.35, label="lfilter(h, 1, x)")
  axes[2].plot(
    t,
    outs["correlate_same"],
    color="tab:red",
    lw=1.2,
    label="fc.correlate, padding='SAME'",
  )
  axes[2].plot(
    t,
    outs["correlate_causal"],
    color="tab:orange",
    lw=1,
    ls="--",
    label="fc.correlate, padding='CAUSAL' (taps backwards)",
  )
  axes[2].axvspan(STEP - early, STEP, color="tab:red", alpha=0.15)
  axes[2].annotate(
    f"responds {early} samples\nbefore the step",
    xy=(STEP - early, 0.45),
    xytext=(STEP - early - 8, 0.6),
    ha="right",
    color="tab:red",
    arrowprops=dict(arrowstyle="->", color="tab:red"),
  )
  axes[2].set_title(
    "non-causal correlation: the same taps unflipped, centred ('SAME') or not", fontsize=11
  )
  for ax, where in zip(axes, ("upper left", "center right", "center right"), strict=True):
    ax.axvline(STEP, color="black", ls=":", lw=1.5, label=f"the step, t = {STEP}")
    ax.legend(loc=where, fontsize=8)
  axes[2].set_xlabel("t (samples)")
  fig.suptitle("FIR filter h[j] = exp(-j / 5), 24 taps: the flip is causality")
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> int:
  # On a GPU or TPU a float32 conv may run in reduced precision (TF32, bf16 passes); the
  # checks compare with float64 references on the CPU, so ask for full float32.
  with jax.default_matmul_precision("float32"):
    return _main(argv)


def _main(argv: list[str] | None) -> int:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument(
    "--out", type=Path, default=DEFAULT_OUT, help=f"where to write the PNG (default: {DEFAULT_OUT})"
  )
  args = parser.parse_args(argv)
  try:
    import matplotlib  # noqa: F401
  except ImportError:
    print("this example draws with matplotlib: pip install matplotlib (or '.[examples]')")
    return 2

  signal, baseline = sensor_signal(N, STEP)
  taps = exponential_taps()
  ok: list[bool] = []
  print(f"1. Exponential decay, {len(taps)} taps exp(-j / 5), on {N} samples, a step at t = {STEP}")
  checks, outs, starts = causal_checks(signal, baseline, STEP, taps, "exponential decay")
  report(checks, ok)
  print(f"\n2. A {len(MOVING_AVERAGE)}-tap moving average (symmetric taps)")
  checks, ma, _ = causal_checks(signal, baseline, STEP, MOVING_AVERAGE, "moving average")
  report(checks, ok)
  print("\n3. A batch: many channels, a long series, a long filter")
  report(batch_checks(), ok)
  print("\n4. Learning the filter from data: either form learns it")
  report(learning_checks(), ok)

  early = STEP - starts["correlate_same"]
  plot(args.out, signal, {**outs, "ma_convolve_causal": ma["convolve_causal"]}, early)
  print(f"\nwrote {args.out}")
  print("All checks held." if all(ok) else "Some checks FAILED.")
  return 0 if all(ok) else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
