"""Run weights trained with Lasagne's Conv2DLayer in JAX, and see what a missing flip costs.

The story: you have the ``W`` (``(num_filters, num_input_channels, kh, kw)``,
OIHW) and ``b`` of Lasagne ``Conv2DLayer``s, which take NCHW input and, with
the default ``flip_filters=True``, compute a *true convolution* (the filters
are flipped before they slide), unlike PyTorch, TensorFlow and Flax, which
cross-correlate. Here the weights are made with a seeded NumPy generator, for
an odd (3x3) and an even (4x4) filter size, and the original network's output
is computed independently of JAX with ``scipy.signal.convolve2d`` (mode
``"valid"``) per (output, input) channel pair, summed over the inputs, after
``np.pad`` of the input for a padded layer.

Three ways to load them into JAX:

1. ``fc.linen.Conv(..., convention="lasagne")``: ``W`` and ``b`` as they are,
   NCHW input. Equal to the original.
2. A plain ``flax.linen.Conv`` (NHWC) with ``fc.convert_kernel(W, "lasagne",
   "flax")``: the kernel transposed to HWIO *and* flipped. Equal to the original.
3. The mistake: ``W.transpose(2, 3, 1, 0)`` into ``flax.linen.Conv``, the
   right layout without the flip. Wrong, for the even kernel too; the example
   prints by how much.

Then the one-pixel shift of even kernels. Lasagne's ``pad='same'`` is Theano's
``border_mode='half'``: ``k // 2`` zeros on both sides (``padding="HALF"`` in
flipconv). Lasagne accepts ``pad='same'`` only for odd sizes; a 4x4 layer gets
the same padding from ``pad=2``. With an even kernel that output is one row and
one column *larger* than the input, and Flax's ``padding="SAME"`` (the extra
zero at the end) is that output without its first row and column: a port that
writes ``"SAME"`` is shifted by one pixel.

Run it (needs scipy):

    python examples/lasagne_weights.py [--out errors.csv]

It prints a table of relative errors (``--out`` also writes it as CSV) and a
line per check; exit code 0 only if all hold.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import scipy.signal

import flipconv as fc

N, C_IN, C_OUT, SIZE = 2, 3, 4, 9  # an odd image size: the SAME/HALF shift is visible
TOL = 1e-5  # max |difference| / max |original|: float32 rounding only


def lasagne_conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int) -> np.ndarray:
  """The original network: Lasagne Conv2DLayer(W=w, b=b, pad=pad, flip_filters=True).

  NCHW input, OIHW filters, a true convolution, computed channel pair by
  channel pair with SciPy, in float64.
  """
  x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  return np.stack(
    [
      np.stack(
        [
          sum(scipy.signal.convolve2d(x[n, i], w[o, i], mode="valid") for i in range(x.shape[1]))
          + b[o]
          for o in range(w.shape[0])
        ]
      )
      for n in range(x.shape[0])
    ]
  )


def run_lasagne_convention(x, w, b, padding) -> np.ndarray:
  """1. fc.linen.Conv with Lasagne's convention: W and b exactly as Lasagne holds them."""
  k = w.shape[-1]
  layer = fc.linen.Conv(C_OUT, (k, k), padding=padding, convention="lasagne")
  return np.asarray(jax.jit(layer.apply)({"params": {"kernel": w, "bias": b}}, x))


def run_flax(x, kernel_hwio, b, padding) -> np.ndarray:
  """flax.linen.Conv (NHWC in, NHWC out) with a given HWIO kernel; returned as NCHW."""
  k = kernel_hwio.shape[0]
  layer = nn.Conv(C_OUT, (k, k), padding=padding)
  y = jax.jit(layer.apply)({"params": {"kernel": kernel_hwio, "bias": b}}, x.transpose(0, 2, 3, 1))
  return np.asarray(y).transpose(0, 3, 1, 2)


