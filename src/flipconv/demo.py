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
  lax_corr = np.asarray(
    lax.conv_general_dilated(
      jnp.asarray(x), jnp.asarray(k), (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
  )[0, :, :, 0]
  flipped = np.asarray(fc.correlate(x, fc.flip_kernel(k, "HWIO")))[0, :, :, 0]
  out("   fc.convolve(image, kernel) (first rows):")
  out(_grid(conv[:2]))
  out("   fc.correlate(image, kernel) (first rows):")
  out(_grid(corr[:2]))
  checks = [
    (
      "fc.convolve == scipy.signal.convolve2d(mode='valid')",
      np.allclose(conv, scipy_conv, atol=1e-5),
    ),
    ("fc.correlate == lax.conv_general_dilated", np.array_equal(corr, lax_corr)),
    ("fc.convolve == fc.correlate with fc.flip_kernel(kernel)", np.array_equal(conv, flipped)),
    (
      f"they differ for this kernel (max |diff| = {np.abs(conv - corr).max():.1f})",
      not np.allclose(conv, corr),
    ),
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
    (
      "convolve SAME with the impulse shifts it one pixel up and left",
      np.array_equal(same_conv, shifted),
    ),
  ]
  return _report("flip", checks, out)


def checkpoint_section(out: Callable[[str], None] = print) -> bool:
  """A PyTorch-convention checkpoint converted to Flax on disk, then used by flax.linen.Conv."""
  import os
  import tempfile

  import flax.linen as nn

  import flipconv as fc
  from flipconv import checkpoints

  number = SECTIONS.index(checkpoint_section) + 1 if checkpoint_section in SECTIONS else "*"
  out(f"{number}. Converting a checkpoint: PyTorch (OIHW) -> Flax (HWIO)")
  rng = np.random.default_rng(1)
  f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)
  state = {
    "conv1.weight": f32(3, 3, 3, 3),
    "conv1.bias": f32(3),  # 3 -> 3 channels
    "conv2.weight": f32(8, 3, 3, 3),
    "conv2.bias": f32(8),
  }  # 3 -> 8 channels
  try:
    from safetensors.numpy import save_file
  except ImportError:  # no safetensors: the same story with .npz
    save_file, ext = None, ".npz"
  else:
    ext = ".safetensors"
  with tempfile.TemporaryDirectory() as tmp:
    src, dst = os.path.join(tmp, "torch" + ext), os.path.join(tmp, "flax" + ext)
    if save_file is not None:
      save_file(state, src)
    else:
      np.savez(src, **state)
    out(f"   flipconv convert torch{ext} flax{ext} --from pytorch --to flax")
    result = checkpoints.convert_file(src, dst, "pytorch", "flax")
    for line in str(result.plan).splitlines():
      out("     " + line)
    converted, raw = checkpoints.load(dst), checkpoints.load(src)

  try:
    import torch
  except ImportError:
    torch = None
  reference = "torch.nn.functional.conv2d" if torch else 'fc.conv(convention="pytorch")'
  x = f32(2, 3, 9, 9)  # NCHW, as PyTorch takes it
  checks = []
  for layer in ("conv1", "conv2"):
    w, b = state[f"{layer}.weight"], state[f"{layer}.bias"]
    if torch is not None:
      want = torch.nn.functional.conv2d(
        torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), padding=1
      ).numpy()
    else:
      want = np.asarray(fc.conv(x, w, convention="pytorch", padding=1)) + b[:, None, None]
    want = want.transpose(0, 2, 3, 1)  # to NHWC, as Flax returns it
    module = nn.Conv(features=w.shape[0], kernel_size=(3, 3), padding=1)
    flax_in = x.transpose(0, 2, 3, 1)
    got = np.asarray(
      module.apply(
        {"params": {"kernel": converted[f"{layer}.weight"], "bias": converted[f"{layer}.bias"]}},
        flax_in,
      )
    )
    err = float(np.abs(got - want).max())
    checks.append(
      (
        f"{layer}: flax.linen.Conv on the converted file == {reference} on the "
        f"original (max |diff| = {err:.1e})",
        err < 1e-4,
      )
    )
    # The other way: no conversion at all, a layer that holds PyTorch's kernel as it is.
    ours = fc.linen.Conv(w.shape[0], (3, 3), padding=1, convention="pytorch")
    got = np.asarray(ours.apply({"params": fc.nest_params(raw)[layer]}, x)).transpose(0, 2, 3, 1)
    err = float(np.abs(got - want).max())
    checks.append(
      (
        f"{layer}: fc.linen.Conv(convention='pytorch') on the unconverted file == "
        f"{reference} (max |diff| = {err:.1e})",
        err < 1e-4,
      )
    )
    try:
      wrong = np.asarray(
        module.apply(
          {"params": {"kernel": raw[f"{layer}.weight"], "bias": raw[f"{layer}.bias"]}}, flax_in
        )
      )
    except Exception as e:  # flax refuses a kernel of the wrong shape
      checks.append(
        (
          f"{layer}: the unconverted kernel does not even fit: "
          f"{type(e).__name__} (shape {raw[f'{layer}.weight'].shape} where Flax "
          f"wants {converted[f'{layer}.weight'].shape})",
          True,
        )
      )
    else:
      off = float(np.abs(wrong - want).max())
      checks.append(
        (
          f"{layer}: the unconverted kernel fits the shape but computes something "
          f"else (max |diff| = {off:.2f}, outputs up to "
          f"{float(np.abs(want).max()):.2f})",
          off > 1e-2,
        )
      )
  return _report("checkpoint", checks, out)


