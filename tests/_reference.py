"""A plain NumPy reference for the forward convolution, written with explicit loops.

Slow but obviously right: no flipconv, no lax, no FFT. Data are channels-first
``(N, C, *spatial)`` and kernels ``(O, I, *spatial)`` with ``I`` the input channels
per group; pads are explicit ``(low, high)`` pairs, one per spatial dimension.
The tests use it with small shapes only.

Also here: :func:`rel_err` and :func:`assert_matches`, how the port tests compare a
ported model's output with its framework's own (the largest error relative to the
largest output).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

# flipconv's pad_mode names -> np.pad's mode names.
NUMPY_PAD_MODE = {
  "zeros": "constant",
  "reflect": "reflect",
  "replicate": "edge",
  "circular": "wrap",
  "symmetric": "symmetric",
}


def np_pad(x: np.ndarray, pads: Sequence[tuple[int, int]], mode: str) -> np.ndarray:
  """Pads the spatial axes (all but the first two) of ``x`` with ``np.pad``.

  Args:
    x: ``(N, C, *spatial)``.
    pads: one ``(low, high)`` pair per spatial axis.
    mode: a flipconv pad_mode (``zeros``, ``reflect``, ``replicate``, ``circular``,
      ``symmetric``).

  Returns:
    The padded array.
  """
  widths = [(0, 0), (0, 0), *[(int(lo), int(hi)) for lo, hi in pads]]
  return np.pad(x, widths, mode=NUMPY_PAD_MODE[mode])


def dilate(x: np.ndarray, input_dilation: Sequence[int]) -> np.ndarray:
  """Inserts ``d - 1`` zeros between neighbouring samples along every spatial axis."""
  spatial = x.shape[2:]
  sizes = [(s - 1) * d + 1 for s, d in zip(spatial, input_dilation, strict=True)]
  out = np.zeros(x.shape[:2] + tuple(sizes), dtype=x.dtype)
  out[(slice(None), slice(None), *(slice(None, None, d) for d in input_dilation))] = x
  return out


def np_conv(
  x: np.ndarray,
  k: np.ndarray,
  *,
  flip: bool,
  strides: Sequence[int],
  pads: Sequence[tuple[int, int]],
  dilation: Sequence[int],
  input_dilation: Sequence[int],
  groups: int,
) -> np.ndarray:
  """N-d grouped convolution, channels-first, by explicit loops.

  Steps: dilate the input (zeros between samples), zero-pad it, then for every
  output position ``o_pos`` and output channel ``o`` (group ``g = o // (O / groups)``)::

    y[n, o, o_pos] = sum_{i, j} x[n, g * I + i, s * o_pos + d * j] * k[o, i, j]

  with ``k`` reversed along every spatial axis first when ``flip`` is True.

  Args:
    x: ``(N, C, *spatial)``.
    k: ``(O, I, *kernel_spatial)`` with ``I = C / groups``.
    flip: reverse the kernel's spatial axes (true convolution).
    strides, dilation, input_dilation: one int per spatial axis.
    pads: one non-negative ``(low, high)`` pair per spatial axis.
    groups: feature groups.

  Returns:
    ``(N, O, *out_spatial)``, in the result dtype of ``x`` and ``k``.
  """
  x = np.asarray(x)
  k = np.asarray(k)
  n_sp = x.ndim - 2
  assert k.ndim == x.ndim and len(strides) == len(pads) == len(dilation) == n_sp
  if flip:
    k = np.flip(k, axis=tuple(range(2, k.ndim)))
  xp = np_pad(dilate(x, input_dilation), pads, "zeros")
  batch, channels = x.shape[:2]
  out_ch, in_per_group = k.shape[:2]
  assert channels == in_per_group * groups and out_ch % groups == 0
  out_per_group = out_ch // groups
  k_eff = [(ks - 1) * d + 1 for ks, d in zip(k.shape[2:], dilation, strict=True)]
  out_sizes = [(p - ke) // s + 1 for p, ke, s in zip(xp.shape[2:], k_eff, strides, strict=True)]
  assert all(o >= 1 for o in out_sizes), (xp.shape, k_eff)

  dtype = np.result_type(x, k)
  y = np.zeros((batch, out_ch, *out_sizes), dtype=dtype)
  for o in range(out_ch):
    g = o // out_per_group
    for o_pos in itertools.product(*(range(m) for m in out_sizes)):
      acc = np.zeros(batch, dtype=dtype)
      for j in itertools.product(*(range(ks) for ks in k.shape[2:])):
        src = tuple(s * p + d * t for s, p, d, t in zip(strides, o_pos, dilation, j, strict=True))
        for i in range(in_per_group):
          acc = acc + xp[(slice(None), g * in_per_group + i, *src)] * k[(o, i, *j)]
      y[(slice(None), o, *o_pos)] = acc
  return y


def rel_err(got, want) -> float:
  """``max |got - want| / max |want|``, in float64."""
  want = np.asarray(want, np.float64)
  return float(np.abs(np.asarray(got, np.float64) - want).max() / np.abs(want).max())


PORT_TOL = 2e-5  # float32 rounding through a whole small model


def assert_matches(got, want, tol: float = PORT_TOL) -> None:
  """Same shape, and :func:`rel_err` below ``tol``."""
  assert np.shape(got) == np.shape(want)
  assert rel_err(got, want) < tol, rel_err(got, want)
