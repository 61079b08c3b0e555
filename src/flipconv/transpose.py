"""``conv_transpose``: the exact adjoint of :func:`flipconv.conv` with respect to ``x``."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from flipconv import _limits, _padding, _spec
from flipconv._layouts import parse_layouts
from flipconv._padding import PaddingSpec
from flipconv._validate import as_int_tuple, is_int


def conv_transpose(
  x: ArrayLike,
  kernel: ArrayLike,
  *,
  flip: bool | None = None,
  convention: Any = None,
  strides: int | tuple[int, ...] = 1,
  padding: Any = "VALID",
  output_padding: int | tuple[int, ...] | None = None,
  output_shape: int | tuple[int, ...] | None = None,
  dilation: int | tuple[int, ...] = 1,
  groups: int = 1,
  layout: Any = None,
  kernel_layout: str | None = None,
  out_layout: str | None = None,
  pad_mode: str = "zeros",
  method: str = "direct",
  precision: Any = None,
  preferred_element_type: Any = None,
) -> jax.Array:
  r"""Transposed convolution: the adjoint of ``conv`` with the same arguments.

  ``conv_transpose(y, k, **kw)`` equals ``jax.linear_transpose(lambda x:
  conv(x, k, **kw), x)(y)``: for every ``x`` of the output's shape,
  ``<conv(x, k), y> == <x, conv_transpose(y, k)>``. This is what PyTorch
  ``ConvTransposeNd``, ONNX ``ConvTranspose``, Keras ``ConvNDTranspose``,
  Caffe ``Deconvolution`` and Theano ``conv2d_grad_wrt_inputs`` compute.
  It is computed directly, as one ``lax.conv_general_dilated`` of the
  stride-dilated input with the kernel's channel axes swapped and its spatial
  axes reversed (so ``flip=True`` costs no reverse at all).

  With a ``pad_mode`` other than ``"zeros"`` it is the adjoint of the padded
  conv ``conv(x, k, pad_mode=...)``: the same transposed conv without padding
  (onto the padded sizes), then the adjoint of the padding, a fold: circular
  wraps the border values around and adds them, reflect and symmetric add them
  back mirrored, replicate adds them onto the edge element.

  The kernel is in the *forward* conv's ``kernel_layout``: ``O`` is the forward
  conv's output channels, i.e. the channels of the input here, and ``I * groups``
  is the channels of the result. ``padding`` is the forward conv's padding
  (PyTorch's meaning, not ``lax.conv_transpose``'s).

  Output size per spatial dimension, for input size ``m``, stride ``s`` and
  effective kernel size ``k = dilation * (size - 1) + 1``:

  * by default, for numeric padding and ``"VALID"``, ``"FULL"``, ``"HALF"``,
    ``"CAUSAL"``: the smallest size the forward conv maps to ``m``,
    ``(m - 1) * s + k - pad_lo - pad_hi`` (PyTorch's rule; 1 where padding larger
    than that makes it empty, where PyTorch raises); for ``"SAME"`` and
    ``"SAME_LOWER"``: ``m * s``. With a convention whose
    ``transpose_output_size`` is ``"tensorflow"`` (Flax, Keras, Haiku),
    ``"VALID"`` gives ``m * s + max(k - s, 0)``;
  * ``output_padding=p`` gives the smallest size plus ``p`` (``p`` smaller than
    the stride or the dilation, as in PyTorch); for SAME the smallest size is
    ``(m - 1) * s + 1``;
  * ``output_shape`` gives the sizes directly; each must be one the forward
    conv maps to ``m``.

  Args:
    x: input (the forward conv's output space), laid out as ``layout``.
    kernel: the forward conv's kernel, laid out as ``kernel_layout``.
    flip: the forward conv's flip; required unless ``convention`` is given.
    convention: a registry name or :class:`flipconv.Convention`; supplies its
      ``transpose_flip`` and ``transpose_kernel_layout`` (so a framework's
      transposed-conv weights are used exactly as stored), its ``layout`` and
      its default output size rule.
    strides: the forward conv's strides.
    padding: the forward conv's padding (every form :func:`flipconv.conv` takes).
    output_padding: int or one per spatial dimension (see above).
    output_shape: spatial sizes of the output (see above).
    dilation: the forward conv's kernel dilation.
    groups: the forward conv's feature groups.
    layout: data layout (or dimension numbers), as in :func:`flipconv.conv`.
    kernel_layout: the kernel's layout, in forward-conv letters.
    out_layout: the output's layout (default ``layout``).
    pad_mode: the forward conv's pad mode, as in :func:`flipconv.conv`
      (``"zeros"``, ``"reflect"``, ``"replicate"``, ``"circular"``,
      ``"symmetric"``); its limits apply to the output's sizes and padding.
    method: ``"direct"``, ``"fft"`` or ``"auto"``, as in :func:`flipconv.conv`.
    precision: passed to lax.
    preferred_element_type: passed to lax.

  Returns:
    The output, laid out as ``out_layout``, with ``I * groups`` channels.

  Examples:
    >>> import numpy as np, flipconv as fc
    >>> y = np.array([1., 2.]).reshape(1, 2, 1)
    >>> k = np.array([1., 10.]).reshape(2, 1, 1)
    >>> fc.conv_transpose(y, k, flip=False, strides=2)[0, :, 0]
    Array([ 1., 10.,  2., 20.], dtype=float32)
    >>> k3 = np.array([1., 10., 100.]).reshape(3, 1, 1)
    >>> fc.conv_transpose(y, k3, flip=False, strides=2, padding=1, pad_mode="circular",
    ...                   output_shape=4)[0, :, 0]  # y[0] * 1 wraps round to the end
    Array([ 10., 102.,  20., 201.], dtype=float32)
  """
  where = "conv_transpose"
  y = _spec.as_array(x, "x", where)
  kernel = _spec.as_array(kernel, "kernel", where)
  method = _spec.check_method(method, where)
  flip, defaults, conv = _spec.resolve_convention(flip, convention, transposed=True, where=where)
  rule = conv.transpose_output_size if conv is not None else "pytorch"
  if kernel.ndim < 3:
    raise ValueError(
      f"{where}: kernel must have rank >= 3 (O, I and at least one spatial "
      f"axis), got shape {tuple(kernel.shape)}."
    )
  layouts = parse_layouts(
    layout, kernel_layout, out_layout, default_n=kernel.ndim - 2, where=where, defaults=defaults
  )
  _spec.check_ranks(y.shape, kernel.shape, layouts, where)
  n = layouts.n
  ctx = _spec.context(y.shape, kernel.shape, layouts)
  o_ax, i_ax = layouts.axis("rhs", "O"), layouts.axis("rhs", "I")
  c_y = y.shape[layouts.axis("lhs", "C")]
  k_out = kernel.shape[o_ax]
  if c_y != k_out:
    raise ValueError(
      f"{where}: x has {c_y} channels but the kernel has {k_out} output channels (O); "
      "conv_transpose reads the forward conv's output, so they must agree; the kernel is in "
      f"forward-conv letters ({ctx})."
    )
  if not is_int(groups) or groups < 1:
    raise (TypeError if not is_int(groups) else ValueError)(
      f"{where}: groups must be a positive int, got {groups!r}."
    )
  groups = int(groups)
  if k_out % groups:
    raise ValueError(
      f"{where}: x and the kernel have {k_out} channels (kernel O), which "
      f"groups={groups} does not divide ({ctx})."
    )
  strides = as_int_tuple(strides, n, "strides", where)
  dilation = as_int_tuple(dilation, n, "dilation", where)
  spec = _padding.normalize_padding(padding, n, where)
  pad_mode = _padding.normalize_pad_mode(pad_mode, where)

  m = tuple(y.shape[a] for a in layouts.spatial_axes("lhs"))
  if 0 in m:
    raise ValueError(f"{where}: x has an empty spatial axis ({ctx}).")
  k_eff = _padding.effective_sizes(
    tuple(kernel.shape[a] for a in layouts.spatial_axes("rhs")), dilation
  )
  sizes = output_sizes(spec, m, k_eff, strides, dilation, output_padding, output_shape, rule, where)
  pads = _padding.explicit_pads(spec, sizes, k_eff, strides)
  fold = pad_mode != "zeros" and any(p != (0, 0) for p in pads)
  if fold:  # the transposed conv onto the padded sizes, folded back below
    conv_sizes = tuple(size + lo + hi for size, (lo, hi) in zip(sizes, pads, strict=True))
    conv_pads = ((0, 0),) * n
  else:
    conv_sizes, conv_pads = sizes, pads
  # The adjoint's padding (lax's vjp rule): k - 1 - lo before, the rest after.
  pads_t = tuple(
    (k - 1 - lo, size + lo - (mm - 1) * s - 1)
    for k, (lo, _), size, mm, s in zip(k_eff, conv_pads, conv_sizes, m, strides, strict=True)
  )

  if groups > 1:
    kernel = _regroup(kernel, o_ax, i_ax, groups)
  swapped = layouts.rhs.translate(str.maketrans("OI", "IO"))
  call = _spec.ConvCall(
    layouts=dataclasses.replace(layouts, rhs=swapped, order=layouts.spatial),
    flip=not flip,  # the adjoint reverses the kernel: two reverses cancel for flip=True
    strides=(1,) * n,
    pads=pads_t,
    dilation=dilation,
    input_dilation=strides,
    groups=groups,
  )
  y, kernel = _spec.promote(y, kernel)
  _limits.check_conv(
    where, y.shape, kernel.shape, call, y.dtype, preferred_element_type, transposed=True
  )
  out = _spec.run(
    y,
    kernel,
    call,
    method=method,
    precision=precision,
    preferred_element_type=preferred_element_type,
  )
  if fold:
    out = _padding.fold_pad_mode(
      out, mode=pad_mode, pads=pads, axes=call.layouts.spatial_axes("out")
    )
  return out


def output_sizes(
  spec: PaddingSpec,
  m: Sequence[int],
  k_eff: Sequence[int],
  strides: Sequence[int],
  dilation: Sequence[int],
  output_padding: Any,
  output_shape: Any,
  rule: str,
  where: str,
) -> tuple[int, ...]:
  """Spatial output sizes of a transposed conv (see :func:`conv_transpose`)."""
  n = len(m)
  if output_padding is not None and output_shape is not None:
    raise ValueError(f"{where}: pass output_padding or output_shape, not both.")
  ranges = []
  for dim in range(n):
    mm, k, s = m[dim], k_eff[dim], strides[dim]
    if isinstance(spec, str) and spec in _padding.SIZE_DEPENDENT:
      smallest, largest, default = (mm - 1) * s + 1, mm * s, mm * s
      base = smallest
    else:
      ((lo, hi),) = _padding.explicit_pads(
        spec if isinstance(spec, str) else (spec[dim],), (0,), (k,), (s,)
      )
      base = (mm - 1) * s + k - lo - hi  # PyTorch's size; may be < 1 for large padding
      largest = base + s - 1
      smallest = default = max(base, 1)
      if rule == "tensorflow" and spec == "VALID":
        default = mm * s + max(k - s, 0)
      if largest < 1 and output_padding is None:
        raise ValueError(
          f"{where}: padding {(lo, hi)} in spatial dimension {dim} is too large: no input "
          f"size maps to an output of size {mm} with effective kernel size {k} and stride {s}."
        )
    ranges.append((smallest, largest, default, base))

  if output_shape is not None:
    shape = as_int_tuple(output_shape, n, "output_shape", where)
    for dim, (size, (lo, hi, _, _)) in enumerate(zip(shape, ranges, strict=True)):
      if not lo <= size <= hi:
        raise ValueError(
          f"{where}: output_shape {shape} is not possible: in spatial dimension {dim} the "
          f"forward conv maps sizes {lo}..{hi} to the input's size {m[dim]}, not {size}."
        )
    return shape
  if output_padding is not None:
    extra = as_int_tuple(output_padding, n, "output_padding", where, minimum=0)
    for dim, p in enumerate(extra):
      limit = max(strides[dim], dilation[dim])
      if p >= limit:
        raise ValueError(
          f"{where}: output_padding {p} in spatial dimension {dim} must be smaller than the "
          f"stride ({strides[dim]}) or the dilation ({dilation[dim]}), as in PyTorch."
        )
    sizes = tuple(base + p for (_, _, _, base), p in zip(ranges, extra, strict=True))
    if min(sizes) < 1:  # PyTorch's size plus output_padding, as in PyTorch
      raise ValueError(
        f"{where}: output_padding {extra} gives the empty output size {sizes}; "
        f"the padding {spec} is too large for it."
      )
    return sizes
  return tuple(default for _, _, default, _ in ranges)


def _regroup(kernel: jnp.ndarray, o_ax: int, i_ax: int, groups: int) -> jnp.ndarray:
  """Moves the group factor of O into I: O -> O/groups, I -> groups*I (group-major).

  The transposed conv's kernel of group j is group j's slice of the forward
  kernel with its channel axes swapped; this rearranges the data so that the
  swapped letters describe it.
  """
  shape = kernel.shape
  split = (*shape[:o_ax], groups, shape[o_ax] // groups, *shape[o_ax + 1 :])
  k = kernel.reshape(split)
  i_split = i_ax + 1 if i_ax > o_ax else i_ax
  dest = i_split - 1 if i_split > o_ax else i_split
  k = jnp.moveaxis(k, o_ax, dest)
  merged = (*k.shape[:dest], k.shape[dest] * k.shape[dest + 1], *k.shape[dest + 2 :])
  return k.reshape(merged)