def detect_section(out: Callable[[str], None] = print) -> bool:
  """A Lasagne layer's output (true convolution, pad=k // 2), named by detect_convention."""
  import scipy.signal

  import flipconv as fc
  from flipconv.cli import format_matches

  number = SECTIONS.index(detect_section) + 1 if detect_section in SECTIONS else "*"
  out(f"{number}. Which convention were these weights trained in? fc.detect_convention")
  rng = np.random.default_rng(2)
  x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)  # NCHW
  w = rng.standard_normal((4, 3, 4, 4)).astype(np.float32)  # OIHW, an even size
  # Lasagne Conv2DLayer(pad=2) flips its filters (a true convolution) and pads
  # k // 2 on both sides (Theano's 'half'; Lasagne's pad='same' is refused for even
  # kernels): scipy's 'full' (k - 1) cut by one on each side.
  full = np.stack(
    [
      [sum(scipy.signal.convolve(x[n, i], w[o, i]) for i in range(3)) for o in range(4)]
      for n in range(2)
    ]
  ).astype(np.float32)
  y = full[:, :, 1:-1, 1:-1]
  out(
    f"   y: a Lasagne Conv2DLayer(pad=2) output, made with scipy.signal.convolve per "
    f"channel;\n   x {x.shape}, W {w.shape} -> y {y.shape}. fc.detect_convention(x, W, y):"
  )
  matches = fc.detect_convention(x, w, y)
  for line in format_matches(matches):
    out("     " + line)
  best = matches[0] if matches else None
  ok = best is not None
  checks = [
    (
      "the first match is lasagne (flip=True, NCHW, OIHW)",
      ok
      and "lasagne" in best.names
      and best.flip
      and (best.layout, best.kernel_layout) == ("NCHW", "OIHW"),
    ),
    (
      "with padding='HALF' (Theano's 'half', k // 2 on both sides: an even kernel gives one "
      "more row and column)",
      ok and best.kwargs.get("padding") == "HALF",
    ),
    (
      "no cross-correlation convention (pytorch, flax, ...) reproduces y",
      all(m.flip for m in matches),
    ),
    (
      "fc.conv(x, W, **match.kwargs) gives the Lasagne output",
      ok and np.allclose(np.asarray(fc.conv(x, w, **best.kwargs)), y, atol=1e-4),
    ),
  ]
  return _report("detect", checks, out)


SECTIONS: list[Callable[[Callable[[str], None]], bool]] = [
  flip_section,
  checkpoint_section,
  detect_section,
]


def run(out: Callable[[str], None] = print) -> int:
  """Runs every section; returns the exit code (0 only if all checks held)."""
  results = []
  for section in SECTIONS:
    results.append(section(out))
    out("")
  ok = all(results)
  out("All checks held." if ok else "Some checks FAILED.")
  out(
    "More, in a clone of the repository: examples/true_convolution.py (a picture of convolve "
    "vs correlate),\nexamples/port_pytorch_cnn.py, examples/lasagne_weights.py, "
    "examples/sharded_training.py."
  )
  return 0 if ok else 1
