"""From the public arguments of a conv to one fully explicit lax call.

``resolve_conv`` checks every argument against the shapes (raising before
lax sees anything) and returns a :class:`ConvCall`; ``run`` executes one.
``conv``, ``conv_transpose``, the FFT method and the modules all go
through here, so each rule exists once.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from flipconv import _limits, _padding
from flipconv._layouts import Layouts, parse_layouts
from flipconv._padding import Pads
from flipconv._trees import host_array
from flipconv._validate import as_bool, as_int_tuple, choice, is_int, shape_str
from flipconv.registry import get_convention

METHODS = {"direct": "direct", "fft": "fft", "auto": "auto"}

_NO_FLIP_MSG = (
  "{where}: pass flip=True (true convolution: the kernel is reversed along every spatial "
  "axis, as in signal processing and Theano/Lasagne) or flip=False (cross-correlation, as "
  'lax, PyTorch, TensorFlow and Flax compute), or a convention such as convention="pytorch"; '
  "see flipconv.conventions for the names."
)


@dataclasses.dataclass(frozen=True)
class ConvCall:
  """One convolution with every argument explicit (static, hashable).

  Attributes:
    layouts: the checked layouts of x, kernel and output.
    flip: reverse the kernel's spatial axes before sliding it.
    strides, pads, dilation, input_dilation, groups: as in lax, argument order.
    pad_mode: ``"zeros"`` (pads go to lax) or a mode applied with ``jnp.pad``.
  """

  layouts: Layouts
  flip: bool
  strides: tuple[int, ...]
  pads: Pads
  dilation: tuple[int, ...]
  input_dilation: tuple[int, ...]
  groups: int
  pad_mode: str = "zeros"

  def dimension_numbers(self) -> lax.ConvDimensionNumbers:
    return self.layouts.dimension_numbers()


def resolve_convention(
  flip: Any, convention: Any, *, transposed: bool, where: str
) -> tuple[bool, tuple[str, str] | None, Any]:
  """``flip`` and default layouts from the arguments and a convention.

  Returns:
    ``(flip, (data layout, kernel layout) or None, the Convention or None)``.
  """
  conv = get_convention(convention) if convention is not None else None
  if flip is None:
    if conv is None:
      raise ValueError(_NO_FLIP_MSG.format(where=where))
    flip = conv.transpose_flip if transposed else conv.flip
  flip = as_bool(flip, "flip", where)
  if conv is None:
    return flip, None, None
  kernel_layout = conv.transpose_kernel_layout if transposed else conv.kernel_layout
  return flip, (conv.layout, kernel_layout), conv


def as_array(value: Any, name: str, where: str) -> jnp.ndarray:
  """``jnp.asarray`` with a clear error for what cannot be a conv operand.

  A torch tensor (``requires_grad`` too) is read through a NumPy view first.
  """
  value = host_array(value, name, where)

  def check_dtype(dtype):
    if dtype == jnp.bool_ or not jnp.issubdtype(dtype, jnp.number):
      raise TypeError(
        f"{where}: {name} has dtype {dtype}; a conv needs a numeric dtype (float, complex or int)."
      )

  # An array of strings or objects is refused by its dtype, before jnp.asarray fails on it.
  if isinstance(getattr(value, "dtype", None), np.dtype):
    check_dtype(value.dtype)
  if value is None:
    raise TypeError(f"{where}: {name} must be an array, got None.")
  try:
    arr = jnp.asarray(value)
  except TypeError as e:
    raise TypeError(f"{where}: {name} must be an array, got {type(value).__name__}: {e}") from None
  except (ValueError, OverflowError) as e:  # ragged nested lists; ints beyond int64
    raise ValueError(
      f"{where}: {name} cannot be made an array ({type(e).__name__}: {e}); pass a "
      "rectangular array of numbers."
    ) from None
  check_dtype(arr.dtype)
  return arr


def promote(x: jnp.ndarray, kernel: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Both operands in their common dtype (lax requires equal dtypes)."""
  if x.dtype == kernel.dtype:
    return x, kernel
  dtype = jnp.result_type(x, kernel)
  return x.astype(dtype), kernel.astype(dtype)


