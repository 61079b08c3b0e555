"""``method="auto"``: direct or FFT convolution, from the shapes and the platform.

On CPU both methods have a cost model in nanoseconds, fitted to timings by
``python benchmarks/bench_fft.py --calibrate`` (see docs/fft.md); ``auto``
takes the cheaper. The FFT model is :meth:`flipconv._fft.FftPlan.cost_ns`;
the direct model is below.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from flipconv import _fft

# XLA's CPU convolution is fast where it becomes a wide matrix product over
# channels; per multiply-add it is 10-100x slower where few channels meet
# (single-channel, depthwise, 4 -> 4), in 2-D and more so in 3-D, and with
# input dilation. The "width" is I * O / groups, the channel pairs per group.
DIRECT_FEATURES = (
  "per call",
  "per output",
  "per MAC",
  "per MAC x min(1, 16 / width)",
  "per MAC / width",
  "per MAC / width, 2-D+",
  "per MAC / width, 3-D+",
  "per MAC, input dilation",
  "per MAC, 2-D+",
  "per output, 1 output channel per group",
)
# Fitted by `python benchmarks/bench_fft.py --calibrate` (2-core x86 CPU, jax 0.10.2).
DIRECT_NS = (143_000.0, 1.63, 0.0129, 0.0467, 0.157, 0.913, 10.7, 0.0888, 0.00274, 13.0)
# auto picks the FFT where its modelled time times this is below the direct one's.
AUTO_MARGIN = 1.0


def direct_features(
  shapes: tuple[Sequence[int], Sequence[int]],
  *,
  window_strides: Sequence[int],
  padding: Sequence[tuple[int, int]],
  lhs_dilation: Sequence[int] | None = None,
  rhs_dilation: Sequence[int] | None = None,
  dimension_numbers: Any = None,
  feature_group_count: int = 1,
  **unused: Any,
) -> list[float]:
  """The quantities the direct method's cost is modelled on (``DIRECT_FEATURES``)."""
  del unused
  lhs_shape, rhs_shape = (tuple(s) for s in shapes)
  dn = lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers)
  n = len(lhs_shape) - 2
  batch = lhs_shape[dn.lhs_spec[0]]
  o, i = rhs_shape[dn.rhs_spec[0]], rhs_shape[dn.rhs_spec[1]]
  taps = [rhs_shape[a] for a in dn.rhs_spec[2:]]
  sizes = [lhs_shape[a] for a in dn.lhs_spec[2:]]
  in_dil = lhs_dilation or (1,) * n
  k_dil = rhs_dilation or (1,) * n
  out = 1
  for size, d, (lo, hi), k, kd, s in zip(
    sizes, in_dil, padding, taps, k_dil, window_strides, strict=True
  ):
    out *= max(((size - 1) * d + 1 + lo + hi - ((k - 1) * kd + 1)) // s + 1, 0)
  outputs = batch * o * out
  macs = outputs * i * math.prod(taps)
  og = o // feature_group_count
  width = i * og
  dilated = any(d > 1 for d in in_dil)
  return [
    float(v)
    for v in (
      1,
      outputs,
      macs,
      macs * min(1, 16 / width),
      macs / width,
      macs / width * (n >= 2),
      macs / width * (n >= 3),
      macs * dilated,
      macs * (n >= 2),
      outputs * (og == 1),
    )
  ]


def direct_cost_ns(shapes: tuple[Sequence[int], Sequence[int]], **kwargs: Any) -> float:
  """Modelled CPU time of ``lax.conv_general_dilated`` for these arguments."""
  return sum(c * f for c, f in zip(DIRECT_NS, direct_features(shapes, **kwargs), strict=True))


def platform_of(x: Any) -> str:
  """The platform of a concrete array (``"cpu"``, ``"gpu"``, ``"tpu"``); the default backend's
  for a tracer."""
  try:
    return next(iter(x.devices())).platform
  except Exception:  # a tracer, or anything without devices
    return jax.default_backend()


def choose_method(
  lhs_shape: Sequence[int],
  rhs_shape: Sequence[int],
  *,
  dtype: Any = None,
  platform: str | None = None,
  **conv_kwargs: Any,
) -> str:
  """``"direct"`` or ``"fft"``, whichever the cost models expect to be faster.

  Args:
    lhs_shape: the input's shape, as ``lax.conv_general_dilated`` sees it.
    rhs_shape: the kernel's shape.
    dtype: the operands' dtype; integer convolutions are always direct.
    platform: ``"cpu"``, ``"gpu"`` or ``"tpu"`` (default: ``jax.default_backend()``).
    **conv_kwargs: the other arguments of ``lax.conv_general_dilated``.

  Returns:
    ``"fft"`` on CPU where the modelled FFT time is below the modelled
    direct time; on GPU and TPU (uncalibrated) only where the CPU models
    expect the FFT to be 30x faster, since their direct convolutions are far
    stronger relative to their FFTs.

  Examples:
    >>> from flipconv._auto import choose_method
    >>> kw = dict(window_strides=(1,), padding=[(0, 0)])
    >>> choose_method((1, 1, 65536), (1, 1, 4096), platform="cpu", **kw)
    'fft'
    >>> choose_method((8, 64, 1024), (64, 64, 3), platform="cpu", **kw)
    'direct'
  """
  if dtype is not None and not jnp.issubdtype(dtype, jnp.inexact):
    return "direct"
  lhs_shape, rhs_shape = tuple(lhs_shape), tuple(rhs_shape)
  dn = lax.conv_dimension_numbers(lhs_shape, rhs_shape, conv_kwargs.get("dimension_numbers"))
  taps = [rhs_shape[a] for a in dn.rhs_spec[2:]]
  if math.prod(taps) == 1:
    return "direct"  # a 1x1 kernel: XLA makes it a matrix product
  platform = platform or jax.default_backend()
  conv_kwargs["padding"] = _fft.lax_pads(
    conv_kwargs.get("padding"),
    lhs_shape,
    rhs_shape,
    conv_kwargs.get("dimension_numbers"),
    conv_kwargs["window_strides"],
    conv_kwargs.get("rhs_dilation"),
  )
  fft_ns = _fft.plan(lhs_shape, rhs_shape, **conv_kwargs).cost_ns()
  direct_ns = direct_cost_ns((lhs_shape, rhs_shape), **conv_kwargs)
  margin = AUTO_MARGIN if platform == "cpu" else 30.0
  return "fft" if fft_ns * margin < direct_ns else "direct"