def rel_err(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def check(checks: list[bool], ok: bool, claim: str) -> None:
  checks.append(bool(ok))
  print(f"  {'ok' if ok else 'FAILED':6s} {claim}")


def main(argv: list[str] | None = None) -> int:
  # On a GPU or TPU a float32 conv may run in reduced precision (TF32, bf16 passes); the
  # checks compare with float32/float64 references on the CPU, so ask for full float32.
  with jax.default_matmul_precision("float32"):
    return _main(argv)


def _main(argv: list[str] | None) -> int:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument(
    "--out", type=Path, default=None, metavar="CSV", help="also write the error table to CSV"
  )
  args = parser.parse_args(argv)
  rng = np.random.default_rng(0)
  x = rng.standard_normal((N, C_IN, SIZE, SIZE)).astype(np.float32)  # NCHW
  weights = {
    k: (
      rng.standard_normal((C_OUT, C_IN, k, k)).astype(np.float32),  # OIHW
      rng.standard_normal(C_OUT).astype(np.float32),
    )
    for k in (3, 4)
  }
  checks: list[bool] = []

  # (filter size, Lasagne's pad, flipconv padding, Flax padding): pad=k//2 is 'same' for 3x3
  # (Lasagne refuses pad='same' for even sizes) and Theano's 'half' for both.
  cases = [
    (3, "valid", 0, "VALID", "VALID"),
    (3, "'same'", 1, "HALF", ((1, 1), (1, 1))),
    (4, "valid", 0, "VALID", "VALID"),
    (4, "2 (half)", 2, "HALF", ((2, 2), (2, 2))),
  ]
  print(f"Lasagne Conv2DLayer(flip_filters=True) weights, input x {x.shape} (NCHW).")
  print("Relative error (max |y - original| / max |original|) of each way to load them:\n")
  print(
    f"  {'W':14s} {'pad':10s} {'output':14s} {'1. fc.linen':>12s} {'2. converted':>13s} "
    f"{'3. no flip':>11s}"
  )
  results = []
  for k, pad_name, pad, fc_padding, flax_padding in cases:
    w, b = weights[k]
    original = lasagne_conv2d(x, w, b, pad)
    y1 = run_lasagne_convention(x, w, b, fc_padding)
    y2 = run_flax(x, fc.convert_kernel(w, "lasagne", "flax"), b, flax_padding)
    y3 = run_flax(x, w.transpose(2, 3, 1, 0), b, flax_padding)  # the layout, not the flip
    same_shapes = y1.shape == y2.shape == y3.shape == original.shape
    errors = [rel_err(y, original) for y in (y1, y2, y3)]
    results.append((f"{k}x{k}, pad={pad_name}", same_shapes, errors))
    print(
      f"  {w.shape!s:14s} {pad_name:10s} {original.shape!s:14s} {errors[0]:12.1e} "
      f"{errors[1]:13.1e} {errors[2]:11.2f}"
    )
  if args.out is not None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
      rows = csv.writer(f)
      rows.writerow(["case", "fc.linen", "converted", "no flip"])
      rows.writerows([what, *errors] for what, _, errors in results)
    print(f"wrote {args.out}")
  print("\nChecks:")
  for what, same_shapes, (e1, e2, e3) in results:
    check(
      checks,
      same_shapes and e1 < TOL,
      f"{what}: fc.linen.Conv(convention='lasagne') with W unchanged == the original",
    )
    check(
      checks,
      same_shapes and e2 < TOL,
      f"{what}: flax.linen.Conv with fc.convert_kernel(W, 'lasagne', 'flax') == the original",
    )
    check(
      checks,
      e3 > 0.1,
      f"{what}: flax.linen.Conv with W only transposed (no flip) is wrong "
      f"(relative error {e3:.2f})",
    )

  print("\nThe one-pixel shift of an even (4x4) kernel, padded k // 2 = 2 on both sides:")
  w, b = weights[4]
  half = run_lasagne_convention(x, w, b, "HALF")  # Theano 'half' = Lasagne pad=2
  same = run_lasagne_convention(x, w, b, "SAME")  # Flax/TF/lax SAME: pads (1, 2)
  same_lower = run_lasagne_convention(x, w, b, "SAME_LOWER")  # ONNX SAME_LOWER: pads (2, 1)
  print(
    f"  input {SIZE}x{SIZE} -> 'HALF' {half.shape[-2]}x{half.shape[-1]} (one larger), "
    f"'SAME' {same.shape[-2]}x{same.shape[-1]}"
  )
  print(
    f"  'SAME' vs 'HALF' without its first row and column:  relative error "
    f"{rel_err(same, half[..., 1:, 1:]):.1e}"
  )
  print(
    f"  'SAME_LOWER' vs 'HALF' without its last row and column: relative error "
    f"{rel_err(same_lower, half[..., :-1, :-1]):.1e}"
  )
  print(
    f"  'SAME' vs 'HALF' without its last row and column (the wrong crop): relative error "
    f"{rel_err(same, half[..., :-1, :-1]):.2f}"
  )
  check(
    checks,
    half.shape[-2:] == (SIZE + 1, SIZE + 1),
    "an even kernel with Theano's 'half' padding gives an output one larger than the input",
  )
  check(
    checks,
    rel_err(half, lasagne_conv2d(x, w, b, 2)) < TOL,
    "that output is the original Lasagne layer's (pad=2)",
  )
  check(
    checks,
    rel_err(same, half[..., 1:, 1:]) < TOL,
    "'SAME' (extra zero at the end) == 'HALF' output without its first row and column",
  )
  check(
    checks,
    rel_err(same_lower, half[..., :-1, :-1]) < TOL,
    "'SAME_LOWER' (extra zero at the start) == 'HALF' output without its last row and column",
  )
  check(
    checks,
    rel_err(same, half[..., :-1, :-1]) > 0.1,
    "so 'SAME' is the 'HALF' output shifted by one pixel, not the same output cropped",
  )

  # The same for Lasagne's W in Flax: converted kernel, explicit padding (2, 2) is exact.
  flax_same = run_flax(x, fc.convert_kernel(w, "lasagne", "flax"), b, "SAME")
  check(
    checks,
    rel_err(flax_same, half[..., 1:, 1:]) < TOL,
    "flax.linen.Conv(padding='SAME') with the converted 4x4 kernel: the same one-pixel shift",
  )
  ok = all(checks)
  print("All checks held." if ok else "Some checks FAILED.")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
