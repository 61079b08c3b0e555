"""The FFT method as a good citizen of ``jax.sharding``: no gathers.

XLA's SPMD partitioners (Shardy and GSPMD) do not split an FFT along its
batch axes: a batch-sharded ``rfftn`` is all-gathered first, so a sharded
``method="fft"`` conv would transform the whole batch on every device. Here
the FFT conv is a ``custom_partitioning`` op instead: each device runs
:func:`flipconv._fft.conv_general_dilated_fft` on its own shard (the batch
axis of ``x`` and the output-channel axis of the kernel may be sharded; the
other axes are made whole first), exactly as XLA partitions a direct conv.

``custom_partitioning`` has no autodiff or batching rule of its own, so:

* reverse mode is a ``custom_vjp`` whose backward pass is partitioned the
  same way (the local VJP of the FFT conv, then the two sums a sharded conv's
  gradient needs: over the kernel's output-channel shards for ``dx`` and over
  the batch shards for ``dk``, the all-reduces the direct method has too);
* under ``vmap`` the unpartitioned FFT conv is used (``custom_vmap``).

Forward mode (``jvp``) and second derivatives are not available through
``custom_vjp``; the wrapper is used only when the process has more than one
device, so single-device programs keep every transformation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
from jax.custom_batching import custom_vmap
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec

from flipconv import _fft


def conv_general_dilated_fft(lhs: jax.Array, rhs: jax.Array, **kwargs: Any) -> jax.Array:
  """:func:`flipconv._fft.conv_general_dilated_fft`, partitioned per shard on many devices."""
  if jax.device_count() == 1:
    return _fft.conv_general_dilated_fft(lhs, rhs, **kwargs)
  return _sharded(_freeze(kwargs))(lhs, rhs)


def _freeze(kwargs: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
  return tuple(sorted(kwargs.items()))


def _spec(sharding: Any, ndim: int) -> tuple[Any, ...]:
  spec = tuple(sharding.spec) if isinstance(sharding, NamedSharding) else ()
  return spec + (None,) * (ndim - len(spec))


def _names(entry: Any) -> set[str]:
  if entry is None:
    return set()
  return set(entry) if isinstance(entry, tuple) else {entry}


class _Axes:
  """Which axes of x, kernel and output may stay sharded, from the operands' shardings."""

  def __init__(self, kwargs: dict[str, Any], arg_shapes: Any):
    """From the conv's arguments and ``custom_partitioning``'s ``arg_shapes`` (x, kernel, ...)."""
    dn = kwargs["dimension_numbers"]
    self.lhs_n, self.rhs_o = dn.lhs_spec[0], dn.rhs_spec[0]
    self.out_n, self.out_c = dn.out_spec[0], dn.out_spec[1]
    self.ndim = ndim = len(arg_shapes[0].shape)
    self.batch = _spec(arg_shapes[0].sharding, ndim)[self.lhs_n]
    channels = _spec(arg_shapes[1].sharding, ndim)[self.rhs_o]
    # Grouped convs need the input channels of their groups: keep channels whole
    # there, as XLA does for a direct grouped conv.
    if kwargs["feature_group_count"] != 1 or _names(channels) & _names(self.batch):
      channels = None
    self.channels = channels

  def sharding(self, mesh: Any, which: str) -> NamedSharding:
    spec: list[Any] = [None] * self.ndim
    if which in ("lhs", "out"):
      spec[self.lhs_n if which == "lhs" else self.out_n] = self.batch
    if which in ("rhs", "out"):
      spec[self.rhs_o if which == "rhs" else self.out_c] = self.channels
    return NamedSharding(mesh, PartitionSpec(*spec))


def _rule(kwargs: dict[str, Any], ndim: int, backward: bool) -> str:
  """The Shardy rule: batch factor shared by x and y, channel factor by kernel O and y C."""
  dn = kwargs["dimension_numbers"]
  lhs = ["n" if a == dn.lhs_spec[0] else f"x{a}" for a in range(ndim)]
  o = "o" if kwargs["feature_group_count"] == 1 else "g"
  rhs = [o if a == dn.rhs_spec[0] else f"k{a}" for a in range(ndim)]
  out = ["n" if a == dn.out_spec[0] else o if a == dn.out_spec[1] else f"y{a}" for a in range(ndim)]
  if o == "g":
    out[dn.out_spec[1]] = "c"
  if backward:
    return f"{' '.join(lhs)}, {' '.join(rhs)}, {' '.join(out)} -> {' '.join(lhs)}, {' '.join(rhs)}"
  return f"{' '.join(lhs)}, {' '.join(rhs)} -> {' '.join(out)}"


