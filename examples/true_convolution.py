"""What the flip does to an image, and the one-pixel shift of even kernels, as a PNG.

The story: a true convolution (``fc.convolve``, signal processing, SciPy,
Theano, Lasagne) reverses the kernel along every spatial axis before sliding
it; a cross-correlation (``fc.correlate``, what PyTorch, TensorFlow, Flax and
``lax.conv_general_dilated`` compute) slides it as it is. On a symmetric
kernel nobody can tell; on an asymmetric one the results differ.

Top row: a synthetic image (a square and a disc) filtered by an asymmetric
"comet" kernel (a bright head and a tail towards the top left). Convolving
stamps the kernel *as drawn* at every pixel, so the tails point to the top
left; correlating stamps it rotated by 180 degrees, so they point to the
bottom right. The last panel is their difference.

Bottom row: an even (4x4) blur kernel has no centre pixel, so a "same"-size
output must put the extra padding row and column somewhere. ``"SAME"`` (lax,
TensorFlow, PyTorch, Flax) puts it at the end; ``scipy.signal.convolve2d(...,
mode="same")`` takes the centre of the full convolution, which for an even
kernel is flipconv's ``"SAME_LOWER"`` (extra at the start). The two differ by
a one-pixel shift: the difference panel outlines the shapes.

Every claim is checked, including ``fc.convolve == scipy.signal.convolve2d``
(modes "full", "valid" and "same").

Run it (needs matplotlib and scipy; writes examples/true_convolution.png unless
told otherwise):

    python examples/true_convolution.py [--out PATH]

It prints a line per check and where the PNG went; exit code 0 only if all
checks hold.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import numpy as np
import scipy.signal

import flipconv as fc

# The square-and-disc image, a conv on one grey image, the error measure: as `flipconv demo`.
from flipconv.demo import TOL, filter2d, rel_err, synthetic_scene

SIZE = 80
DEFAULT_OUT = Path(__file__).with_suffix(".png")


def comet_kernel(size: int = 15) -> np.ndarray:
  """A bright head in the centre and a fading tail towards the top left."""
  k = np.zeros((size, size), np.float32)
  c = size // 2
  for j in range(c + 1):
    k[c - j, c - j] = 1.0 - j / (c + 1)
  return k / k.sum()


def even_blur_kernel() -> np.ndarray:
  """A 4x4 binomial blur: symmetric, so the flip changes nothing; only the padding matters."""
  b = np.array([1.0, 3.0, 3.0, 1.0], np.float32)
  return np.outer(b, b) / np.outer(b, b).sum()


def check(checks: list[bool], ok: bool, claim: str) -> None:
  checks.append(bool(ok))
  print(f"  {'ok' if ok else 'FAILED':6s} {claim}")


def plot(path: Path, panels: list[list[tuple[str, np.ndarray, str]]]) -> None:
  """Rows of (title, array, kind) panels; kind "image" (grey), "kernel" or "diff" (signed)."""
  from matplotlib.figure import Figure  # no pyplot: no GUI backend, nothing global

  rows, cols = len(panels), max(len(r) for r in panels)
  fig = Figure(figsize=(3.1 * cols, 3.3 * rows), layout="constrained")
  axes = fig.subplots(rows, cols, squeeze=False)
  for r, row in enumerate(panels):
    for c in range(cols):
      ax = axes[r][c]
      ax.set_xticks([])
      ax.set_yticks([])
      if c >= len(row):
        ax.set_axis_off()
        continue
      title, a, kind = row[c]
      if kind == "diff":
        m = float(np.max(np.abs(a))) or 1.0
        im = ax.imshow(a, cmap="RdBu_r", vmin=-m, vmax=m, interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.75)
      elif kind == "kernel":
        ax.imshow(a, cmap="magma", interpolation="nearest")
      else:
        ax.imshow(a, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
      ax.set_title(title, fontsize=9)
  fig.suptitle("fc.convolve (true convolution) vs fc.correlate (cross-correlation)")
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=100)


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
    "--out", type=Path, default=DEFAULT_OUT, help=f"where to write the PNG (default: {DEFAULT_OUT})"
  )
  args = parser.parse_args(argv)
  try:
    import matplotlib  # noqa: F401
  except ImportError:
    print("this example draws with matplotlib: pip install matplotlib (or '.[examples]')")
    return 2

  image, comet, blur = synthetic_scene(SIZE), comet_kernel(), even_blur_kernel()
  checks: list[bool] = []

  print(f"1. An asymmetric {comet.shape[0]}x{comet.shape[1]} kernel on an {SIZE}x{SIZE} image")
  conv = filter2d(fc.convolve, image, comet, padding="SAME")
  corr = filter2d(fc.correlate, image, comet, padding="SAME")
  delta = np.zeros_like(comet)  # one bright pixel, in the middle of a kernel-sized image
  delta[comet.shape[0] // 2, comet.shape[1] // 2] = 1.0
  impulse_conv = filter2d(fc.convolve, delta, comet, padding="SAME")
  impulse_corr = filter2d(fc.correlate, delta, comet, padding="SAME")
  for mode, padding in (("full", "FULL"), ("valid", "VALID"), ("same", "SAME")):
    err = rel_err(
      filter2d(fc.convolve, image, comet, padding=padding),
      scipy.signal.convolve2d(image, comet, mode=mode),
    )
    check(
      checks,
      err < TOL,
      f"fc.convolve(padding={padding!r}) == scipy.signal.convolve2d("
      f"mode={mode!r}) (relative error {err:.1e})",
    )
  err = rel_err(corr, scipy.signal.correlate2d(image, comet, mode="same"))
  check(
    checks,
    err < TOL,
    f"fc.correlate(padding='SAME') == scipy.signal.correlate2d("
    f"mode='same') (relative error {err:.1e})",
  )
  err = rel_err(
    conv,
    filter2d(
      fc.correlate,
      image,
      np.asarray(fc.flip_kernel(comet[:, :, None, None], "HWIO"))[:, :, 0, 0],
      padding="SAME",
    ),
  )
  check(checks, err < TOL, "fc.convolve(x, k) == fc.correlate(x, fc.flip_kernel(k))")
  check(
    checks,
    np.allclose(impulse_conv, comet, atol=1e-7),
    "convolving one bright pixel gives the kernel as drawn (its impulse response)",
  )
  check(
    checks,
    np.allclose(impulse_corr, comet[::-1, ::-1], atol=1e-7),
    "correlating it gives the kernel rotated by 180 degrees",
  )
  diff = rel_err(conv, corr)
  check(
    checks,
    diff > 0.1,
    f"so with this kernel they differ: max |convolve - correlate| = {diff:.2f} of max |convolve|",
  )

  print(
    f"\n2. An even {blur.shape[0]}x{blur.shape[1]} kernel (symmetric): where does 'same' "
    "put the extra row?"
  )
  same = filter2d(fc.convolve, image, blur, padding="SAME")
  same_lower = filter2d(fc.convolve, image, blur, padding="SAME_LOWER")
  half = filter2d(fc.convolve, image, blur, padding="HALF")
  scipy_same = scipy.signal.convolve2d(image, blur, mode="same")
  err = rel_err(same_lower, scipy_same)
  check(
    checks,
    err < TOL,
    f"scipy.signal.convolve2d(mode='same') == fc.convolve(padding="
    f"'SAME_LOWER') (relative error {err:.1e})",
  )
  shift = rel_err(same[:-1, :-1], same_lower[1:, 1:])
  check(
    checks,
    shift < TOL,
    "fc.convolve(padding='SAME') is that output moved one pixel up "
    "and left: SAME[:-1, :-1] == SAME_LOWER[1:, 1:]",
  )
  diff_even = rel_err(same, scipy_same)
  check(
    checks,
    diff_even > 0.1,
    f"so 'SAME' and SciPy's 'same' differ: max |difference| = {diff_even:.2f} of max |output|",
  )
  check(
    checks,
    half.shape == (SIZE + 1, SIZE + 1)
    and rel_err(half[1:, 1:], same) < TOL
    and rel_err(half[:-1, :-1], same_lower) < TOL,
    f"'HALF' (k // 2 on both sides, Theano) is {SIZE + 1}x{SIZE + 1} and holds both: "
    "HALF[1:, 1:] == SAME, HALF[:-1, :-1] == SAME_LOWER",
  )
  check(
    checks,
    rel_err(filter2d(fc.correlate, image, blur, padding="SAME"), same) < TOL,
    "the kernel is symmetric, so fc.correlate gives the same as fc.convolve: the shift is "
    "the padding's, not the flip's",
  )

  plot(
    args.out,
    [
      [
        ("image", image, "image"),
        ("asymmetric kernel (as drawn)", comet, "kernel"),
        ("fc.convolve: tails to the top left", conv, "image"),
        ("fc.correlate: tails to the bottom right", corr, "image"),
        ("convolve - correlate", conv - corr, "diff"),
      ],
      [
        ("image", image, "image"),
        ("even 4x4 blur kernel", blur, "kernel"),
        ("fc.convolve, padding='SAME'\n(extra zero at the end)", same, "image"),
        ("scipy convolve2d mode='same'\n== padding='SAME_LOWER'", scipy_same, "image"),
        ("'SAME' - scipy 'same':\na one-pixel shift", same - scipy_same, "diff"),
      ],
    ],
  )
  ok = all(checks)
  print(f"\nwrote {args.out}")
  print("All checks held." if ok else "Some checks FAILED.")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
