"""Convolution with an explicit flip: ``conv``, ``convolve``, ``correlate``, ``flip_kernel``."""

from __future__ import annotations

from typing import Any

import jax
from jax import lax
from jax.typing import ArrayLike

from flipconv import _spec
from flipconv._layouts import check_letters, spatial_letters


def conv(
  x: ArrayLike,
  kernel: ArrayLike,
  *,
  flip: bool | None = None,
  convention: Any = None,
  strides: int | tuple[int, ...] = 1,
  padding: Any = "VALID",
  dilation: int | tuple[int, ...] = 1,
  input_dilation: int | tuple[int, ...] = 1,
  groups: int = 1,
  layout: Any = None,
  kernel_layout: str | None = None,
  out_layout: str | None = None,
  pad_mode: str = "zeros",
  method: str = "direct",
  precision: Any = None,
  preferred_element_type: Any = None,
) -> jax.Array:
  r"""N-d convolution whose flip and axis layouts are explicit.

  For a 1-D input ``x`` and a kernel ``k`` of length ``K`` (one channel, no
  padding, stride 1)::

    flip=False (cross-correlation):  y[i] = sum_j x[i + j] * k[j]
    flip=True  (true convolution):   y[i] = sum_j x[i + j] * k[K - 1 - j]

  and likewise along every spatial axis, summed over input channels of the
  kernel's group. ``flip=False`` is exactly ``lax.conv_general_dilated``;
  ``flip=True`` reverses the kernel's spatial axes first (one ``lax.rev``).

  Args:
    x: input, laid out as ``layout`` (default channels-last ``N...C``).
    kernel: laid out as ``kernel_layout`` (default ``...IO``); ``I`` is the
      input channels per group.
    flip: ``True`` for true convolution, ``False`` for cross-correlation.
      Required unless ``convention`` is given (explicit ``flip`` wins).
    convention: a registry name (``"pytorch"``, ``"lasagne"``, ...) or a
      :class:`flipconv.Convention`; supplies ``flip``, ``layout`` and
      ``kernel_layout`` where they are not given.
    strides: int or one per spatial dimension.
    padding: ``"VALID"``, ``"SAME"`` (extra at the end), ``"SAME_LOWER"``
      (extra at the start), ``"FULL"``, ``"HALF"``, ``"CAUSAL"``, an int, one
      int per dimension, or ``(low, high)`` pairs. Computed from the effective
      (dilated) kernel and the input after ``input_dilation``.
    dilation: kernel dilation, int or one per spatial dimension.
    input_dilation: input (lhs) dilation, int or one per spatial dimension.
    groups: feature groups; ``groups == channels`` is depthwise.
    layout: data layout (``"NCHW"``, ``"NHWC"``, ``"NCW"``, ``"CHW"`` for an
      unbatched input, ...), or a ``lax.ConvDimensionNumbers`` or a 3-tuple
      of strings giving all three layouts.
    kernel_layout: ``"OIHW"``, ``"HWIO"``, ``"OHWI"``, ...
    out_layout: the output's layout (default ``layout``).
    pad_mode: ``"zeros"``, ``"reflect"`` (``1234 -> 32123432`` for padding 2),
      ``"replicate"`` (``11123444``), ``"circular"`` (``34123412``),
      ``"symmetric"`` (``21123443``); NumPy's ``"constant"``, ``"edge"``,
      ``"wrap"`` are aliases. Any width, as ``numpy.pad``: padding wider than
      the input wraps or reflects again (``12`` circular by 3: ``21212121``).
    method: ``"direct"`` (one ``lax.conv_general_dilated``), ``"fft"`` or ``"auto"``.
    precision: passed to lax.
    preferred_element_type: passed to lax (accumulation/output dtype).

  Returns:
    The output, laid out as ``out_layout``.

  Per-dimension arguments follow the order of the spatial letters in
  ``kernel_layout`` (lax's rule), which is the input's order for every common
  layout. Spatial rank: from the layout strings, else ``kernel.ndim - 2``.

  Examples:
    >>> import numpy as np, flipconv as fc
    >>> x = np.array([1., 2., 3., 4.]).reshape(1, 4, 1)
    >>> k = np.array([1., 0., -1.]).reshape(3, 1, 1)
    >>> fc.conv(x, k, flip=False)[0, :, 0]
    Array([-2., -2.], dtype=float32)
    >>> fc.conv(x, k, flip=True)[0, :, 0]
    Array([2., 2.], dtype=float32)
  """
  return _spec.conv(
    x,
    kernel,
    where="conv",
    flip=flip,
    convention=convention,
    strides=strides,
    padding=padding,
    dilation=dilation,
    input_dilation=input_dilation,
    groups=groups,
    layout=layout,
    kernel_layout=kernel_layout,
    out_layout=out_layout,
    pad_mode=pad_mode,
    method=method,
    precision=precision,
    preferred_element_type=preferred_element_type,
  )


