"""Flax linen layers that hold any framework's conv weights as they are.

``flipconv.linen.Conv(features, kernel_size, convention=...)`` stores its
``kernel`` in the convention's kernel layout and computes what that
framework's layer computes, so weights load unchanged::

  fc.linen.Conv(16, (3, 3), convention="pytorch")   # NCHW input, kernel = torch weight (OIHW)
  fc.linen.Conv(16, (3, 3), convention="lasagne")   # NCHW, W (OIHW), true convolution
  fc.linen.Conv(16, (3, 3))                          # = flax.linen.Conv (NHWC, HWIO)

With the default ``convention="flax"`` the layers are drop-in replacements for
``flax.linen.Conv`` / ``ConvTranspose``: Flax's attributes in Flax's order and
with Flax's meanings, then flipconv's own (``convention``, ``flip``,
``layout``, ...); the same parameter names, shapes, initial values and outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import meta
from flax.linen import dtypes, initializers
from flax.linen.linear import default_kernel_init

from flipconv import _modules
from flipconv._spec import check_method

Initializer = Callable[..., Any]


def _relayout_boxed(value: Any, f: Callable[[Any], Any]) -> Any:
  """Applies ``f`` to the array in a linen metadata box (``nn.with_partitioning``)."""
  if isinstance(value, meta.Partitioned):
    # The raw value: Partitioned.unbox() would constrain the Flax-shaped array
    # with names that are meant for the module's own layout.
    return value.replace(value=f(value.value))
  if isinstance(value, meta.AxisMetadata):
    return value.replace_boxed(f(value.unbox()))
  return f(value)


def _call(
  module: Any,
  inputs: Any,
  layer: _modules.Layer,
  *,
  input_dilation: Any = 1,
  pad_mode: Any = "zeros",
  output_padding: Any = 0,
  conv_general_dilated: Any = None,
  padding_meaning: Any = None,
) -> jax.Array:
  """The body shared by :class:`Conv` and :class:`ConvTranspose`."""
  method = check_method(module.method, layer.where)
  promote_dtype = module.promote_dtype
  in_features = _modules.in_features_of(layer, inputs)
  groups = _modules.check_features(layer, in_features, module.features, module.feature_group_count)

  def init(key: jax.Array) -> Any:
    return _modules.init_kernel(
      layer,
      module.kernel_init,
      key,
      in_features,
      module.features,
      groups,
      module.param_dtype,
      _relayout_boxed,
    )

  if module.has_variable("params", "kernel"):
    # Given params: checked before module.param, whose own check raises Flax's
    # error without the fix (a kernel made by init has the right shape).
    given = meta.unbox(module.get_variable("params", "kernel"))
    _modules.check_kernel(layer, given, layer.kernel_shape(in_features, module.features, groups))
  kernel = module.param("kernel", init)
  bias = None
  if module.use_bias:
    bias = module.param("bias", module.bias_init, (module.features,), module.param_dtype)
  return _modules.apply(
    layer,
    inputs,
    kernel,
    bias,
    strides=module.strides,
    padding=module.padding,
    pad_mode=pad_mode,
    kernel_dilation=module.kernel_dilation,
    input_dilation=input_dilation,
    groups=groups,
    output_padding=output_padding,
    mask=module.mask,
    dtype=module.dtype,
    precision=module.precision,
    preferred_element_type=module.preferred_element_type,
    method=method,
    promote=lambda x, kernel, bias, dtype: promote_dtype(x, kernel, bias, dtype=dtype),
    conv_general_dilated=conv_general_dilated,
    padding_meaning=padding_meaning,
  )


class Conv(nn.Module):
  """A convolution layer of any framework's convention (linen).

  Computes ``fc.conv(x, kernel, convention=..., ...) + bias``: with the default
  ``convention="flax"`` exactly ``flax.linen.Conv``; with ``"pytorch"`` the
  input is NCHW and ``kernel`` is a PyTorch ``weight`` as it is (OIHW); with
  ``"lasagne"`` or ``"theano"`` the kernel is flipped as those frameworks do.
  Layouts are written for 2-D in the registry and follow ``kernel_size``'s
  rank (``"NCW"``/``"OIW"`` for 1-D, ``"NCDHW"``/``"OIDHW"`` for 3-D).

  As in Flax, inputs may have any number of leading batch axes (none: one is
  added and removed; several: flattened and restored), for layouts that start
  with ``N``.

  ``kernel_init`` is called with Flax's kernel shape ``kernel_size + (in //
  groups, features)`` and the result is laid out in ``kernel_layout`` (and
  flipped where the convention flips), so initialisers written for Flax keep
  their fan-in and the same key gives the same function as ``flax.linen.Conv``
  in every convention. Partitioning metadata (``nn.with_partitioning(init,
  names)``) names the axes of the module's own ``kernel_layout``.

  Attributes:
    features: output channels.
    kernel_size: int (1-D, as in Flax, unless ``layout`` gives the rank) or
      one size per spatial dimension.
    strides: int or one per spatial dimension (``None``: 1).
    padding: every form of :func:`flipconv.conv` (``"SAME"``, ``"VALID"``,
      ``"SAME_LOWER"``, ``"FULL"``, ``"HALF"``, ``"CAUSAL"``, ints, pairs), and
      Flax's ``"CIRCULAR"``/``"REFLECT"`` (SAME-sized pads of that mode, of any
      width: they wrap or reflect as often as needed, as ``jnp.pad`` does).
    input_dilation, kernel_dilation: int or one per spatial dimension.
    feature_group_count: feature groups (``== in_features``: depthwise).
    use_bias: add a ``(features,)`` bias on the channel axis.
    mask: multiplies the kernel (same shape, in ``kernel_layout``).
    dtype: computation dtype (default: inferred from inputs and params).
    param_dtype: dtype of the parameters.
    precision: passed to lax.
    kernel_init, bias_init: initialisers (see above).
    promote_dtype: as in Flax: ``promote_dtype(inputs, kernel, bias,
      dtype=dtype)`` returns the three in the computation dtype (after the mask).
    conv_general_dilated: as in Flax: a function called instead of
      ``lax.conv_general_dilated`` (e.g. a quantised conv, or a ``partial``
      with ``preferred_element_type``). It is called once, as lax's function:
      ``(x, kernel, strides, pads, lhs_dilation=, rhs_dilation=,
      dimension_numbers=, feature_group_count=, precision=)``, with explicit
      ``(low, high)`` pads (a pad mode is applied before it), the module's
      layouts as ``dimension_numbers`` and the kernel already flipped where the
      convention flips; so in every convention it computes what the layer
      computes, with lax's conv replaced. Needs ``method="direct"``.
    conv_general_dilated_cls: as in Flax: called with no arguments for the
      function above (it wins over ``conv_general_dilated``).
    flip: overrides the convention's flip.
    convention: a registry name or :class:`flipconv.Convention`.
    layout: overrides the convention's data layout (e.g. ``"NCHW"``).
    kernel_layout: overrides the convention's kernel layout (e.g. ``"OIHW"``).
    pad_mode: ``"zeros"``, ``"reflect"``, ``"replicate"``, ``"circular"``,
      ``"symmetric"`` (PyTorch's ``padding_mode``; any width, as ``jnp.pad``).
    method: ``"direct"``, ``"fft"`` or ``"auto"`` (see :func:`flipconv.conv`).
    preferred_element_type: passed to lax (and to ``conv_general_dilated``
      when not ``None``).

  Examples:
    >>> import jax, jax.numpy as jnp, flipconv as fc
    >>> layer = fc.linen.Conv(4, (3, 3), convention="pytorch")
    >>> params = layer.init(jax.random.key(0), jnp.ones((1, 2, 8, 8)))
    >>> params["params"]["kernel"].shape   # a torch Conv2d(2, 4, 3).weight
    (4, 2, 3, 3)
  """

  # flax.linen.Conv's attributes, in its order (positional arguments mean the same) ...
  features: int
  kernel_size: int | Sequence[int]
  strides: int | Sequence[int] | None = 1
  padding: Any = "SAME"
  input_dilation: int | Sequence[int] | None = 1
  kernel_dilation: int | Sequence[int] | None = 1
  feature_group_count: int = 1
  use_bias: bool = True
  mask: Any = None
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Initializer = default_kernel_init
  bias_init: Initializer = initializers.zeros_init()
  promote_dtype: Callable[..., Any] = dtypes.promote_dtype
  conv_general_dilated: Callable[..., Any] | None = None
  conv_general_dilated_cls: Any = None
  # ... then flipconv's.
  flip: bool | None = None
  convention: Any = "flax"
  layout: str | None = None
  kernel_layout: str | None = None
  pad_mode: str = "zeros"
  method: str = "direct"
  preferred_element_type: Any = None

  @nn.compact
  def __call__(self, inputs: Any) -> jax.Array:
    """Applies the convolution to ``inputs`` (laid out as the module's ``layout``)."""
    layer = _modules.resolve(
      where="flipconv.linen.Conv",
      transposed=False,
      kernel_size=self.kernel_size,
      convention=self.convention,
      flip=self.flip,
      layout=self.layout,
      kernel_layout=self.kernel_layout,
    )
    return _call(
      self,
      inputs,
      layer,
      input_dilation=self.input_dilation,
      pad_mode=self.pad_mode,
      conv_general_dilated=_modules.conv_primitive(
        self.conv_general_dilated, self.conv_general_dilated_cls, self.method, layer.where
      ),
    )


class ConvTranspose(nn.Module):
  """A transposed convolution layer of any framework's convention (linen).

  Computes ``fc.conv_transpose(x, kernel, convention=..., ...) + bias``: the
  adjoint of the convention's forward conv, with the kernel as the framework
  stores it for its transposed layer (``transpose_kernel_layout``, flipped as
  ``transpose_flip`` says). With ``convention="flax"`` this is
  ``flax.linen.ConvTranspose`` (``transpose_kernel=False``, or ``True`` if
  given); with ``"pytorch"`` the input is NCHW and ``kernel`` is a PyTorch
  ``ConvTranspose2d.weight`` as it is, ``(in, out // groups, kh, kw)``.

  Numeric ``padding`` means what the convention's framework means by it
  (``padding_meaning`` chooses explicitly): with ``convention="flax"`` Flax's
  (``lax.conv_transpose``'s), the padding of the stride-dilated input; with
  every other convention the *forward* conv's padding (PyTorch's meaning:
  ``padding=1`` with a 3x3 kernel and stride 2 gives ``2 * in - 1``), as in
  :func:`flipconv.conv_transpose`. String paddings (``"SAME"``, ``"VALID"``,
  ...) and the default output sizes are the convention's (``"SAME"``: ``in *
  stride``; ``"VALID"``: Flax's ``in * stride + max(k - stride, 0)`` for
  ``"flax"``, PyTorch's ``(in - 1) * stride + k`` for ``"pytorch"``).
  ``output_padding`` (> 0) adds to the size at the high end, as in PyTorch.

  ``kernel_init`` is called with Flax's kernel shape ``kernel_size + (in,
  features // groups)`` (``kernel_size + (features // groups, in)`` with
  ``transpose_kernel=True``) and laid out like :class:`Conv`'s.

  Padded modes: ``pad_mode`` (``"reflect"``, ``"replicate"``, ``"circular"``,
  ``"symmetric"``) makes the layer the exact adjoint of :class:`Conv` with the
  same ``padding``, ``strides`` and ``pad_mode`` (see
  :func:`flipconv.conv_transpose`). Flax's ``padding="CIRCULAR"`` /
  ``"REFLECT"``:

  * with ``convention="flax"`` and no ``pad_mode``, ``"CIRCULAR"`` returns what
    ``flax.linen.ConvTranspose(padding="CIRCULAR")`` returns: the VALID
    transposed conv summed over periods of ``in * stride``. That is exactly the
    adjoint of the circular conv with ``padding="SAME"`` (``"SAME_LOWER"`` with
    ``transpose_kernel=True``) and these strides, i.e. low pads
    ``floor((k - s) / 2)`` (``ceil``) of ``k - s`` in all (none where ``k <= s``),
    ``k`` the dilated kernel size. It is *not* the adjoint of
    ``flax.linen.Conv(padding="CIRCULAR", strides=s)``, which pads
    ``((k - 1) // 2, k // 2)`` whatever the stride: with ``transpose_kernel=True``
    and that Conv's kernel, Flax's result is that adjoint rolled (``jnp.roll``)
    by ``(k - 1) // 2 - ceil(max(k - s, 0) / 2)`` along each spatial axis (0 for
    odd ``k`` at stride 1 and for any ``k`` at stride 2; -1 for even ``k`` at
    stride 1);
  * otherwise (other conventions, ``"REFLECT"``, or ``pad_mode`` given as the
    same mode, e.g. ``padding="CIRCULAR", pad_mode="circular"`` with
    ``convention="flax"``) it is the exact adjoint of
    ``Conv(padding="CIRCULAR"/"REFLECT", strides=s)``: pads ``((k - 1) // 2,
    k // 2)`` of that mode, ``in * stride`` outputs by default.

  Attributes:
    features: output channels.
    kernel_size: as in :class:`Conv`.
    strides: the forward conv's strides (the upsampling factor; ``None``: 1).
    padding: every form of :func:`flipconv.conv_transpose`, and Flax's
      ``"CIRCULAR"``/``"REFLECT"`` (see above); numeric padding as
      ``padding_meaning`` says.
    kernel_dilation, use_bias, mask, dtype, param_dtype, precision,
    kernel_init, bias_init, promote_dtype: as in :class:`Conv`.
    transpose_kernel: Flax's option: the kernel is the forward conv's ``HWIO``
      kernel (only meaningful with ``convention="flax"``).
    preferred_element_type: passed to lax.
    output_padding: int or one per spatial dimension; ``0`` keeps the default
      size.
    flip, convention, layout, kernel_layout: as in :class:`Conv` (for the
      transposed kernel, in forward-conv letters).
    feature_group_count, method: as in :class:`Conv`.
    padding_meaning: what numeric ``padding`` pads: ``"dilated_input"``
      (alias ``"flax"``: the stride-dilated input, as ``lax.conv_transpose``
      and Flax; ``(a, b)`` here is the forward conv's ``(k_eff - 1 - a, k_eff
      - 1 - b)``) or ``"forward"`` (alias ``"pytorch"``: the forward conv's
      padding, as PyTorch, ONNX and :func:`flipconv.conv_transpose`).
      ``None``: ``"dilated_input"`` for ``convention="flax"``, else
      ``"forward"``.
    pad_mode: the forward conv's pad mode (see above); default ``"zeros"``.

  Examples:
    >>> import jax, jax.numpy as jnp, flipconv as fc
    >>> layer = fc.linen.ConvTranspose(3, (4, 4), strides=2, padding=1, convention="pytorch")
    >>> x = jnp.ones((1, 8, 5, 5))
    >>> params = layer.init(jax.random.key(0), x)
    >>> params["params"]["kernel"].shape, layer.apply(params, x).shape
    ((8, 3, 4, 4), (1, 3, 10, 10))
    >>> flax_like = fc.linen.ConvTranspose(3, (4, 4), strides=2, padding=1)  # Flax's meaning
    >>> x = jnp.ones((1, 5, 5, 8))
    >>> flax_like.apply(flax_like.init(jax.random.key(0), x), x).shape
    (1, 8, 8, 3)
  """

  # flax.linen.ConvTranspose's attributes, in its order ...
  features: int
  kernel_size: int | Sequence[int]
  strides: int | Sequence[int] | None = 1
  padding: Any = "SAME"
  kernel_dilation: int | Sequence[int] | None = 1
  use_bias: bool = True
  mask: Any = None
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Initializer = default_kernel_init
  bias_init: Initializer = initializers.zeros_init()
  transpose_kernel: bool = False
  promote_dtype: Callable[..., Any] = dtypes.promote_dtype
  preferred_element_type: Any = None
  # ... then flipconv's.
  output_padding: int | Sequence[int] = 0
  flip: bool | None = None
  convention: Any = "flax"
  layout: str | None = None
  kernel_layout: str | None = None
  feature_group_count: int = 1
  method: str = "direct"
  padding_meaning: str | None = None
  pad_mode: str = "zeros"

  @nn.compact
  def __call__(self, inputs: Any) -> jax.Array:
    """Applies the transposed convolution to ``inputs``."""
    layer = _modules.resolve(
      where="flipconv.linen.ConvTranspose",
      transposed=True,
      kernel_size=self.kernel_size,
      convention=self.convention,
      flip=self.flip,
      layout=self.layout,
      kernel_layout=self.kernel_layout,
      transpose_kernel=self.transpose_kernel,
    )
    return _call(
      self,
      inputs,
      layer,
      pad_mode=self.pad_mode,
      output_padding=self.output_padding,
      padding_meaning=self.padding_meaning,
    )


__all__ = ["Conv", "ConvTranspose"]