def check_ranks(x_shape, k_shape, layouts: Layouts, where: str, x_name: str = "x") -> None:
  if len(x_shape) != len(layouts.lhs):
    raise ValueError(
      f"{where}: {x_name} has rank {len(x_shape)} (shape {shape_str(x_shape)}) but layout "
      f"{layouts.lhs!r} has {len(layouts.lhs)} axes; pass a layout with one letter per axis "
      f"of {x_name}."
    )
  if len(k_shape) != len(layouts.rhs):
    raise ValueError(
      f"{where}: kernel has rank {len(k_shape)} (shape {shape_str(k_shape)}) but kernel_layout "
      f"{layouts.rhs!r} has {len(layouts.rhs)} axes; pass a kernel_layout with one letter per "
      "axis of the kernel."
    )
  if 0 in k_shape:
    raise ValueError(f"{where}: kernel has an empty axis (shape {shape_str(k_shape)}).")


def check_groups(
  groups: Any, c_in: int, k_in: int, k_out: int, ctx: str, where: str, x_name: str = "x"
) -> int:
  """Checks ``groups`` against the input's channels and the kernel's I and O."""
  if not is_int(groups):
    raise TypeError(f"{where}: groups must be a positive int, got {groups!r}.")
  groups = int(groups)
  if groups < 1:
    raise ValueError(f"{where}: groups must be >= 1, got {groups}.")
  if c_in % groups:
    raise ValueError(
      f"{where}: {x_name} has {c_in} channels, which groups={groups} does not divide ({ctx})."
    )
  if k_in * groups != c_in:
    raise ValueError(
      f"{where}: kernel has {k_in} input channels per group but {x_name} has "
      f"{c_in} channels with groups={groups}, which needs {c_in // groups} "
      f"({ctx})."
    )
  if k_out % groups:
    raise ValueError(
      f"{where}: kernel has {k_out} output channels, which groups={groups} does not divide ({ctx})."
    )
  return groups


def context(x_shape, k_shape, layouts: Layouts, x_name: str = "x") -> str:
  return (
    f"layout {layouts.lhs!r}, kernel_layout {layouts.rhs!r}: kernel.shape="
    f"{shape_str(k_shape)}, {x_name}.shape={shape_str(x_shape)}"
  )


def resolve_conv(
  x_shape: tuple[int, ...],
  k_shape: tuple[int, ...],
  *,
  flip: Any,
  convention: Any,
  strides: Any,
  padding: Any,
  dilation: Any,
  input_dilation: Any,
  groups: Any,
  layout: Any,
  kernel_layout: Any,
  out_layout: Any,
  pad_mode: Any,
  where: str,
) -> ConvCall:
  """Checks the arguments of :func:`flipconv.conv` and makes them explicit."""
  flip, defaults, _ = resolve_convention(flip, convention, transposed=False, where=where)
  if len(k_shape) < 3:
    raise ValueError(
      f"{where}: kernel must have rank >= 3 (O, I and at least one spatial "
      f"axis), got shape {shape_str(k_shape)}."
    )
  layouts = parse_layouts(
    layout, kernel_layout, out_layout, default_n=len(k_shape) - 2, where=where, defaults=defaults
  )
  check_ranks(x_shape, k_shape, layouts, where)
  n = layouts.n
  ctx = context(x_shape, k_shape, layouts)
  groups = check_groups(
    groups,
    x_shape[layouts.axis("lhs", "C")],
    k_shape[layouts.axis("rhs", "I")],
    k_shape[layouts.axis("rhs", "O")],
    ctx,
    where,
  )
  strides = as_int_tuple(strides, n, "strides", where)
  dilation = as_int_tuple(dilation, n, "dilation", where)
  input_dilation = as_int_tuple(input_dilation, n, "input_dilation", where)
  spec = _padding.normalize_padding(padding, n, where)
  pad_mode = _padding.normalize_pad_mode(pad_mode, where)

  x_sp = tuple(x_shape[a] for a in layouts.spatial_axes("lhs"))
  k_sp = tuple(k_shape[a] for a in layouts.spatial_axes("rhs"))
  if 0 in x_sp:
    raise ValueError(f"{where}: x has an empty spatial axis ({ctx}).")
  sizes = _padding.effective_sizes(x_sp, input_dilation)
  k_eff = _padding.effective_sizes(k_sp, dilation)
  pads = _padding.explicit_pads(spec, sizes, k_eff, strides)
  for dim, (size, (lo, hi), k) in enumerate(zip(sizes, pads, k_eff, strict=True)):
    if size + lo + hi < k:
      raise ValueError(
        f"{where}: the kernel is larger than the padded input in spatial dimension {dim} "
        f"({layouts.spatial[dim]}): effective kernel size {k} (dilation {dilation[dim]}) > "
        f"input {size} + padding {(lo, hi)} ({ctx})."
      )
  padded = pad_mode != "zeros" and any(p != (0, 0) for p in pads)
  if padded and any(d != 1 for d in input_dilation):
    raise ValueError(
      f"{where}: pad_mode={pad_mode!r} with input_dilation={input_dilation} is "
      "not defined (the padded values would sit between dilated samples); use "
      "pad_mode='zeros' or pad before dilating."
    )
  return ConvCall(layouts, flip, strides, pads, dilation, input_dilation, groups, pad_mode)


