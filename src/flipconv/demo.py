"""``flipconv demo``: what a flip and a layout do, checked as it is shown.

Each section prints what it shows and returns whether its checks held; the
command's exit code is 0 only if every check held.

The Sobel and causal-filter sections check the claims of
``examples/sobel_edges.py`` and ``examples/causal_filter.py`` on small
synthetic inputs; those examples call the same check functions
(:func:`sobel_checks`, :func:`causal_checks`) on a photograph and on longer
series, and draw the pictures.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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


# Shared with examples/sobel_edges.py and examples/causal_filter.py: the kernels, the
# inputs and the checks of their claims.

TOL = 1e-5  # max |difference| / max |reference|: float32 rounding only

# The textbook Sobel kernels, written as convolution kernels: convolving gives the
# derivative towards +x (right) and +y (down), as scipy.ndimage.sobel does.
SOBEL_X = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float32)
SOBEL_Y = np.ascontiguousarray(SOBEL_X.T)
# Kirsch's compass kernel for an edge whose bright side lies to the north-east (up and
# right), as a convolution kernel. Unlike Sobel it is neither symmetric nor antisymmetric
# under the flip (a 180-degree rotation), which makes it Kirsch's south-west kernel.
NORTH_EAST = np.array([[-3, -3, -3], [5, 0, -3], [5, 5, -3]], np.float32)
# A 5-tap moving average: symmetric, so the flip changes nothing.
MOVING_AVERAGE = np.full(5, 0.2, np.float32)


def rel_err(a: Any, b: Any) -> float:
  """``max |a - b| / max |b|`` (inf if the shapes differ)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape:
    return float("inf")
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def synthetic_scene(size: int = 48) -> np.ndarray:
  """A bright square and a grey disc on a dark ground: edges in every direction.

  Returns:
    A ``(size, size)`` float32 image, values in [0, 1].
  """
  yy, xx = np.mgrid[:size, :size]
  image = np.zeros((size, size), np.float32)
  image[size // 6 : size // 2, size // 6 : size // 2] = 1.0
  image[(yy - 0.65 * size) ** 2 + (xx - 0.65 * size) ** 2 < (0.2 * size) ** 2] = 0.6
  return image


def filter2d(op: Callable[..., Any], image: np.ndarray, kernel: np.ndarray, **kwargs: Any):
  """``op`` (``fc.convolve`` or ``fc.correlate``) on one grey ``(H, W)`` image, as NHWC."""
  kwargs.setdefault("padding", "SAME")
  return np.asarray(op(image[None, :, :, None], kernel[:, :, None, None], **kwargs))[0, :, :, 0]


def sobel_checks(image: np.ndarray) -> tuple[list[Check], dict[str, np.ndarray]]:
  """The Sobel claims on a grey image: convolve is the gradient, correlate its negation.

  Args:
    image: a ``(H, W)`` float32 image.

  Returns:
    ``(checks, maps)``: the checks, and the maps ``"gx"``, ``"gy"`` (fc.convolve),
    ``"gx_corr"``, ``"gy_corr"`` (fc.correlate), ``"ne"``, ``"ne_corr"`` (the
    north-east kernel under each), all with ``padding="SAME"`` and
    ``pad_mode="symmetric"``.
  """
  import scipy.ndimage
  import scipy.signal

  import flipconv as fc

  # scipy.ndimage.sobel's default border, mode="reflect" (dcba|abcd|dcba), is
  # flipconv's "symmetric"; flipconv's "reflect" (dcb|abcd|cba) is ndimage's "mirror".
  sym = dict(padding="SAME", pad_mode="symmetric")
  maps: dict[str, np.ndarray] = {}
  checks: list[Check] = []
  for name, kernel, axis in (("x", SOBEL_X, 1), ("y", SOBEL_Y, 0)):
    conv = maps[f"g{name}"] = filter2d(fc.convolve, image, kernel, **sym)
    corr = maps[f"g{name}_corr"] = filter2d(fc.correlate, image, kernel, **sym)
    err = rel_err(conv, scipy.ndimage.sobel(image, axis=axis))
    checks.append(
      (
        f"G{name}: fc.convolve(pad_mode='symmetric') == scipy.ndimage.sobel(axis={axis}) "
        f"(default mode='reflect'), every pixel (relative error {err:.1e})",
        err < TOL,
      )
    )
    err = rel_err(
      filter2d(fc.convolve, image, kernel), scipy.signal.convolve2d(image, kernel, "same")
    )
    checks.append(
      (
        f"G{name}: fc.convolve(padding='SAME') == scipy.signal.convolve2d(mode='same') "
        f"(zero borders), every pixel (relative error {err:.1e})",
        err < TOL,
      )
    )
    checks.append(
      (
        f"G{name}: fc.correlate == -fc.convolve exactly: the flip of a Sobel kernel is its "
        "negation",
        bool(np.array_equal(corr, -conv)),
      )
    )

  ne = maps["ne"] = filter2d(fc.convolve, image, NORTH_EAST, **sym)
  ne_corr = maps["ne_corr"] = filter2d(fc.correlate, image, NORTH_EAST, **sym)
  south_west = filter2d(fc.convolve, image, NORTH_EAST[::-1, ::-1].copy(), **sym)
  off = min(rel_err(ne_corr, ne), rel_err(-ne_corr, ne))
  checks.append(
    (
      f"north-east kernel: fc.correlate is not +-fc.convolve (off by >= {off:.2f} of max "
      "|convolve|): it convolves with the kernel turned 180 degrees, Kirsch's south-west one",
      off > 0.1 and bool(np.array_equal(ne_corr, south_west)),
    )
  )
  # Where each fires (over half its maximum), which way does the brightness rise?
  # The Sobel gradient (gx, gy) points to the bright side (y down); north-east is (1, -1).
  facing_ne = (maps["gx"] - maps["gy"]) / np.sqrt(2.0)
  fires, fires_corr = ne > 0.5 * ne.max(), ne_corr > 0.5 * ne_corr.max()
  checks.append(
    (
      f"so they fire on different edges: fc.convolve on {fires.sum()} pixels, all brighter to "
      f"the north-east; fc.correlate on {fires_corr.sum()}, all brighter to the south-west; "
      "none on both",
      bool(fires.any() and fires_corr.any())
      and bool(np.all(facing_ne[fires] > 0) and np.all(facing_ne[fires_corr] < 0))
      and not np.any(fires & fires_corr),
    )
  )
  return checks, maps


def sensor_signal(n: int = 200, step: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """A synthetic sensor reading: a slow drift with noise, spikes, and a unit step at ``step``.

  Returns:
    ``(signal, baseline)``: float32 arrays of length ``n``; ``baseline`` is the same
    signal without the step, so ``signal - baseline`` is 0 before ``step`` and 1 from it.
  """
  rng = np.random.default_rng(seed)
  t = np.arange(n)
  baseline = 0.15 * np.sin(2 * np.pi * t / n) + 0.02 * rng.standard_normal(n)
  for at in (n // 6, n // 3, (3 * n) // 4, (7 * n) // 8):  # spikes, away from the step
    baseline[at] += 0.8
  signal = baseline + (t >= step)
  return signal.astype(np.float32), baseline.astype(np.float32)


def exponential_taps(k: int = 24, tau: float = 5.0) -> np.ndarray:
  """``k`` FIR taps ``exp(-j / tau)``, summing to 1: the newest sample weighs most.

  Examples:
    >>> from flipconv.demo import exponential_taps
    >>> exponential_taps(3, 1.0).round(3)
    array([0.665, 0.245, 0.09 ], dtype=float32)
  """
  taps = np.exp(-np.arange(k) / tau)
  return (taps / taps.sum()).astype(np.float32)


def filter1d(op: Callable[..., Any], x: np.ndarray, taps: np.ndarray, **kwargs: Any):
  """``op`` (``fc.convolve`` or ``fc.correlate``) on a series ``x[t]`` or a batch ``x[n, t]``.

  The series are laid out NWC with one channel (the batch is ``n``).

  Examples:
    >>> import numpy as np, flipconv as fc
    >>> from flipconv.demo import filter1d
    >>> x, taps = np.array([0.0, 0.0, 1.0, 0.0]), np.array([1.0, 0.5])
    >>> filter1d(fc.convolve, x, taps, padding="CAUSAL")  # lfilter(taps, 1, x)
    array([0. , 0. , 1. , 0.5], dtype=float32)
    >>> filter1d(fc.correlate, x, taps, padding="CAUSAL")  # the taps backwards
    array([0. , 0. , 0.5, 1. ], dtype=float32)
  """
  x = np.asarray(x)
  y = op(x.reshape(-1, x.shape[-1], 1), np.asarray(taps)[:, None, None], **kwargs)
  return np.asarray(y)[..., 0].reshape(*x.shape[:-1], -1)


def first_move(y: np.ndarray, y_baseline: np.ndarray, tol: float = 1e-6) -> int:
  """The first index where ``y`` differs from ``y_baseline`` by more than ``tol`` (else len).

  Examples:
    >>> from flipconv.demo import first_move
    >>> first_move([0.0, 0.0, 0.5, 1.0], [0.0, 0.0, 0.0, 0.0])
    2
  """
  moved = np.flatnonzero(np.abs(np.asarray(y) - np.asarray(y_baseline)) > tol)
  return int(moved[0]) if moved.size else len(y)


def causal_checks(
  signal: np.ndarray, baseline: np.ndarray, step: int, taps: np.ndarray, name: str
) -> tuple[list[Check], dict[str, np.ndarray], dict[str, int]]:
  """The causal-filter claims for one FIR filter on a series with a step at ``step``.

  Args:
    signal: the series, float32.
    baseline: the same series without the step.
    step: where the step is.
    taps: the FIR taps (``lfilter(taps, 1, x)``: ``taps[0]`` weighs the newest sample).
    name: the filter's name for the printed claims.

  Returns:
    ``(checks, outputs, starts)``: the checks; the outputs ``"lfilter"``,
    ``"convolve_causal"``, ``"correlate_causal"``, ``"correlate_same"``,
    ``"convolve_same"`` for ``signal``; and for each fc output, the first ``t`` where
    it differs from the same filter's output for ``baseline`` (where the step shows).
  """
  import scipy.signal

  import flipconv as fc

  k = len(taps)
  out = {"lfilter": scipy.signal.lfilter(np.float64(taps), 1.0, np.float64(signal))}
  checks: list[Check] = []
  starts = {}
  ops = {"convolve": fc.convolve, "correlate": fc.correlate}
  for key in ("convolve_causal", "correlate_causal", "correlate_same", "convolve_same"):
    op, padding = key.split("_")
    y, y0 = (filter1d(ops[op], s, taps, padding=padding.upper()) for s in (signal, baseline))
    out[key], starts[key] = y, first_move(y, y0)

  err = rel_err(out["convolve_causal"], out["lfilter"])
  checks.append(
    (
      f"{name}: fc.convolve(padding='CAUSAL') == scipy.signal.lfilter(taps, 1, x) "
      f"(relative error {err:.1e})",
      err < TOL,
    )
  )
  checks.append(
    (
      f"{name}: causal: nothing moves before the step at t = {step}; the output moves at it",
      starts["convolve_causal"] == step,
    )
  )
  diff = rel_err(out["correlate_causal"], out["lfilter"])
  if np.array_equal(taps, taps[::-1]):
    checks.append(
      (
        f"{name}: symmetric taps, so fc.correlate(padding='CAUSAL') == lfilter too "
        f"(relative error {diff:.1e}): the flip changes nothing",
        diff < TOL,
      )
    )
  else:
    checks.append(
      (
        f"{name}: fc.correlate(padding='CAUSAL') != lfilter, off by {diff:.2f} of max "
        "|lfilter|: it reads no future either, but weighs the oldest sample most",
        diff > 0.1 and starts["correlate_causal"] == step,
      )
    )
  # 'SAME' pads k - 1 samples, (k - 1) // 2 before and k // 2 after the series: each
  # output reads k // 2 samples of the future.
  early = step - starts["correlate_same"]
  checks.append(
    (
      f"{name}: fc.correlate(padding='SAME') reads the future: it responds {early} samples "
      f"before the step ('SAME' pads {k // 2} after the end)",
      early == k // 2 > 0,
    )
  )
  checks.append(
    (
      f"{name}: so does fc.convolve(padding='SAME') ({step - starts['convolve_same']} samples "
      "early): causality takes the flip and padding='CAUSAL'",
      step - starts["convolve_same"] == k // 2,
    )
  )
  return checks, out, starts


def sobel_section(out: Callable[[str], None] = print) -> bool:
  """Sobel edges (examples/sobel_edges.py in small): for Sobel kernels the flip is a sign."""
  number = SECTIONS.index(sobel_section) + 1 if sobel_section in SECTIONS else "*"
  out(f"{number}. Sobel edges: what the flip does to an edge detector")
  image = synthetic_scene()
  out(
    "   the textbook Sobel kernels as convolution kernels (Gx below, Gy = Gx.T) on a\n"
    f"   {image.shape[0]}x{image.shape[1]} square-and-disc image:"
  )
  out(_grid(SOBEL_X))
  checks, _ = sobel_checks(image)
  return _report("sobel", checks, out)


def causal_section(out: Callable[[str], None] = print) -> bool:
  """A causal FIR filter (examples/causal_filter.py in small): the flip is causality."""
  number = SECTIONS.index(causal_section) + 1 if causal_section in SECTIONS else "*"
  out(f"{number}. A time series: the flip is causality")
  taps = exponential_taps()
  signal, baseline = sensor_signal()
  step = int(np.flatnonzero(signal != baseline)[0])
  out(
    f"   {len(signal)} samples with spikes and a step at t = {step}; {len(taps)} FIR taps "
    f"exp(-j / 5), first ones:\n    " + " ".join(f"{v:.3f}" for v in taps[:6]) + " ..."
  )
  checks, _, _ = causal_checks(signal, baseline, step, taps, "exponential decay")
  return _report("causal", checks, out)


SECTIONS: list[Callable[[Callable[[str], None]], bool]] = [
  flip_section,
  checkpoint_section,
  detect_section,
  sobel_section,
  causal_section,
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
    "vs correlate),\nexamples/sobel_edges.py and examples/causal_filter.py (the two sections "
    "above, with pictures),\nexamples/port_pytorch_cnn.py, examples/lasagne_weights.py, "
    "examples/sharded_training.py; docs/why-flip.md."
  )
  return 0 if ok else 1
