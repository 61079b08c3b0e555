"""Sobel edges on a photograph: for an edge detector, the flip is a sign.

The story: the textbook Sobel kernels are written as *convolution* kernels,
``Gx = [[1, 0, -1], [2, 0, -2], [1, 0, -1]]`` and ``Gy = Gx.T``: convolving an
image with them (``fc.convolve``, a true convolution) gives its gradient, the
brightness rising to the right and downwards, as ``scipy.ndimage.sobel`` and
``scipy.signal.convolve2d`` compute it. A cross-correlation (``fc.correlate``,
what PyTorch, TensorFlow and Flax layers compute) slides the kernel unflipped;
a Sobel kernel rotated by 180 degrees is its own negation, so it gives exactly
the negated gradient: every edge is found, with the wrong sign, and the
gradient's direction points the other way.

An asymmetric kernel is not saved by a sign. Kirsch's north-east compass
kernel responds where the bright side of an edge lies up and to the right;
correlating with it is convolving with the kernel rotated, the south-west
kernel, which responds to the opposite edges.

The picture (top row ``fc.convolve``, bottom row ``fc.correlate``): the
image, the two gradient maps (red where the brightness rises along the axis,
blue where it falls: the colours swap between the rows), the gradient
magnitude with its direction as colour (the hues turn by 180 degrees), and
the north-east detector.

Then the same on a batch in NCHW with a PyTorch-convention layer,
``fc.linen.Conv(convention="pytorch")`` holding the Sobel kernels as a
``torch.nn.Conv2d`` stores them for this gradient (flipped, since PyTorch
correlates), checked against ``scipy.ndimage.sobel`` (and against PyTorch if
it is installed).

The photograph is scikit-image's ``data.camera()`` (512x512, shipped in the
wheel: no network); without scikit-image a synthetic scene stands in. Every
claim is checked (the claims about a single image are
``flipconv.demo.sobel_checks``, which ``flipconv demo`` runs on a small
synthetic image).

Run it (needs matplotlib and scipy, scikit-image for the photograph: ``pip
install ".[examples]"``; writes examples/sobel_edges.png unless told otherwise):

    python examples/sobel_edges.py [--out PATH]

It prints a line per check and where the PNG went; exit code 0 only if all
checks hold.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import numpy as np
import scipy.ndimage

import flipconv as fc
from flipconv.demo import SOBEL_X, SOBEL_Y, TOL, rel_err, sobel_checks, synthetic_scene

DEFAULT_OUT = Path(__file__).with_suffix(".png")


def photograph() -> tuple[np.ndarray, str, tuple[slice, slice]]:
  """scikit-image's camera man as float32 in [0, 1], or a synthetic scene without it.

  Returns:
    ``(image, where it comes from, the region the picture shows closer)``.
  """
  try:
    from skimage import data
  except ImportError:
    source = "a synthetic scene (pip install scikit-image for the photograph)"
    return synthetic_scene(128), source, (slice(0, 128), slice(0, 128))
  camera_man = data.camera().astype(np.float32) / 255.0
  return camera_man, "skimage.data.camera()", (slice(40, 232), slice(200, 392))  # head, camera


def report(checks: list[tuple[str, bool]], ok: list[bool]) -> None:
  for claim, holds in checks:
    ok.append(bool(holds))
    print(f"  {'ok' if holds else 'FAILED':6s} {claim}")


def pytorch_layer_checks(image: np.ndarray) -> list[tuple[str, bool]]:
  """A batch in NCHW through ``fc.linen.Conv(convention="pytorch")`` with torch's weights."""
  h, w = image.shape
  # Four crops as a batch of one-channel images (NCHW).
  x = np.stack([image[r : r + h // 2, c : c + w // 2] for r in (0, h // 2) for c in (0, w // 2)])
  x = x[:, None]
  textbook = np.stack([SOBEL_X, SOBEL_Y])[:, None]  # OIHW: 2 output channels, 1 input
  # PyTorch correlates, so the weight that gives the gradient is the flipped kernel.
  torch_weight = np.array(fc.flip_kernel(textbook, "OIHW"))
  layer = fc.linen.Conv(2, (3, 3), padding=1, convention="pytorch", use_bias=False)
  grad = np.asarray(layer.apply({"params": {"kernel": torch_weight}}, x))
  naive = np.asarray(layer.apply({"params": {"kernel": textbook}}, x))
  # ndimage.sobel of one 2-D image at a time (on a stack it would smooth across images
  # too), with zeros outside the image as the layer pads.
  want = np.stack(
    [[scipy.ndimage.sobel(img[0], axis=axis, mode="constant") for axis in (1, 0)] for img in x]
  )
  err = rel_err(grad, want)
  checks = [
    (
      f"NCHW batch {x.shape} -> {grad.shape}: fc.linen.Conv(convention='pytorch') with the "
      f"flipped kernels as weight == scipy.ndimage.sobel(mode='constant') per image "
      f"(relative error {err:.1e})",
      err < TOL,
    ),
    (
      "the same layer with the textbook kernels unflipped (a load that forgets the flip) "
      "gives exactly the negated gradient",
      bool(np.array_equal(naive, -grad)),
    ),
  ]
  try:
    import torch
  except ImportError:
    print("  (PyTorch is not installed: the layer is checked against SciPy only)")
    return checks
  conv = torch.nn.Conv2d(1, 2, 3, padding=1, bias=False)
  with torch.no_grad():
    conv.weight.copy_(torch.from_numpy(torch_weight))
    ref = conv(torch.from_numpy(x)).numpy()
  err = rel_err(grad, ref)
  checks.append(
    (
      f"torch.nn.Conv2d(1, 2, 3, padding=1) with that weight == the fc.linen layer "
      f"(relative error {err:.1e})",
      err < TOL,
    )
  )
  return checks


def direction_rgb(gx: np.ndarray, gy: np.ndarray, scale: float) -> np.ndarray:
  """Gradient direction as hue, magnitude as brightness (saturating at ``scale``)."""
  from matplotlib.colors import hsv_to_rgb

  hue = (np.arctan2(-gy, gx) / (2 * np.pi)) % 1.0  # 0 = east, 0.25 = north (y is down)
  value = np.clip(np.hypot(gx, gy) / scale, 0.0, 1.0)
  return hsv_to_rgb(np.stack([hue, np.ones_like(hue), value], axis=-1))


def colour_wheel(n: int = 101) -> np.ndarray:
  """The key for :func:`direction_rgb`: a disc coloured by direction from its centre."""
  yy, xx = np.mgrid[-1 : 1 : n * 1j, -1 : 1 : n * 1j]
  rgb = direction_rgb(xx, yy, 1.0)
  rgb[np.hypot(xx, yy) > 1.0] = 1.0
  return rgb


def plot(
  path: Path, image: np.ndarray, maps: dict[str, np.ndarray], source: str, crop: tuple[slice, ...]
) -> None:
  """Top row fc.convolve, bottom row fc.correlate; the maps shown on ``crop`` of the image."""
  from matplotlib.figure import Figure  # no pyplot: no GUI backend, nothing global
  from matplotlib.patches import Rectangle

  maps = {name: m[crop] for name, m in maps.items()}
  g = float(np.percentile(np.hypot(maps["gx"], maps["gy"]), 98.0)) or 1.0
  ne = float(np.percentile(np.abs(maps["ne"]), 99.0)) or 1.0
  fig = Figure(figsize=(16, 7.2), layout="constrained")
  axes = fig.subplots(2, 5)
  for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
  axes[0, 0].imshow(image, cmap="gray", vmin=0, vmax=1)
  rows, cols = crop
  axes[0, 0].add_patch(
    Rectangle(
      (cols.start - 0.5, rows.start - 0.5),
      cols.stop - cols.start,
      rows.stop - rows.start,
      fill=False,
      edgecolor="yellow",
      linewidth=1.5,
    )
  )
  axes[0, 0].set_title(f"{source.split(' (')[0]}\n(the other panels: the yellow box)", fontsize=10)
  axes[1, 0].imshow(colour_wheel())
  axes[1, 0].set_title("key: colour = direction in which\nthe brightness rises", fontsize=10)
  for name, dx, dy in (("E", 1, 0), ("N", 0, -1), ("W", -1, 0), ("S", 0, 1)):
    axes[1, 0].text(50 + 42 * dx, 50 + 42 * dy, name, ha="center", va="center", fontsize=11)
  for row, (op, suffix) in enumerate((("convolve", ""), ("correlate", "_corr"))):
    for col, axis in ((1, "x"), (2, "y")):
      axes[row, col].imshow(maps[f"g{axis}{suffix}"], cmap="RdBu_r", vmin=-g, vmax=g)
      where = ("to the right", "to the left", "below", "above")[2 * (axis == "y") + row]
      flipped = " (flipped)" if row else ""
      axes[row, col].set_title(
        f"fc.{op}(image, G{axis})\nred: brighter {where}{flipped}", fontsize=10
      )
    axes[row, 3].imshow(direction_rgb(maps[f"gx{suffix}"], maps[f"gy{suffix}"], g))
    axes[row, 3].set_title(f"fc.{op}: gradient magnitude,\ndirection as colour", fontsize=10)
    axes[row, 4].imshow(np.clip(maps[f"ne{suffix}"], 0, None), cmap="magma", vmin=0, vmax=ne)
    axes[row, 4].set_title(f"fc.{op}(image, north-east\nkernel), positive part", fontsize=10)
  axes[0, 1].set_ylabel("true convolution\n(== scipy.ndimage.sobel)", fontsize=11)
  axes[1, 1].set_ylabel("cross-correlation (PyTorch,\nTF, Flax): minus the gradient", fontsize=11)
  fig.suptitle(
    "Sobel kernels written as convolution kernels: fc.correlate gives exactly the negated "
    "gradient (red and blue swap, the hues turn by 180 degrees);\nthe asymmetric north-east "
    "kernel fires on other edges"
  )
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=80)


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

  image, source, crop = photograph()
  ok: list[bool] = []
  print(f"1. The Sobel kernels on {source}, {image.shape[0]}x{image.shape[1]}")
  checks, maps = sobel_checks(image)
  report(checks, ok)

  print("\n2. A batch in NCHW through a PyTorch-convention layer")
  report(pytorch_layer_checks(image), ok)

  plot(args.out, image, maps, source, crop)
  print(f"\nwrote {args.out}")
  print("All checks held." if all(ok) else "Some checks FAILED.")
  return 0 if all(ok) else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