def _replicated_factors(rule: str) -> tuple[str, ...]:
  """Every factor but the batch and channel ones, in the rule's order (Shardy wants it)."""
  factors = rule.replace(",", " ").replace("->", " ").split()
  return tuple(f for i, f in enumerate(factors) if f not in ("n", "o") and f not in factors[:i])


@functools.lru_cache(maxsize=256)
def _sharded(frozen: tuple[tuple[str, Any], ...]) -> Callable[[jax.Array, jax.Array], jax.Array]:
  kwargs = dict(frozen)
  plain = functools.partial(_fft.conv_general_dilated_fft, **kwargs)

  def backward_plain(lhs: jax.Array, rhs: jax.Array, g: jax.Array) -> tuple[jax.Array, ...]:
    return jax.vjp(plain, lhs, rhs)[1](g)

  # Forward: each device convolves its batch shard with its output-channel shard.
  @custom_partitioning
  def forward(lhs, rhs):
    return plain(lhs, rhs)

  def fwd_infer(mesh, arg_shapes, result_shape):
    axes = _Axes(kwargs, arg_shapes)
    return axes.sharding(mesh, "out")

  def fwd_partition(mesh, arg_shapes, result_shape):
    axes = _Axes(kwargs, arg_shapes)
    args = (axes.sharding(mesh, "lhs"), axes.sharding(mesh, "rhs"))
    return mesh, plain, axes.sharding(mesh, "out"), args

  ndim = len(kwargs["dimension_numbers"].lhs_spec)
  rule = _rule(kwargs, ndim, backward=False)
  forward.def_partition(
    infer_sharding_from_operands=fwd_infer,
    partition=fwd_partition,
    sharding_rule=rule,
    need_replication_factors=_replicated_factors(rule),
  )

  # Backward: the local VJP, then the sums over the shards the contraction was split on.
  @custom_partitioning
  def backward(lhs, rhs, g):
    return backward_plain(lhs, rhs, g)

  def bwd_infer(mesh, arg_shapes, result_shape):
    axes = _Axes(kwargs, arg_shapes)
    return axes.sharding(mesh, "lhs"), axes.sharding(mesh, "rhs")

  def bwd_partition(mesh, arg_shapes, result_shape):
    axes = _Axes(kwargs, arg_shapes)
    batch, channels = tuple(sorted(_names(axes.batch))), tuple(sorted(_names(axes.channels)))

    def lower(lhs, rhs, g):
      dlhs, drhs = backward_plain(lhs, rhs, g)
      if channels:
        dlhs = jax.lax.psum(dlhs, channels)
      if batch:
        drhs = jax.lax.psum(drhs, batch)
      return dlhs, drhs

    args = (axes.sharding(mesh, "lhs"), axes.sharding(mesh, "rhs"), axes.sharding(mesh, "out"))
    return mesh, lower, (axes.sharding(mesh, "lhs"), axes.sharding(mesh, "rhs")), args

  rule_b = _rule(kwargs, ndim, backward=True)
  backward.def_partition(
    infer_sharding_from_operands=bwd_infer,
    partition=bwd_partition,
    sharding_rule=rule_b,
    need_replication_factors=_replicated_factors(rule_b),
  )

  # vmap: no batching rule for custom_partitioning; the plain FFT conv batches.
  forward_v = custom_vmap(forward)

  @forward_v.def_vmap
  def _(axis_size, in_batched, lhs, rhs):
    in_axes = tuple(0 if b else None for b in in_batched)
    return jax.vmap(plain, in_axes=in_axes)(lhs, rhs), True

  backward_v = custom_vmap(backward)

  @backward_v.def_vmap
  def _(axis_size, in_batched, lhs, rhs, g):
    in_axes = tuple(0 if b else None for b in in_batched)
    return jax.vmap(backward_plain, in_axes=in_axes)(lhs, rhs, g), (True, True)

  @jax.custom_vjp
  def conv(lhs, rhs):
    return forward_v(lhs, rhs)

  def conv_fwd(lhs, rhs):
    return forward_v(lhs, rhs), (lhs, rhs)

  def conv_bwd(res, g):
    lhs, rhs = res
    return backward_v(lhs, rhs, g)

  conv.defvjp(conv_fwd, conv_bwd)
  return conv
