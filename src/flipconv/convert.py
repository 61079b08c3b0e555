"""Kernel conversion between conventions: a permutation and, where flips differ, a flip.

A kernel ``k`` used under convention ``src`` computes the same as
``convert_kernel(k, src, dst)`` used under ``dst``: its axes are permuted from
``src``'s kernel layout to ``dst``'s, and its spatial axes are reversed where the
two conventions' flips differ. Nothing else happens to the data, so a
conversion and its inverse give back the original bit for bit, for any dtype.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from flipconv._layouts import generalize, spatial_letters
from flipconv.registry import Convention, get_convention

KINDS = ("conv", "conv_transpose")


@dataclasses.dataclass(frozen=True)
class KernelPlan:
  """What converting one kernel does: ``permutation`` (``np.transpose`` axes) then ``flip``.

  Attributes:
    kind: ``"conv"`` or ``"conv_transpose"``.
    src_layout, dst_layout: the kernel layouts, generalised to the kernel's rank.
    permutation: axes of the source kernel in the order of the destination's.
    flip_axes: axes of the *destination* kernel that are reversed (empty: no flip).
  """

  kind: str
  src_layout: str
  dst_layout: str
  permutation: tuple[int, ...]
  flip_axes: tuple[int, ...]

  @property
  def flip(self) -> bool:
    return bool(self.flip_axes)

  def new_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(shape[a] for a in self.permutation)


def kernel_plan(ndim: int, src: str | Convention, dst: str | Convention, *,
                kind: str = "conv", where: str = "convert_kernel") -> KernelPlan:
  """The permutation and flip that take a rank-``ndim`` kernel from ``src`` to ``dst``."""
  if kind not in KINDS:
    raise ValueError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}.")
  if ndim < 3:
    raise ValueError(f"{where}: a conv kernel has rank >= 3 (O, I and spatial axes), got rank "
                     f"{ndim}.")
  s, d = get_convention(src), get_convention(dst)
  transposed = kind == "conv_transpose"
  n = ndim - 2
  s_layout = generalize(s.transpose_kernel_layout if transposed else s.kernel_layout, n)
  d_layout = generalize(d.transpose_kernel_layout if transposed else d.kernel_layout, n)
  if sorted(s_layout) != sorted(d_layout):
    # Different spatial letters (user-made conventions): match them by order.
    s_sp, d_sp = spatial_letters(s_layout, "kernel"), spatial_letters(d_layout, "kernel")
    s_layout = s_layout.translate(str.maketrans(s_sp, d_sp))
  permutation = tuple(s_layout.index(c) for c in d_layout)
  s_flip = s.transpose_flip if transposed else s.flip
  d_flip = d.transpose_flip if transposed else d.flip
  flip_axes = (tuple(d_layout.index(c) for c in spatial_letters(d_layout, "kernel"))
               if s_flip != d_flip else ())
  return KernelPlan(kind, s_layout, d_layout, permutation, flip_axes)


def apply_plan(kernel: Any, plan: KernelPlan) -> Any:
  """Permutes and flips one kernel; NumPy stays NumPy, jax.Array stays jax.Array."""
  if isinstance(kernel, jax.Array) or isinstance(kernel, jax.core.Tracer):
    out = jnp.transpose(kernel, plan.permutation)
    return jax.lax.rev(out, plan.flip_axes) if plan.flip_axes else out
  out = np.transpose(np.asarray(kernel), plan.permutation)
  if plan.flip_axes:
    out = np.flip(out, plan.flip_axes)
  return np.ascontiguousarray(out)


def convert_kernel(
    kernel: ArrayLike,
    src: str | Convention,
    dst: str | Convention,
    *,
    transposed: bool = False,
) -> Any:
  """Re-lays-out and (where the flips differ) flips a kernel from ``src`` to ``dst``.

  Used with ``dst``, the result computes exactly what ``kernel`` computed
  with ``src``::

    conv(x, k, convention=src) == conv(x', convert_kernel(k, src, dst), convention=dst)

  with ``x'`` the same input in ``dst``'s layout (and likewise for
  :func:`flipconv.conv_transpose` with ``transposed=True``, which uses the
  conventions' ``transpose_kernel_layout`` and ``transpose_flip``).

  Args:
    kernel: a conv kernel in ``src``'s kernel layout (any spatial rank: the
      layouts, written for 2-D, are generalised to ``kernel.ndim - 2``).
    src: the convention the kernel was trained in (name or Convention).
    dst: the convention it will be used with.
    transposed: the kernel belongs to a transposed-conv layer.

  Returns:
    The converted kernel: a NumPy array for NumPy input (no device round trip),
    a ``jax.Array`` for ``jax.Array`` input (jit-able, shardings follow).

  Examples:
    >>> import numpy as np, flipconv as fc
    >>> w = np.arange(2 * 3 * 2 * 2).reshape(2, 3, 2, 2)   # PyTorch OIHW
    >>> fc.convert_kernel(w, "pytorch", "flax").shape      # Flax HWIO
    (2, 2, 3, 2)
    >>> fc.convert_kernel(w, "lasagne", "pytorch")[0, 0]   # flipped spatially
    array([[3, 2],
           [1, 0]])
  """
  where = "convert_kernel"
  if not isinstance(transposed, (bool, np.bool_)):
    raise TypeError(f"{where}: transposed must be True or False, got {transposed!r}.")
  ndim = np.ndim(kernel)
  plan = kernel_plan(ndim, src, dst, kind="conv_transpose" if transposed else "conv",
                     where=where)
  return apply_plan(kernel, plan)