def convolve(x: ArrayLike, kernel: ArrayLike, **kwargs: Any) -> jax.Array:
  """True (flipped-kernel) convolution, as in signal processing and Theano.

  Computes ``y[n] = sum_k x[n - k] * kernel[k]`` along every spatial axis
  (shifted so that the output starts where the kernel first fits), i.e.
  ``correlate(x, flip_kernel(kernel, kernel_layout))``. The same as
  ``conv(x, kernel, flip=True, **kwargs)``.

  Args:
    x: input, laid out as ``layout`` (default channels-last ``N...C``).
    kernel: laid out as ``kernel_layout`` (default ``...IO``).
    **kwargs: as in :func:`conv` (``flip`` is not allowed).

  Returns:
    The output, laid out as ``out_layout``.

  Examples:
    >>> import numpy as np, flipconv as fc
    >>> fc.convolve(np.ones((1, 3, 1)), np.array([1., 2.]).reshape(2, 1, 1))[0, :, 0]
    Array([3., 3.], dtype=float32)
  """
  if "flip" in kwargs:
    raise TypeError("convolve: flip is fixed to True here; call flipconv.conv to choose it.")
  return conv(x, kernel, flip=True, **kwargs)


def correlate(x: ArrayLike, kernel: ArrayLike, **kwargs: Any) -> jax.Array:
  """Cross-correlation, what ``lax.conv_general_dilated``, PyTorch and Flax compute.

  Computes ``y[n] = sum_k x[n + k] * kernel[k]`` along every spatial axis.
  The same as ``conv(x, kernel, flip=False, **kwargs)``.

  Args:
    x: input, laid out as ``layout`` (default channels-last ``N...C``).
    kernel: laid out as ``kernel_layout`` (default ``...IO``).
    **kwargs: as in :func:`conv` (``flip`` is not allowed).

  Returns:
    The output, laid out as ``out_layout``.

  Examples:
    >>> import numpy as np, flipconv as fc
    >>> fc.correlate(np.arange(4.).reshape(1, 4, 1), np.array([1., 2.]).reshape(2, 1, 1))[0, :, 0]
    Array([2., 5., 8.], dtype=float32)
  """
  if "flip" in kwargs:
    raise TypeError("correlate: flip is fixed to False here; call flipconv.conv to choose it.")
  return conv(x, kernel, flip=False, **kwargs)


def flip_kernel(kernel: ArrayLike, kernel_layout: str) -> jax.Array:
  """Reverses every spatial axis of a kernel, and nothing else.

  ``convolve(x, k) == correlate(x, flip_kernel(k, kernel_layout))``, and
  flipping twice gives ``k`` back bit for bit.

  Args:
    kernel: the kernel.
    kernel_layout: its layout (``"OIHW"``, ``"HWIO"``, ...): the letters other
      than ``O`` and ``I`` are the spatial axes that are reversed.

  Returns:
    The flipped kernel, same shape and dtype.

  Examples:
    >>> import numpy as np, flipconv as fc
    >>> fc.flip_kernel(np.arange(3.).reshape(1, 1, 3), "OIW")[0, 0]
    Array([2., 1., 0.], dtype=float32)
  """
  where = "flip_kernel"
  kernel = _spec.as_array(kernel, "kernel", where)
  kernel_layout = check_letters(kernel_layout, "kernel_layout", where, "OI")
  if kernel.ndim != len(kernel_layout):
    raise ValueError(
      f"{where}: kernel has rank {kernel.ndim} (shape {tuple(kernel.shape)}) but "
      f"kernel_layout {kernel_layout!r} has {len(kernel_layout)} axes."
    )
  sp = spatial_letters(kernel_layout, "kernel")
  return lax.rev(kernel, tuple(kernel_layout.index(c) for c in sp))


__all__ = ["conv", "convolve", "correlate", "flip_kernel"]
