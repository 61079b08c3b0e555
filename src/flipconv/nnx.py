"""Flax nnx layers that hold any framework's conv weights as they are.

The nnx twins of :mod:`flipconv.linen`: ``flipconv.nnx.Conv(in_features,
out_features, kernel_size, convention=..., rngs=...)`` stores ``kernel`` in
the convention's kernel layout; with the default ``convention="flax"`` it is a
drop-in replacement for ``flax.nnx.Conv`` (every argument of Flax's, with
Flax's meaning; the same names, shapes, initialisers, random keys and
outputs), and likewise :class:`ConvTranspose`.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx import variablelib
from flax.nnx.nn import dtypes
from flax.nnx.nn.linear import default_bias_init, default_kernel_init
from jax import lax

from flipconv import _modules
from flipconv._spec import check_method

Initializer = Callable[..., Any]


def _relayout_boxed(value: Any, f: Callable[[Any], Any]) -> Any:
  """Applies ``f`` to the array in an nnx metadata box (``nnx.with_partitioning``)."""
  if isinstance(value, variablelib.VariableMetadata):
    return dataclasses.replace(value, raw_value=f(value.raw_value))
  return f(value)


class _Base(nnx.Module):
  """The parameters and call shared by :class:`Conv` and :class:`ConvTranspose`."""

  def _build(
    self,
    layer: _modules.Layer,
    in_features: int,
    out_features: int,
    *,
    feature_group_count: int,
    use_bias: bool,
    param_dtype: Any,
    kernel_init: Initializer,
    bias_init: Initializer,
    rngs: nnx.Rngs,
    kernel_metadata: Mapping[str, Any],
    bias_metadata: Mapping[str, Any],
  ) -> None:
    groups = _modules.check_features(layer, in_features, out_features, feature_group_count)
    self.layer = layer
    self.in_features = in_features
    self.out_features = out_features
    self.feature_group_count = groups
    self.kernel_shape = layer.kernel_shape(in_features, out_features, groups)
    # Keys drawn in Flax's order (kernel, then bias): the same rngs give the same params.
    self.kernel = nnx.Param(
      _modules.init_kernel(
        layer,
        kernel_init,
        rngs.params(),
        in_features,
        out_features,
        groups,
        param_dtype,
        _relayout_boxed,
      ),
      **kernel_metadata,
    )
    self.bias: nnx.Param | None
    if use_bias:
      self.bias = nnx.Param(bias_init(rngs.params(), (out_features,), param_dtype), **bias_metadata)
    else:
      self.bias = nnx.data(None)

  def _apply(self, inputs: Any, **kwargs: Any) -> jax.Array:
    promote_dtype = self.promote_dtype
    c = _modules.in_features_of(self.layer, inputs)
    if c != self.in_features:
      raise ValueError(
        f"{self.layer.where}: the input has {c} channels (axis C of layout "
        f"{self.layer.layout!r}, input shape {tuple(jax.numpy.shape(inputs))}) but the layer "
        f"was built with in_features={self.in_features}."
      )
    kernel = self.kernel[...]
    _modules.check_kernel(self.layer, kernel, self.kernel_shape)
    bias = self.bias[...] if self.bias is not None else None
    return _modules.apply(
      self.layer,
      inputs,
      kernel,
      bias,
      strides=self.strides,
      padding=self.padding,
      kernel_dilation=self.kernel_dilation,
      groups=self.feature_group_count,
      mask=self.mask,
      dtype=self.dtype,
      precision=self.precision,
      preferred_element_type=self.preferred_element_type,
      method=self.method,
      promote=lambda x, kernel, bias, dtype: promote_dtype((x, kernel, bias), dtype=dtype),
      **kwargs,
    )


class Conv(_Base):
  """A convolution layer of any framework's convention (nnx).

  The arguments mean what they mean for :class:`flipconv.linen.Conv` (Flax's
  first, in ``flax.nnx.Conv``'s order), plus ``in_features``, ``rngs`` and
  Flax nnx's ``kernel_metadata`` / ``bias_metadata`` (e.g. ``{"sharding":
  ("O", None, None, None)}``, naming the axes of the module's own
  ``kernel_layout``); ``nnx.with_partitioning`` around ``kernel_init`` works
  too. As in ``flax.nnx.Conv``, ``promote_dtype`` takes one tuple
  (``promote_dtype((inputs, kernel, bias), dtype=dtype)``), the default
  ``conv_general_dilated`` is ``lax.conv_general_dilated`` and a replacement
  (see :class:`flipconv.linen.Conv`) also gets the call's ``out_sharding``.

  Examples:
    >>> import jax.numpy as jnp, flipconv as fc
    >>> from flax import nnx
    >>> layer = fc.nnx.Conv(2, 4, (3, 3), convention="pytorch", rngs=nnx.Rngs(0))
    >>> layer.kernel.shape, layer(jnp.ones((1, 2, 8, 8))).shape
    ((4, 2, 3, 3), (1, 4, 8, 8))
  """

  def __init__(
    self,
    in_features: int,
    out_features: int,
    kernel_size: int | Sequence[int],
    strides: int | Sequence[int] | None = 1,
    *,
    padding: Any = "SAME",
    input_dilation: int | Sequence[int] | None = 1,
    kernel_dilation: int | Sequence[int] | None = 1,
    feature_group_count: int = 1,
    use_bias: bool = True,
    mask: Any = None,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
    precision: Any = None,
    kernel_init: Initializer = default_kernel_init,
    bias_init: Initializer = default_bias_init,
    conv_general_dilated: Callable[..., Any] = lax.conv_general_dilated,
    promote_dtype: Callable[..., Any] = dtypes.promote_dtype,
    preferred_element_type: Any = None,
    rngs: nnx.Rngs,
    kernel_metadata: Mapping[str, Any] = MappingProxyType({}),
    bias_metadata: Mapping[str, Any] = MappingProxyType({}),
    flip: bool | None = None,
    convention: Any = "flax",
    layout: str | None = None,
    kernel_layout: str | None = None,
    pad_mode: str = "zeros",
    method: str = "direct",
  ):
    where = "flipconv.nnx.Conv"
    layer = _modules.resolve(
      where=where,
      transposed=False,
      kernel_size=kernel_size,
      convention=convention,
      flip=flip,
      layout=layout,
      kernel_layout=kernel_layout,
    )
    self.strides = strides
    self.padding = padding
    self.input_dilation = input_dilation
    self.kernel_dilation = kernel_dilation
    self.pad_mode = pad_mode
    self.use_bias = use_bias
    self.mask = mask
    self.dtype = dtype
    self.param_dtype = param_dtype
    self.precision = precision
    self.method = check_method(method, where)
    self.preferred_element_type = preferred_element_type
    self.conv_general_dilated = conv_general_dilated
    self.promote_dtype = promote_dtype
    self._build(
      layer,
      in_features,
      out_features,
      feature_group_count=feature_group_count,
      use_bias=use_bias,
      param_dtype=param_dtype,
      kernel_init=kernel_init,
      bias_init=bias_init,
      rngs=rngs,
      kernel_metadata=kernel_metadata,
      bias_metadata=bias_metadata,
    )

  def __call__(self, inputs: Any, out_sharding: Any = None) -> jax.Array:
    """Applies the convolution to ``inputs`` (laid out as the module's ``layout``).

    ``out_sharding``: as in ``flax.nnx.Conv``, passed to ``lax.conv_general_dilated``
    (or the module's ``conv_general_dilated``); needs ``method="direct"``.
    """
    fn = _modules.conv_primitive(self.conv_general_dilated, None, self.method, self.layer.where)
    return self._apply(
      inputs,
      input_dilation=self.input_dilation,
      pad_mode=self.pad_mode,
      output_padding=0,
      conv_general_dilated=fn,
      conv_kwargs=None if fn is None and out_sharding is None else {"out_sharding": out_sharding},
    )


class ConvTranspose(_Base):
  """A transposed convolution layer of any framework's convention (nnx).

  The arguments mean what they mean for :class:`flipconv.linen.ConvTranspose`
  (Flax's first, in ``flax.nnx.ConvTranspose``'s order; numeric ``padding`` as
  ``padding_meaning`` says: Flax's with ``convention="flax"``, the forward
  conv's otherwise; ``pad_mode`` and Flax's ``padding="CIRCULAR"`` as there:
  with ``convention="flax"``, what ``flax.nnx.ConvTranspose(padding="CIRCULAR")``
  returns), plus ``in_features``, ``rngs``, ``kernel_metadata`` and
  ``bias_metadata``; ``promote_dtype`` takes one tuple, as in nnx.

  Examples:
    >>> import jax.numpy as jnp, flipconv as fc
    >>> from flax import nnx
    >>> layer = fc.nnx.ConvTranspose(8, 3, (4, 4), strides=2, padding=1,
    ...                              convention="pytorch", rngs=nnx.Rngs(0))
    >>> layer.kernel.shape, layer(jnp.ones((1, 8, 5, 5))).shape
    ((8, 3, 4, 4), (1, 3, 10, 10))
  """

  def __init__(
    self,
    in_features: int,
    out_features: int,
    kernel_size: int | Sequence[int],
    strides: int | Sequence[int] | None = 1,
    *,
    padding: Any = "SAME",
    kernel_dilation: int | Sequence[int] | None = 1,
    use_bias: bool = True,
    mask: Any = None,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
    precision: Any = None,
    kernel_init: Initializer = default_kernel_init,
    bias_init: Initializer = default_bias_init,
    transpose_kernel: bool = False,
    promote_dtype: Callable[..., Any] = dtypes.promote_dtype,
    preferred_element_type: Any = None,
    rngs: nnx.Rngs,
    kernel_metadata: Mapping[str, Any] = MappingProxyType({}),
    bias_metadata: Mapping[str, Any] = MappingProxyType({}),
    output_padding: int | Sequence[int] = 0,
    flip: bool | None = None,
    convention: Any = "flax",
    layout: str | None = None,
    kernel_layout: str | None = None,
    feature_group_count: int = 1,
    method: str = "direct",
    padding_meaning: str | None = None,
    pad_mode: str = "zeros",
  ):
    where = "flipconv.nnx.ConvTranspose"
    layer = _modules.resolve(
      where=where,
      transposed=True,
      kernel_size=kernel_size,
      convention=convention,
      flip=flip,
      layout=layout,
      kernel_layout=kernel_layout,
      transpose_kernel=transpose_kernel,
    )
    self.strides = strides
    self.padding = padding
    self.output_padding = output_padding
    self.kernel_dilation = kernel_dilation
    self.use_bias = use_bias
    self.mask = mask
    self.dtype = dtype
    self.param_dtype = param_dtype
    self.precision = precision
    self.transpose_kernel = transpose_kernel
    self.pad_mode = pad_mode
    self.method = check_method(method, where)
    self.preferred_element_type = preferred_element_type
    self.promote_dtype = promote_dtype
    self.padding_meaning = padding_meaning
    _modules.padding_meaning_of(layer, padding_meaning)  # checked now, not at the first call
    self._build(
      layer,
      in_features,
      out_features,
      feature_group_count=feature_group_count,
      use_bias=use_bias,
      param_dtype=param_dtype,
      kernel_init=kernel_init,
      bias_init=bias_init,
      rngs=rngs,
      kernel_metadata=kernel_metadata,
      bias_metadata=bias_metadata,
    )

  def __call__(self, inputs: Any) -> jax.Array:
    """Applies the transposed convolution to ``inputs``."""
    return self._apply(
      inputs,
      input_dilation=1,
      pad_mode=self.pad_mode,
      output_padding=self.output_padding,
      padding_meaning=self.padding_meaning,
    )


class _InitSignature:
  """``cls.__signature__``: the constructor's, for help() and Sphinx; ``None`` on instances.

  nnx's metaclass defines ``__call__(cls, *args, **kwargs)``, which ``inspect``
  would otherwise report for the class; an instance's signature stays its ``__call__``.
  """

  def __get__(self, obj: Any, cls: type) -> inspect.Signature | None:
    if obj is not None:
      return None
    sig = inspect.signature(cls.__init__)
    return sig.replace(parameters=list(sig.parameters.values())[1:])  # without self


Conv.__signature__ = _InitSignature()  # type: ignore[assignment]
ConvTranspose.__signature__ = _InitSignature()  # type: ignore[assignment]


__all__ = ["Conv", "ConvTranspose"]
