"""Every padding form -> explicit ``(low, high)`` pairs; pad modes; size rules.

Sizes here are per spatial dimension, in argument order:

* ``size``: the input's size after input dilation, ``(in - 1) * input_dilation + 1``;
* ``k_eff``: the effective kernel size, ``(k - 1) * dilation + 1``;
* the output of a conv is ``(size + low + high - k_eff) // stride + 1``.

Padding forms (strings are case-insensitive)::

  "VALID"       no padding
  "SAME"        output = ceil(size / stride); odd total: extra at the end
  "SAME_LOWER"  as SAME, extra at the start (ONNX)
  "FULL"        k_eff - 1 on both sides
  "HALF"        k_eff // 2 on both sides (Theano "half", Lasagne "same")
  "CAUSAL"      k_eff - 1 at the start, none at the end
  p             p on both sides of every dimension
  (p1, p2)      p_i on both sides of dimension i
  ((l1, h1), ..) explicit pairs
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from flipconv._validate import choice, is_int

PADDING_NAMES = {
  "valid": "VALID",
  "same": "SAME",
  "same_upper": "SAME",
  "same_lower": "SAME_LOWER",
  "full": "FULL",
  "half": "HALF",
  "causal": "CAUSAL",
}
# Paddings whose amount depends on the input size (matters for conv_transpose).
SIZE_DEPENDENT = frozenset({"SAME", "SAME_LOWER"})

PAD_MODES = {
  "zeros": "zeros",
  "zero": "zeros",
  "constant": "zeros",
  "reflect": "reflect",
  "replicate": "replicate",
  "edge": "replicate",
  "circular": "circular",
  "wrap": "circular",
  "symmetric": "symmetric",
}
_NUMPY_MODE = {
  "reflect": "reflect",
  "replicate": "edge",
  "circular": "wrap",
  "symmetric": "symmetric",
}

Pads = tuple[tuple[int, int], ...]
PaddingSpec = str | Pads


def normalize_padding(padding: Any, n: int, where: str) -> PaddingSpec:
  """Checks a padding argument's form (not yet its size) for ``n`` dimensions.

  Returns:
    A canonical padding name (``"SAME"``, ...) or ``n`` ``(low, high)`` pairs.
  """
  if isinstance(padding, str):
    return choice(padding, "padding", where, PADDING_NAMES)
  form = (
    "a padding name (VALID, SAME, SAME_LOWER, FULL, HALF, CAUSAL), an int, "
    f"{n} ints or {n} (low, high) pairs"
  )
  if is_int(padding):
    pads = ((int(padding), int(padding)),) * n
  elif isinstance(padding, (Sequence, np.ndarray)):
    items = list(padding)
    if len(items) != n:
      raise ValueError(
        f"{where}: padding {padding!r} has {len(items)} entries but the conv has "
        f"{n} spatial dimension{'s' if n != 1 else ''}; give {form}."
      )
    if all(is_int(p) for p in items):
      pads = tuple((int(p), int(p)) for p in items)
    elif all(
      isinstance(p, (Sequence, np.ndarray)) and len(p) == 2 and all(is_int(v) for v in p)
      for p in items
    ):
      pads = tuple((int(p[0]), int(p[1])) for p in items)
    else:
      raise TypeError(f"{where}: padding {padding!r} is not {form}.")
  else:
    raise TypeError(f"{where}: padding {padding!r} is not {form}.")
  if any(lo < 0 or hi < 0 for lo, hi in pads):
    raise ValueError(f"{where}: padding must not be negative, got {padding!r}.")
  return pads


def explicit_pads(
  spec: PaddingSpec, sizes: Sequence[int], k_eff: Sequence[int], strides: Sequence[int]
) -> Pads:
  """``(low, high)`` per dimension for a padding spec and the conv's sizes."""
  if not isinstance(spec, str):
    return spec
  pads = []
  for size, k, s in zip(sizes, k_eff, strides, strict=True):
    if spec == "VALID":
      pads.append((0, 0))
    elif spec in SIZE_DEPENDENT:
      total = max((math.ceil(size / s) - 1) * s + k - size, 0)
      small, big = total // 2, total - total // 2
      pads.append((small, big) if spec == "SAME" else (big, small))
    elif spec == "FULL":
      pads.append((k - 1, k - 1))
    elif spec == "HALF":
      pads.append((k // 2, k // 2))
    elif spec == "CAUSAL":
      pads.append((k - 1, 0))
    else:  # pragma: no cover - normalize_padding admits nothing else
      raise AssertionError(spec)
  return tuple(pads)


def effective_sizes(sizes: Sequence[int], dilation: Sequence[int]) -> tuple[int, ...]:
  """``(k - 1) * d + 1``: the extent of a dilated window (or dilated input)."""
  return tuple((k - 1) * d + 1 if k > 0 else 0 for k, d in zip(sizes, dilation, strict=True))


def conv_output_sizes(
  sizes: Sequence[int], pads: Pads, k_eff: Sequence[int], strides: Sequence[int]
) -> tuple[int, ...]:
  """Output sizes of a conv (floor rounding, as every framework does)."""
  return tuple(
    (size + lo + hi - k) // s + 1
    for size, (lo, hi), k, s in zip(sizes, pads, k_eff, strides, strict=True)
  )


def normalize_pad_mode(pad_mode: Any, where: str) -> str:
  return choice(pad_mode, "pad_mode", where, PAD_MODES)


def apply_pad_mode(x: jnp.ndarray, mode: str, pads: Pads, axes: Sequence[int]) -> jnp.ndarray:
  """Pads the spatial ``axes`` of ``x`` by ``pads`` with a non-zero ``mode``.

  Any width is allowed, as in ``numpy.pad``/``jnp.pad`` (and Flax's
  ``"CIRCULAR"``/``"REFLECT"``): padding wider than the input wraps around
  (``circular``) or reflects again (``reflect``, ``symmetric``) as many times
  as needed, e.g. ``circular`` pads ``12`` by ``(3, 3)`` to ``21212121``, and a
  single sample reflects to copies of itself. (PyTorch refuses ``reflect`` pads
  ``>= size`` and ``circular`` pads ``> size``; where it accepts them the
  results agree.)
  """
  widths = [(0, 0)] * x.ndim
  for axis, pair in zip(axes, pads, strict=True):
    widths[axis] = pair
  return jnp.pad(x, widths, mode=_NUMPY_MODE[mode])


@functools.partial(jax.jit, static_argnames=("mode", "pads", "axes"))
def fold_pad_mode(z: jnp.ndarray, mode: str, pads: Pads, axes: tuple[int, ...]) -> jnp.ndarray:
  """The adjoint of :func:`apply_pad_mode`: each padded value is added back where it came from.

  Circular padding wraps the border values around and adds them, reflect and
  symmetric add them mirrored, replicate adds them onto the edge element. Where
  each padded position comes from is read off :func:`apply_pad_mode` itself,
  applied to the positions ``0 .. size - 1`` (so the fold is exact for whatever it
  does, e.g. paddings wider than the input). The result is the centre of ``z``
  (one copy) with each border run added in place onto the slice it came from
  (reversed where it was mirrored, summed where it was replicated), the border
  runs of one axis folded along the later axes first. It gives the same numbers as
  ``jax.linear_transpose`` of the padding, whose program XLA runs as full-size
  passes per axis (a circular ``conv_transpose`` through it measured about 1.25x
  slower on CNN shapes: benchmarks/bench_ops.py part 4).

  Args:
    z: an array whose spatial ``axes`` have the padded sizes.
    mode: a non-zero pad mode.
    pads: the ``(low, high)`` pads, one pair per axis in ``axes``.
    axes: the spatial axes of ``z``, in the order of ``pads``.

  Returns:
    ``z`` folded back to the unpadded sizes, same dtype.

  Examples:
    >>> import jax.numpy as jnp
    >>> from flipconv._padding import fold_pad_mode
    >>> # 1234567 was x = abcd padded "cd|abcd|a": a = 3 + 7, c = 5 + 1, d = 6 + 2
    >>> fold_pad_mode(jnp.arange(1, 8), mode="circular", pads=((2, 1),), axes=(0,))
    Array([10,  4,  6,  8], dtype=int32)
  """
  dims = []
  for axis, (lo, hi) in zip(axes, pads, strict=True):
    size = z.shape[axis] - lo - hi
    dims.append((axis, lo, size, _sources(mode, size, lo, hi)))
  return _fold(z, dims)


@functools.lru_cache(maxsize=1024)
def _sources(mode: str, size: int, lo: int, hi: int) -> tuple[int, ...]:
  """For each position of a padded axis, the input position ``apply_pad_mode`` copies there."""
  with jax.ensure_compile_time_eval():
    padded = apply_pad_mode(jnp.arange(size), mode, ((lo, hi),), (0,))
  sources = tuple(int(i) for i in np.asarray(padded))
  if sources[lo : lo + size] != tuple(range(size)):  # pragma: no cover - jnp.pad keeps x
    raise AssertionError(f"apply_pad_mode({mode!r}) moved the input: {sources}")
  return sources


def _runs(sources: tuple[int, ...], lo: int, size: int) -> list[tuple[int, int, int]]:
  """The border positions as ``(start, stop, step)`` runs whose sources step by 1, -1 or 0."""
  runs = []
  for side in (range(0, lo), range(lo + size, len(sources))):
    p = side.start
    while p < side.stop:
      stop, step = p + 1, 1
      if stop < side.stop and sources[stop] - sources[p] in (-1, 0, 1):
        step = sources[stop] - sources[p]
        while stop < side.stop and sources[stop] - sources[stop - 1] == step:
          stop += 1
      runs.append((p, stop, step))
      p = stop
  return runs


def _fold(z: jnp.ndarray, dims: list[tuple[int, int, int, tuple[int, ...]]]) -> jnp.ndarray:
  """:func:`fold_pad_mode` for ``(axis, low pad, size, sources)`` per axis, first axis outermost.

  The result is the centre of ``z`` folded along the later axes, with a band at
  each end of the axis replaced by its folded value: the band's centre plus the
  border runs that land there. The bands are computed from ``z`` alone, so XLA
  writes them into the centre's buffer in place (a read of that buffer between
  two updates would make it copy the whole array).
  """
  if not dims:
    return z
  (axis, lo, size, sources), rest = dims[0], dims[1:]
  pieces = []  # (first target, folded values in target order)
  for start, stop, step in _runs(sources, lo, size):
    piece = _fold(lax.slice_in_dim(z, start, stop, axis=axis), rest)
    if step < 0:
      piece = lax.rev(piece, (axis,))
    elif step == 0:
      piece = jnp.sum(piece, axis=axis, keepdims=True, dtype=piece.dtype)
    pieces.append((min(sources[start:stop]), piece))
  if not pieces:  # nothing padded on this axis
    return _fold(lax.slice_in_dim(z, lo, lo + size, axis=axis), rest)
  half = size // 2
  low = [(t, p) for t, p in pieces if t + p.shape[axis] <= half]
  high = [(t, p) for t, p in pieces if t >= half]
  if len(low) + len(high) < len(pieces):  # a run lands across the middle: one band
    bands = [(0, size, pieces)]
  else:
    bands = [
      (min(t for t, _ in group), max(t + p.shape[axis] for t, p in group), group)
      for group in (low, high)
      if group
    ]
  out = None
  for begin, end, group in bands:
    value = _fold(lax.slice_in_dim(z, lo + begin, lo + end, axis=axis), rest)
    for t, p in group:
      widths = [(0, 0, 0)] * z.ndim
      widths[axis] = (t - begin, end - t - p.shape[axis], 0)
      value = value + lax.pad(p, jnp.zeros((), p.dtype), widths)
    if end - begin == size:
      return value
    if out is None:
      out = _fold(lax.slice_in_dim(z, lo, lo + size, axis=axis), rest)
    out = lax.dynamic_update_slice_in_dim(out, value, begin, axis=axis)
  return out
