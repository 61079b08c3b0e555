"""``flipconv demo``: what a flip and a layout do, checked as it is shown.

Each section prints what it shows and returns whether its checks held; the
command's exit code is 0 only if every check held.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Check = tuple[str, bool]


def _report(title: str, checks: list[Check], out: Callable[[str], None]) -> bool:
  for what, ok in checks:
    out(f"  [{'ok' if ok else 'FAILED'}] {what}")
  return all(ok for _, ok in checks)


def _grid(a: np.ndarray) -> str:
  return "\n".join("    " + " ".join(f"{v:6.2f}" for v in row) for row in a)


def flip_section(out: Callable[[str], None] = print) -> bool:
  """True convolution vs cross-correlation on a small image and an even kernel."""
  import jax.numpy as jnp
  import scipy.signal
  from jax import lax

  import flipconv as fc

  out("1. Flip: true convolution vs cross-correlation")
  rng = np.random.default_rng(0)
  image = rng.integers(0, 10, size=(6, 7)).astype(np.float32)
  kernel = np.array([[1.0, 2.0], [0.0, -1.0]], np.float32)  # asymmetric, even size
  out("   image (6x7) and an asymmetric 2x2 kernel:")
  out(_grid(kernel))

  x = image[None, :, :, None]  # NHWC
  k = kernel[:, :, None, None]  # HWIO
  conv = np.asarray(fc.convolve(x, k))[0, :, :, 0]
  corr = np.asarray(fc.correlate(x, k))[0, :, :, 0]
  scipy_conv = scipy.signal.convolve2d(image, kernel, mode="valid")
  lax_corr = np.asarray(lax.conv_general_dilated(
      jnp.asarray(x), jnp.asarray(k), (1, 1), "VALID",
      dimension_numbers=("NHWC", "HWIO", "NHWC")))[0, :, :, 0]
  flipped = np.asarray(fc.correlate(x, fc.flip_kernel(k, "HWIO")))[0, :, :, 0]
  out("   fc.convolve(image, kernel) (first rows):")
  out(_grid(conv[:2]))
  out("   fc.correlate(image, kernel) (first rows):")
  out(_grid(corr[:2]))
  checks = [
      ("fc.convolve == scipy.signal.convolve2d(mode='valid')",
       np.allclose(conv, scipy_conv, atol=1e-5)),
      ("fc.correlate == lax.conv_general_dilated", np.array_equal(corr, lax_corr)),
      ("fc.convolve == fc.correlate with fc.flip_kernel(kernel)", np.array_equal(conv, flipped)),
      ("they differ for this kernel (max |diff| = "
       f"{np.abs(conv - corr).max():.1f})", not np.allclose(conv, corr)),
  ]

  # An even kernel has no centre: SAME padding puts the extra row/column at the
  # end, so the same impulse kernel flipped moves the picture by one pixel.
  impulse = np.array([[1.0, 0.0], [0.0, 0.0]], np.float32)[:, :, None, None]
  same_corr = np.asarray(fc.correlate(x, impulse, padding="SAME"))[0, :, :, 0]
  same_conv = np.asarray(fc.convolve(x, impulse, padding="SAME"))[0, :, :, 0]
  out("   even-size kernel, padding='SAME': impulse at the kernel's top-left")
  out("   correlate gives the image back; convolve gives it shifted by one pixel:")
  out(_grid(same_conv[:2]))
  shifted = np.zeros_like(image)
  shifted[:-1, :-1] = image[1:, 1:]
  checks += [
      ("correlate SAME with the impulse returns the image", np.array_equal(same_corr, image)),
      ("convolve SAME with the impulse shifts it one pixel up and left",
       np.array_equal(same_conv, shifted)),
  ]
  return _report("flip", checks, out)


SECTIONS: list[Callable[[Callable[[str], None]], bool]] = [flip_section]


def run(out: Callable[[str], None] = print) -> int:
  """Runs every section; returns the exit code (0 only if all checks held)."""
  results = []
  for section in SECTIONS:
    results.append(section(out))
    out("")
  ok = all(results)
  out("All checks held." if ok else "Some checks FAILED.")
  return 0 if ok else 1
