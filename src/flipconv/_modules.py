"""What :mod:`flipconv.linen` and :mod:`flipconv.nnx` share: one layer's rules.

A layer is described once, by a :class:`Layer` (static, hashable): its spatial
rank, its own :class:`~flipconv.Convention` (the registry entry with the
module's ``flip``/``layout``/``kernel_layout`` overrides applied) and the Flax
kernel it is initialised like. Both module families call :func:`resolve`,
:func:`init_kernel` (through their own metadata boxes) and :func:`apply`, so
the layout, init and call rules exist in one place, on top of
:func:`flipconv.conv` and :func:`flipconv.conv_transpose`.

Initialisation: ``kernel_init`` is called with *Flax's* kernel shape
(``kernel_size + (in // groups, features)`` for a conv, ``kernel_size +
(in, features // groups)`` for a transposed conv, as ``flax.linen.Conv`` /
``ConvTranspose`` do), and the result is moved into the module's layout with
the same permutation and flip :func:`flipconv.convert_kernel` uses. So an
initialiser's fan-in/fan-out is the same whatever the layout, and a module of
any convention computes at init exactly the function the Flax layer computes
with the same key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from flipconv import _padding, _spec
from flipconv._layouts import check_letters, generalize, spatial_letters
from flipconv._validate import as_bool, as_int_tuple, choice, is_int, shape_str
from flipconv.convert import KernelPlan, apply_plan, kernel_plan
from flipconv.registry import Convention, get_convention
from flipconv.transpose import conv_transpose

# Flax's padding names that flipconv's ops spell as a pad mode: SAME-sized
# pads ((k_eff - 1) // 2, k_eff // 2) whatever the stride, as flax.linen.Conv does.
_FLAX_PAD_MODES = {"CIRCULAR": "circular", "REFLECT": "reflect"}

# What a ConvTranspose's numeric padding pads: the forward conv it is the adjoint of
# (PyTorch, ONNX, Keras, fc.conv_transpose) or the stride-dilated input (lax.conv_transpose,
# so Flax).
PADDING_MEANINGS = {
  "forward": "forward",
  "pytorch": "forward",
  "dilated_input": "dilated_input",
  "flax": "dilated_input",
  "lax": "dilated_input",
}


@dataclasses.dataclass(frozen=True)
class Layer:
  """A conv layer's static description.

  Attributes:
    where: the module's name, for error messages.
    transposed: a transposed conv (``ConvTranspose``).
    kernel_size: spatial kernel sizes, in the order of the spatial letters.
    own: the layer's convention (layouts written for its spatial rank).
    init_like: the Flax convention the kernel is initialised in (same rank).
  """

  where: str
  transposed: bool
  kernel_size: tuple[int, ...]
  own: Convention
  init_like: Convention

  @property
  def n(self) -> int:
    return len(self.kernel_size)

  @property
  def flip(self) -> bool:
    return self.own.transpose_flip if self.transposed else self.own.flip

  @property
  def layout(self) -> str:
    return self.own.layout

  @property
  def kernel_layout(self) -> str:
    return self.own.transpose_kernel_layout if self.transposed else self.own.kernel_layout

  @property
  def kind(self) -> str:
    return "conv_transpose" if self.transposed else "conv"

  def init_plan(self) -> KernelPlan:
    """Permutation and flip from the Flax-shaped initial kernel to this layer's."""
    return kernel_plan(self.n + 2, self.init_like, self.own, kind=self.kind, where=self.where)

  def flax_kernel_shape(self, in_features: int, features: int, groups: int) -> tuple[int, ...]:
    """The kernel shape Flax's layer has (``kernel_init`` is called with it)."""
    k = self.kernel_size
    if not self.transposed:
      return (*k, in_features // groups, features)
    # Forward-conv letters ...OI: O = the transposed layer's input channels.
    if self.init_like.transpose_kernel_layout.endswith("OI"):
      return (*k, in_features, features // groups)
    return (*k, features // groups, in_features)

  def kernel_shape(self, in_features: int, features: int, groups: int) -> tuple[int, ...]:
    """The kernel shape this layer stores, in its ``kernel_layout``."""
    return self.init_plan().new_shape(self.flax_kernel_shape(in_features, features, groups))


def _kernel_size(
  kernel_size: Any, layout: Any, convention: Convention, where: str
) -> tuple[int, ...]:
  if is_int(kernel_size):
    if isinstance(layout, str):  # the layout gives the rank
      return as_int_tuple(kernel_size, len(spatial_letters(layout, "data")), "kernel_size", where)
    if convention.name != "flax":
      # PyTorch's Conv2d(.., 3) is 3x3, Flax's Conv(.., 3) is 1-D: refuse to guess.
      raise TypeError(
        f"{where}: kernel_size={kernel_size} does not say the spatial rank with "
        f"convention={convention.name!r}; give ({kernel_size},) for 1-D, ({kernel_size}, "
        f"{kernel_size}) for 2-D, ..., or a layout string such as 'NCHW'."
      )
    return as_int_tuple(kernel_size, 1, "kernel_size", where)
  if isinstance(kernel_size, Sequence) and not isinstance(kernel_size, str) and kernel_size:
    return as_int_tuple(kernel_size, len(kernel_size), "kernel_size", where)
  raise TypeError(
    f"{where}: kernel_size must be an int or a non-empty sequence of ints, got {kernel_size!r}."
  )


def resolve(
  *,
  where: str,
  transposed: bool,
  kernel_size: Any,
  convention: Any,
  flip: Any,
  layout: Any,
  kernel_layout: Any,
  transpose_kernel: Any = False,
) -> Layer:
  """The :class:`Layer` of a module's fields (checked, before any array is seen)."""
  base = get_convention(convention)
  size = _kernel_size(kernel_size, layout, base, where)
  n = len(size)
  if layout is None:
    layout = generalize(base.layout, n)
  layout = check_letters(layout, "layout", where, "NC")
  if len(spatial_letters(layout, "data")) != n:
    raise ValueError(
      f"{where}: layout {layout!r} has {len(spatial_letters(layout, 'data'))} "
      f"spatial axes but kernel_size {size} has {n}."
    )
  flax = get_convention("flax")
  init_like = dataclasses.replace(
    flax,
    name="flax",
    layout=generalize(flax.layout, n),
    kernel_layout=generalize(flax.kernel_layout, n),
    transpose_kernel_layout=generalize(flax.transpose_kernel_layout, n),
  )
  if as_bool(transpose_kernel, "transpose_kernel", where):
    if not transposed:
      raise TypeError(f"{where}: transpose_kernel applies to ConvTranspose only.")
    # flax.linen.ConvTranspose(transpose_kernel=True): the forward conv's HWIO kernel.
    init_like = dataclasses.replace(
      init_like, transpose_kernel_layout=init_like.kernel_layout, transpose_flip=False
    )
    if base.name == "flax":
      base = init_like
  if kernel_layout is None:
    kernel_layout = generalize(
      base.transpose_kernel_layout if transposed else base.kernel_layout, n
    )
  kernel_layout = check_letters(kernel_layout, "kernel_layout", where, "OI")
  if len(kernel_layout) != n + 2:
    raise ValueError(
      f"{where}: kernel_layout {kernel_layout!r} has {len(kernel_layout) - 2} "
      f"spatial axes but kernel_size {size} has {n}."
    )
  if flip is None:
    flip = base.transpose_flip if transposed else base.flip
  flip = as_bool(flip, "flip", where)
  # The registry's depthwise layout is written for 2-D and a module never uses it; kept, it
  # would fail Convention's check against a 1-D/3-D (or user-given) kernel_layout.
  base = dataclasses.replace(base, depthwise_kernel_layout="")
  if transposed:
    own = dataclasses.replace(
      base,
      layout=layout,
      transpose_kernel_layout=kernel_layout,
      transpose_flip=flip,
      kernel_layout=generalize(base.kernel_layout, n),
    )
  else:
    own = dataclasses.replace(
      base,
      layout=layout,
      kernel_layout=kernel_layout,
      flip=flip,
      transpose_kernel_layout=generalize(base.transpose_kernel_layout, n),
    )
  return Layer(where, transposed, size, own, init_like)


def check_features(layer: Layer, in_features: int, features: int, groups: Any) -> int:
  """Checks the channel counts against ``feature_group_count``; returns it as an int."""
  where = layer.where
  if not is_int(groups) or groups < 1:
    raise (TypeError if not is_int(groups) else ValueError)(
      f"{where}: feature_group_count must be a positive int, got {groups!r}."
    )
  if not is_int(features) or features < 1:
    raise (TypeError if not is_int(features) else ValueError)(
      f"{where}: the number of output features must be a positive int, got {features!r}."
    )
  for name, value in (("input features", in_features), ("output features", features)):
    if value % groups:
      raise ValueError(
        f"{where}: {name} ({value}) must be divisible by feature_group_count ({groups})."
      )
  return int(groups)


def init_kernel(
  layer: Layer,
  kernel_init: Callable[..., Any],
  key: jax.Array,
  in_features: int,
  features: int,
  groups: int,
  dtype: Any,
  relayout_boxed: Callable[[Any, Callable[[Any], Any]], Any],
) -> Any:
  """``kernel_init`` at Flax's shape, moved into the layer's layout.

  ``relayout_boxed(value, f)`` applies ``f`` to the array inside whatever
  metadata box the initialiser returned (``nn.with_partitioning``,
  ``nnx.with_partitioning``), keeping the box: the axis names a user gives
  there are those of the module's own ``kernel_layout``.
  """
  plan = layer.init_plan()
  shape = layer.flax_kernel_shape(in_features, features, groups)
  value = kernel_init(key, shape, dtype)
  return relayout_boxed(value, lambda v: apply_plan(v, plan))


def flax_padding(
  padding: Any, pad_mode: Any, kernel_size: Sequence[int], dilation: Sequence[int], where: str
) -> tuple[Any, Any]:
  """Flax's ``"CIRCULAR"``/``"REFLECT"`` paddings as flipconv padding plus pad mode."""
  if not isinstance(padding, str) or padding.upper() not in _FLAX_PAD_MODES:
    return padding, pad_mode
  mode = _FLAX_PAD_MODES[padding.upper()]
  if _padding.normalize_pad_mode(pad_mode, where) not in ("zeros", mode):
    raise ValueError(
      f"{where}: padding={padding!r} already implies pad_mode={mode!r}; got "
      f"pad_mode={pad_mode!r} as well."
    )
  k_eff = _padding.effective_sizes(kernel_size, dilation)
  return tuple(((k - 1) // 2, k // 2) for k in k_eff), mode


def flax_transpose_padding(
  layer: Layer,
  padding: Any,
  pad_mode: Any,
  strides: Any,
  dilation: Sequence[int],
  output_padding: tuple[int, ...],
) -> tuple[Any, Any, tuple[int, ...]]:
  """Flax's ``"CIRCULAR"``/``"REFLECT"`` for a transposed conv: padding, pad mode, output padding.

  With ``convention="flax"`` and no ``pad_mode``, ``"CIRCULAR"`` is Flax's, which is
  the adjoint of a circular ``"SAME"`` conv (``"SAME_LOWER"`` where the layer's flip is
  False, i.e. ``transpose_kernel=True``); see :class:`flipconv.linen.ConvTranspose`.
  Otherwise it is the adjoint of :class:`flipconv.linen.Conv` with that padding and the
  same strides: pads ``((k - 1) // 2, k // 2)`` of that mode, ``in * stride`` outputs.
  """
  if not isinstance(padding, str) or padding.upper() not in _FLAX_PAD_MODES:
    return padding, pad_mode, output_padding
  where = layer.where
  mode = _FLAX_PAD_MODES[padding.upper()]
  if (
    layer.own.name == "flax"
    and mode == "circular"
    and _padding.normalize_pad_mode(pad_mode, where) == "zeros"
  ):
    return ("SAME_LOWER" if not layer.flip else "SAME"), mode, output_padding
  pairs, mode = flax_padding(padding, pad_mode, layer.kernel_size, dilation, where)
  if not any(output_padding):  # the smallest size (in - 1) * stride + 1, plus stride - 1
    output_padding = tuple(s - 1 for s in as_int_tuple(strides, layer.n, "strides", where))
  return pairs, mode, output_padding


def flax_pairs(padding: Any) -> Any:
  """Flax's mixed form ``[1, (0, 2)]`` (an int pads both sides of its dimension) as pairs."""
  if (
    isinstance(padding, Sequence)
    and not isinstance(padding, str)
    and any(is_int(p) for p in padding)
    and not all(is_int(p) for p in padding)
  ):
    return tuple((p, p) if is_int(p) else p for p in padding)
  return padding


def padding_meaning_of(layer: Layer, meaning: Any) -> str:
  """A ConvTranspose's ``padding_meaning``; ``None``: ``"dilated_input"`` for Flax's convention."""
  if meaning is None:
    return "dilated_input" if layer.own.name == "flax" else "forward"
  return choice(meaning, "padding_meaning", layer.where, PADDING_MEANINGS)


def _signed_pairs(padding: Any, n: int, where: str) -> tuple[tuple[int, int], ...]:
  """Numeric padding as ``n`` ``(low, high)`` pairs; negative values crop, as in lax."""
  if is_int(padding):
    return ((int(padding), int(padding)),) * n
  if isinstance(padding, Sequence) and len(padding) == n:
    if all(is_int(p) for p in padding):
      return tuple((int(p), int(p)) for p in padding)
    if all(isinstance(p, Sequence) and len(p) == 2 and all(is_int(v) for v in p) for p in padding):
      return tuple((int(lo), int(hi)) for lo, hi in padding)
  return _padding.normalize_padding(padding, n, where)  # its error names the allowed forms


def forward_padding(
  padding: Any, k_eff: Sequence[int], where: str
) -> tuple[Any, tuple[tuple[int, int], ...]]:
  """Padding of the stride-dilated input (Flax's meaning) as the forward conv's padding.

  The adjoint of a conv padded by ``(lo, hi)`` is a conv of the stride-dilated
  input padded by ``(k_eff - 1 - lo, k_eff - 1 - hi)`` (with the output size
  that makes it so), so Flax's ``(a, b)`` is :func:`flipconv.conv_transpose`'s
  ``(k_eff - 1 - a, k_eff - 1 - b)``. Pads beyond ``k_eff - 1`` only add
  outputs whose window sees no input: returned as zeros to add around the
  output, per spatial dimension.
  """
  if isinstance(padding, str):
    return padding, ()
  pads = _signed_pairs(padding, len(k_eff), where)
  forward = tuple(
    (max(k - 1 - a, 0), max(k - 1 - b, 0)) for (a, b), k in zip(pads, k_eff, strict=True)
  )
  zeros = tuple(
    (max(a - k + 1, 0), max(b - k + 1, 0)) for (a, b), k in zip(pads, k_eff, strict=True)
  )
  return forward, zeros if any(p != (0, 0) for p in zeros) else ()


def conv_primitive(fn: Any, cls: Any, method: str, where: str) -> Any:
  """The function a module's ``conv_general_dilated`` (``_cls``) names; ``None``: lax's.

  ``conv_general_dilated_cls`` wins, and is called for the function, as in
  ``flax.linen.Conv``. A replacement is called where ``lax.conv_general_dilated``
  would be, so it rules out ``method="fft"``/``"auto"``.
  """
  if cls is not None:
    fn = cls()
  if fn is None or fn is lax.conv_general_dilated:
    return None
  if not callable(fn):
    raise TypeError(
      f"{where}: conv_general_dilated must be a function like lax.conv_general_dilated, got {fn!r}."
    )
  if method != "direct":
    raise ValueError(
      f"{where}: conv_general_dilated replaces lax.conv_general_dilated, which "
      f"method={method!r} does not call; use method='direct' with it."
    )
  return fn


def batch_dims(layer: Layer, x: jax.Array) -> tuple[jax.Array, tuple[int, ...] | None]:
  """Flax's allowance: any number of leading batch axes (0 included), flattened to one.

  Only for layouts that start with ``N`` (or have none and so are unbatched);
  returns the input with exactly one batch axis in front and the batch shape
  to restore (``None``: nothing was changed).
  """
  layout = layer.layout
  core = layout[1:] if layout.startswith("N") else layout
  if "N" in core:
    return x, None  # N elsewhere: the input must match the layout as it is
  lead = x.ndim - len(core)
  if lead < 0:
    raise ValueError(
      f"{layer.where}: input has rank {x.ndim} (shape {shape_str(x.shape)}) but "
      f"layout {layout!r} needs at least {len(core)} axes ({core})."
    )
  if lead == (1 if layout.startswith("N") else 0):
    return x, None
  return x.reshape((-1, *x.shape[lead:])), x.shape[:lead]


def batched_layout(layer: Layer) -> str:
  return layer.layout if "N" in layer.layout else "N" + layer.layout


def check_kernel(layer: Layer, kernel: Any, expected: tuple[int, ...]) -> None:
  if tuple(kernel.shape) != tuple(expected):
    raise ValueError(
      f"{layer.where}: kernel has shape {shape_str(kernel.shape)} but this layer "
      f"(kernel_layout {layer.kernel_layout!r}, convention {layer.own.name!r}) needs "
      f"{shape_str(expected)}; convert a kernel of another convention with "
      "flipconv.convert_kernel or flipconv.convert_params."
    )


def apply(
  layer: Layer,
  x: Any,
  kernel: Any,
  bias: Any,
  *,
  strides: Any,
  padding: Any,
  pad_mode: Any,
  kernel_dilation: Any,
  input_dilation: Any,
  groups: int,
  output_padding: Any,
  mask: Any,
  dtype: Any,
  precision: Any,
  preferred_element_type: Any,
  method: str,
  promote: Callable[[Any, Any, Any, Any], tuple[Any, Any, Any]],
  conv_general_dilated: Any = None,
  conv_kwargs: Any = None,
  padding_meaning: Any = None,
) -> jax.Array:
  """The layer's output: the conv (or transposed conv) of its convention, plus bias.

  ``promote(x, kernel, bias, dtype)`` is the module's ``promote_dtype``;
  ``conv_general_dilated`` (from :func:`conv_primitive`, forward conv only) and
  ``conv_kwargs`` (more keywords for it, e.g. nnx's ``out_sharding``) replace
  lax's conv; ``padding_meaning`` is a ConvTranspose's (see
  :func:`padding_meaning_of`).
  """
  where = layer.where
  x = jnp.asarray(x)
  x, batch_shape = batch_dims(layer, x)
  if mask is not None:
    if tuple(mask.shape) != tuple(kernel.shape):
      raise ValueError(
        f"{where}: mask has shape {shape_str(mask.shape)} but the kernel has "
        f"{shape_str(kernel.shape)} (masks are in the module's kernel_layout)."
      )
    kernel = kernel * mask
  x, kernel, bias = promote(x, kernel, bias, dtype)
  layout = batched_layout(layer) if batch_shape is not None else layer.layout
  n = layer.n
  # Flax's spellings: None for 1 (flax's ConvTranspose defaults), ints mixed with pairs.
  strides, kernel_dilation, input_dilation = (
    1 if v is None else v for v in (strides, kernel_dilation, input_dilation)
  )
  padding = flax_pairs(padding)
  dilation = as_int_tuple(kernel_dilation, n, "kernel_dilation", where)
  common = dict(
    convention=layer.own,
    flip=layer.flip,
    layout=layout,
    kernel_layout=layer.kernel_layout,
    strides=strides,
    dilation=dilation,
    groups=groups,
    method=method,
    precision=precision,
    preferred_element_type=preferred_element_type,
  )
  if layer.transposed:
    out_pad = as_int_tuple(output_padding, n, "output_padding", where, minimum=0)
    meaning = padding_meaning_of(layer, padding_meaning)
    flax_mode = isinstance(padding, str) and padding.upper() in _FLAX_PAD_MODES
    # Flax's CIRCULAR/REFLECT become forward-conv pads here; numeric padding of the
    # stride-dilated input (Flax's meaning) becomes the forward conv's next.
    padding, pad_mode, out_pad = flax_transpose_padding(
      layer, padding, pad_mode, strides, dilation, out_pad
    )
    zeros: tuple[tuple[int, int], ...] = ()
    if meaning == "dilated_input" and not flax_mode:
      k_eff = _padding.effective_sizes(layer.kernel_size, dilation)
      padding, zeros = forward_padding(padding, k_eff, where)
    y = conv_transpose(
      x,
      kernel,
      padding=padding,
      pad_mode=pad_mode,
      output_padding=out_pad if any(out_pad) else None,
      **common,
    )
    if zeros:
      y = _pad_zeros(layer, layout, y, zeros)
  else:
    padding, pad_mode = flax_padding(padding, pad_mode, layer.kernel_size, dilation, where)
    if conv_kwargs and conv_general_dilated is None:
      if method != "direct":
        raise ValueError(
          f"{where}: {', '.join(conv_kwargs)} goes to lax.conv_general_dilated, which "
          f"method={method!r} does not call; use method='direct' with it."
        )
      conv_general_dilated = lax.conv_general_dilated  # only lax's takes e.g. out_sharding
    # With a conv_general_dilated, the operands reach it as promote_dtype left them (Flax).
    y = _spec.conv(
      x,
      kernel,
      where=where,
      padding=padding,
      pad_mode=pad_mode,
      input_dilation=input_dilation,
      out_layout=None,
      promote_operands=conv_general_dilated is None,
      conv_general_dilated=conv_general_dilated,
      conv_kwargs=conv_kwargs,
      **common,
    )
  if bias is not None:
    c = layout.index("C")
    y = y + bias.reshape(tuple(-1 if a == c else 1 for a in range(y.ndim)))
  if batch_shape is not None:
    y = y.reshape((*batch_shape, *y.shape[1:]))
  return y


def _pad_zeros(layer: Layer, layout: str, y: jax.Array, pads: Any) -> jax.Array:
  """``y`` (laid out as ``layout``) zero-padded by ``pads`` (kernel-letter order)."""
  widths = dict(zip(spatial_letters(layer.kernel_layout, "kernel"), pads, strict=True))
  return jnp.pad(y, [widths.get(c, (0, 0)) for c in layout])


def in_features_of(layer: Layer, x: Any) -> int:
  """The input's channel count (any number of leading batch axes)."""
  layout = layer.layout
  c_from_end = len(layout) - layout.index("C")
  shape = jnp.shape(x)
  if len(shape) < c_from_end:
    raise ValueError(
      f"{layer.where}: input has rank {len(shape)} (shape {shape_str(shape)}) but "
      f"layout {layout!r} needs at least {len(layout) - ('N' in layout)} axes."
    )
  if "N" in layout and not layout.startswith("N"):
    return int(shape[layout.index("C")])
  return int(shape[-c_from_end])