def conv(
  x: Any,
  kernel: Any,
  *,
  where: str,
  method: str,
  precision: Any,
  preferred_element_type: Any,
  promote_operands: bool = True,
  conv_general_dilated: Any = None,
  conv_kwargs: Any = None,
  **options: Any,
) -> jnp.ndarray:
  """:func:`flipconv.conv` for ``where``: checks, resolves, bounds (:mod:`_limits`), runs.

  ``options`` are :func:`resolve_conv`'s. The modules pass
  ``promote_operands=False`` (their ``promote_dtype`` has run) and, for Flax's
  ``conv_general_dilated``, the function :func:`run` calls instead of lax's.
  """
  x = as_array(x, "x", where)
  kernel = as_array(kernel, "kernel", where)
  method = check_method(method, where)
  call = resolve_conv(x.shape, kernel.shape, **options, where=where)
  if promote_operands:
    x, kernel = promote(x, kernel)
  _limits.check_conv(
    where, x.shape, kernel.shape, call, x.dtype, preferred_element_type, padding=options["padding"]
  )
  return run(
    x,
    kernel,
    call,
    method=method,
    precision=precision,
    preferred_element_type=preferred_element_type,
    conv_general_dilated=conv_general_dilated,
    conv_kwargs=conv_kwargs,
  )


def check_method(method: Any, where: str) -> str:
  return choice(method, "method", where, METHODS)


def run(
  x: jnp.ndarray,
  kernel: jnp.ndarray,
  call: ConvCall,
  *,
  method: str,
  precision: Any,
  preferred_element_type: Any,
  conv_general_dilated: Any = None,
  conv_kwargs: Any = None,
) -> jnp.ndarray:
  """Executes a resolved conv: flip, pad mode, then one lax (or FFT) conv.

  ``conv_general_dilated`` (method ``"direct"``): a function called instead of
  ``lax.conv_general_dilated``, as Flax calls its ``conv_general_dilated``:
  ``(x, kernel, strides, pads, lhs_dilation=, rhs_dilation=,
  dimension_numbers=, feature_group_count=, precision=)``, plus
  ``preferred_element_type`` when it is not ``None`` and ``conv_kwargs``.
  """
  layouts = call.layouts
  if call.flip:
    kernel = lax.rev(kernel, layouts.spatial_axes("rhs"))
  if not layouts.batched:
    x = x[None]
  lhs, _, _ = layouts.batched_specs()
  pads = call.pads
  if call.pad_mode != "zeros" and any(p != (0, 0) for p in pads):
    axes = tuple(lhs.index(c) for c in layouts.spatial)
    x = _padding.apply_pad_mode(x, call.pad_mode, pads, axes)
    pads = ((0, 0),) * layouts.n
  kwargs = dict(
    window_strides=call.strides,
    padding=pads,
    lhs_dilation=call.input_dilation,
    rhs_dilation=call.dilation,
    dimension_numbers=call.dimension_numbers(),
    feature_group_count=call.groups,
    precision=precision,
    preferred_element_type=preferred_element_type,
  )
  if method == "auto":
    from flipconv import _auto

    method = _auto.choose_method(
      x.shape, kernel.shape, dtype=x.dtype, platform=_auto.platform_of(x), **kwargs
    )
  if conv_general_dilated is not None:
    if preferred_element_type is None:
      del kwargs["preferred_element_type"]
    strides, padding = kwargs.pop("window_strides"), kwargs.pop("padding")
    y = conv_general_dilated(x, kernel, strides, padding, **kwargs, **(conv_kwargs or {}))
  elif method == "fft":
    from flipconv import _fft_spmd

    y = _fft_spmd.conv_general_dilated_fft(x, kernel, **kwargs)
  else:
    y = lax.conv_general_dilated(x, kernel, **kwargs)
  return y if layouts.batched else y[0]
