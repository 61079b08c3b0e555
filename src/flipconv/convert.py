"""Kernel conversion between conventions: a permutation and, where flips differ, a flip.

A kernel ``k`` used under convention ``src`` computes the same as
``convert_kernel(k, src, dst)`` used under ``dst``: its axes are permuted from
``src``'s kernel layout to ``dst``'s, and its spatial axes are reversed where the
two conventions' flips differ. Nothing else happens to the data, so a
conversion and its inverse give back the original bit for bit, for any dtype.

Two kernels need a reshape as well as a permutation, and have their own
functions: depthwise kernels (:func:`convert_depthwise_kernel`: Keras stores
``(kh, kw, C, multiplier)``, TFLite ``(1, kh, kw, C * multiplier)``, the others a
grouped kernel with ``groups = C``), and the dense kernel after a flatten
(:func:`convert_linear_kernel` with ``feature_shape``: NCHW and NHWC features
flatten in different orders).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from flipconv._layouts import generalize, spatial_letters
from flipconv._trees import host_array
from flipconv._validate import is_int, shape_str
from flipconv.registry import Convention, get_convention

KINDS = ("conv", "conv_transpose", "depthwise", "linear")


@dataclasses.dataclass(frozen=True)
class KernelPlan:
  """What converting one kernel does: ``permutation`` (``np.transpose`` axes) then ``flip``.

  A plan for a depthwise or flattened dense kernel also reshapes: the source is
  first reshaped to ``expand`` (splitting an axis, or adding one of size 1),
  then permuted, then reshaped to ``reshape`` (merging or dropping axes), and
  finally flipped.

  Attributes:
    kind: ``"conv"``, ``"conv_transpose"``, ``"depthwise"`` or ``"linear"``.
    src_layout, dst_layout: the kernel layouts, generalised to the kernel's rank.
    permutation: axes of the (expanded) source in the order of the destination's.
    flip_axes: axes of the *destination* kernel that are reversed (empty: no flip).
    expand: the shape the source is reshaped to before permuting (``None``: none).
    reshape: the destination's shape, reshaped to after permuting (``None``: none).
  """

  kind: str
  src_layout: str
  dst_layout: str
  permutation: tuple[int, ...]
  flip_axes: tuple[int, ...]
  expand: tuple[int, ...] | None = None
  reshape: tuple[int, ...] | None = None

  @property
  def flip(self) -> bool:
    return bool(self.flip_axes)

  @property
  def identity(self) -> bool:
    """Both conventions store the kernel alike: nothing to do."""
    return (
      not self.flip_axes
      and self.expand is None
      and self.reshape is None
      and self.permutation == tuple(range(len(self.permutation)))
    )

  def describe(self) -> str:
    """What is done, in words: ``"OIHW -> HWIO: transpose (2, 3, 1, 0), flip H W"``."""
    reshaped = self.expand is not None or self.reshape is not None
    return describe_change(
      self.src_layout, self.dst_layout, self.permutation, self.flip_axes, reshaped=reshaped
    )

  def new_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
    if self.reshape is not None:
      return self.reshape
    shape = self.expand if self.expand is not None else shape
    return tuple(shape[a] for a in self.permutation)


def describe_change(
  src_layout: str,
  dst_layout: str,
  permutation: tuple[int, ...],
  flip_axes: tuple[int, ...],
  *,
  reshaped: bool = False,
) -> str:
  """A kernel conversion in words (:class:`KernelPlan`, :class:`flipconv.Change`)."""
  moved = permutation != tuple(range(len(permutation)))
  if not (moved or flip_axes or reshaped):
    return f"{src_layout}: unchanged"
  what = ["reshape"] if reshaped else []
  if moved:
    what.append(f"transpose {permutation}")
  if flip_axes:
    what.append("flip " + " ".join(dst_layout[a] for a in flip_axes))
  return f"{src_layout} -> {dst_layout}: " + ", ".join(what)


def _kernel_layouts(src: Convention, dst: Convention, n: int, transposed: bool) -> tuple[str, str]:
  """The two conventions' kernel layouts for ``n`` spatial dims, with matching letters."""
  s_layout = generalize(src.transpose_kernel_layout if transposed else src.kernel_layout, n)
  d_layout = generalize(dst.transpose_kernel_layout if transposed else dst.kernel_layout, n)
  if sorted(s_layout) != sorted(d_layout):
    # Different spatial letters (user-made conventions): match them by order.
    s_sp, d_sp = spatial_letters(s_layout, "kernel"), spatial_letters(d_layout, "kernel")
    s_layout = s_layout.translate(str.maketrans(s_sp, d_sp))
  return s_layout, d_layout


def _flip_axes(src_flip: bool, dst_flip: bool, d_layout: str) -> tuple[int, ...]:
  if src_flip == dst_flip:
    return ()
  return tuple(d_layout.index(c) for c in spatial_letters(d_layout, "kernel"))


def kernel_plan(
  ndim: int,
  src: str | Convention,
  dst: str | Convention,
  *,
  kind: str = "conv",
  where: str = "convert_kernel",
) -> KernelPlan:
  """The permutation and flip that take a rank-``ndim`` kernel from ``src`` to ``dst``.

  ``kind`` is ``"conv"``, ``"conv_transpose"`` or ``"linear"`` (a dense kernel,
  ``ndim == 2``: ``linear_layout`` ``OI`` <-> ``IO``). Depthwise kernels need
  the shape: see :func:`depthwise_plan`.
  """
  if kind not in ("conv", "conv_transpose", "linear"):
    raise ValueError(
      f"{where}: kind must be one of conv, conv_transpose, linear, got {kind!r}"
      + (" (use depthwise_plan, which needs the shape)" if kind == "depthwise" else "")
      + "."
    )
  s, d = get_convention(src), get_convention(dst)
  if kind == "linear":
    if ndim != 2:
      raise ValueError(f"{where}: a dense kernel has rank 2, got rank {ndim}.")
    return KernelPlan(
      "linear",
      s.linear_layout,
      d.linear_layout,
      tuple(s.linear_layout.index(c) for c in d.linear_layout),
      (),
    )
  if ndim < 3:
    raise ValueError(
      f"{where}: a conv kernel has rank >= 3 (O, I and spatial axes), got rank {ndim}."
    )
  transposed = kind == "conv_transpose"
  s_layout, d_layout = _kernel_layouts(s, d, ndim - 2, transposed)
  permutation = tuple(s_layout.index(c) for c in d_layout)
  flip_axes = _flip_axes(
    s.transpose_flip if transposed else s.flip, d.transpose_flip if transposed else d.flip, d_layout
  )
  return KernelPlan(kind, s_layout, d_layout, permutation, flip_axes)


def apply_plan(kernel: Any, plan: KernelPlan) -> Any:
  """Permutes and flips one kernel; NumPy stays NumPy, jax.Array stays jax.Array.

  A torch tensor (``requires_grad`` too) becomes NumPy, through a view where torch allows.
  """
  kernel = host_array(kernel, "kernel", f"convert ({plan.kind} kernel)")
  if isinstance(kernel, (jax.Array, jax.core.Tracer)):
    out = kernel.reshape(plan.expand) if plan.expand is not None else kernel
    out = jnp.transpose(out, plan.permutation)
    out = out.reshape(plan.reshape) if plan.reshape is not None else out
    return jax.lax.rev(out, plan.flip_axes) if plan.flip_axes else out
  kernel = np.asarray(kernel)
  if plan.identity:
    return np.ascontiguousarray(kernel)  # no copy where it is contiguous already
  return permute_numpy(kernel, plan)


def permute_numpy(array: Any, plan: KernelPlan) -> np.ndarray:
  """Applies a plan to a NumPy array in one pass over its bytes; the dtype is kept.

  NumPy's strided copy walks the output in order, reading the source across
  cache lines when the source's fastest axis is not the output's. Copying in
  column tiles one cache line wide keeps the lines it reads in cache (about
  1.4x faster on ResNet kernels; see ``benchmarks/bench_params.py``). A plan
  that reshapes after permuting (depthwise, dense after a flatten) and flips
  takes a second pass, for the flip.
  """
  a = np.asarray(array)
  if plan.expand is not None:
    a = a.reshape(plan.expand)
  src = a.transpose(plan.permutation)
  if plan.flip_axes and plan.reshape is None:
    src = np.flip(src, plan.flip_axes)
  out = np.empty(src.shape, a.dtype)
  _copy_tiled(out, src)
  if plan.reshape is not None:
    out = out.reshape(plan.reshape)  # a view: out is C-contiguous
    if plan.flip_axes:
      out = np.ascontiguousarray(np.flip(out, plan.flip_axes))
  return out


_SMALL = 1 << 16  # elements: below this the plain copy is as fast
_TILE_BYTES = 64  # one cache line


def _copy_tiled(out: np.ndarray, src: np.ndarray) -> None:
  axes = [d for d in range(out.ndim) if out.shape[d] > 1]
  if out.size < _SMALL or len(axes) < 2:
    np.copyto(out, src)
    return
  last = axes[-1]
  fastest = min(axes, key=lambda d: abs(src.strides[d]))
  if fastest == last:
    np.copyto(out, src)
    return
  step = max(1, _TILE_BYTES // out.itemsize)
  index = [slice(None)] * out.ndim
  for j in range(0, out.shape[last], step):
    index[last] = slice(j, j + step)
    np.copyto(out[tuple(index)], src[tuple(index)])


def _check_transposed(transposed: Any, where: str) -> None:
  if not isinstance(transposed, (bool, np.bool_)):
    raise TypeError(f"{where}: transposed must be True or False, got {transposed!r}.")


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
  conventions' ``transpose_kernel_layout`` and ``transpose_flip``). Grouped
  kernels convert the same way. For depthwise kernels stored in a framework's
  own depthwise form (Keras ``DepthwiseConv2D``, TFLite ``DEPTHWISE_CONV_2D``)
  use :func:`convert_depthwise_kernel`; for dense kernels,
  :func:`convert_linear_kernel`.

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
  _check_transposed(transposed, where)
  plan = kernel_plan(
    np.ndim(kernel), src, dst, kind="conv_transpose" if transposed else "conv", where=where
  )
  return apply_plan(kernel, plan)


# ---------------------------------------------------------------------------
# Depthwise kernels


def depthwise_layout(convention: Convention, n: int) -> str:
  """A convention's depthwise kernel layout for ``n`` spatial dims.

  Either a grouped-kernel layout (letters ``O``, ``I`` and spatial; ``I`` has
  size 1 and ``O = C * multiplier``, channel ``c * multiplier + m``), or a
  layout with ``C`` (input channel) and ``M`` (multiplier) in place of ``O`` and
  ``I`` (Keras: ``"HWCM"``).
  """
  layout = convention.depthwise_kernel_layout or convention.kernel_layout
  # C and M stand where O and I would: generalise them as kernel letters.
  as_oi = layout.translate(str.maketrans("CM", "OI"))
  out = generalize(as_oi, n)
  return out.translate(str.maketrans("OI", "CM")) if "C" in layout else out


def _expanded(layout: str) -> str:
  """The layout with O split into C M in place, and I (size 1) appended if absent."""
  return layout.replace("O", "CM") if "O" in layout else layout + "I"


def depthwise_plan(
  shape: Sequence[int],
  src: str | Convention,
  dst: str | Convention,
  *,
  groups: int | None = None,
  where: str = "convert_depthwise_kernel",
) -> KernelPlan:
  """The reshape, permutation and flip that take a depthwise kernel from ``src`` to ``dst``.

  Args:
    shape: the kernel's shape, in ``src``'s depthwise layout.
    src, dst: conventions (names or :class:`Convention`).
    groups: the input channels ``C`` (= ``groups`` of the grouped conv); needed
      only to split a grouped kernel's ``O = C * multiplier`` axis into
      ``(C, multiplier)``.
    where: the public function's name, for error messages.

  Returns:
    A :class:`KernelPlan` of kind ``"depthwise"``.
  """
  shape = tuple(int(s) for s in shape)
  if len(shape) < 3:
    raise ValueError(
      f"{where}: a depthwise kernel has rank >= 3 (channel axes and at least "
      f"one spatial axis), got shape {shape_str(shape)}."
    )
  s, d = get_convention(src), get_convention(dst)
  n = len(shape) - 2
  s_layout, d_layout = depthwise_layout(s, n), depthwise_layout(d, n)
  s_sp, d_sp = spatial_letters(s_layout, "kernel"), spatial_letters(d_layout, "kernel")
  s_sp, d_sp = s_sp.replace("C", "").replace("M", ""), d_sp.replace("C", "").replace("M", "")
  if sorted(s_sp) != sorted(d_sp):  # different spatial letters: match them by order
    s_layout = s_layout.translate(str.maketrans(s_sp, d_sp))
  if groups is not None and (not is_int(groups) or groups < 1):
    raise ValueError(
      f"{where}: groups must be a positive int (the input channels C), got {groups!r}."
    )
  sizes = dict(zip(s_layout, shape, strict=True))
  if "O" in s_layout:
    if sizes["I"] != 1:
      raise ValueError(
        f"{where}: a depthwise kernel in {s.name!r}'s grouped layout {s_layout!r} has "
        f"I = 1, got shape {shape_str(shape)} (I = {sizes['I']}); is it a regular conv "
        "kernel? Then use convert_kernel."
      )
    o = sizes["O"]
    if groups is None:
      if "C" in d_layout:
        raise ValueError(
          f"{where}: converting {s.name!r}'s grouped kernel of shape {shape_str(shape)} to "
          f"{d.name!r}'s layout {d_layout!r} splits O = {o} into (C, multiplier); pass "
          "groups=C, the number of input channels."
        )
      groups = o  # any split works: C and M stay together in the same order
    if o % groups:
      raise ValueError(
        f"{where}: groups={groups} does not divide O = {o} of the kernel of "
        f"shape {shape_str(shape)} ({s.name!r} layout {s_layout!r})."
      )
    sizes.update(C=int(groups), M=o // int(groups))
  else:
    if groups is not None and groups != sizes["C"]:
      raise ValueError(
        f"{where}: groups={groups} but the kernel of shape {shape_str(shape)} "
        f"({s.name!r} layout {s_layout!r}) has C = {sizes['C']}."
      )
    sizes["I"] = 1
  s_exp, d_exp = _expanded(s_layout), _expanded(d_layout)
  expand = tuple(sizes[c] for c in s_exp)
  permutation = tuple(s_exp.index(c) for c in d_exp)
  new = tuple(sizes["C"] * sizes["M"] if c == "O" else sizes[c] for c in d_layout)
  flip_axes = tuple(d_layout.index(c) for c in d_sp) if s.flip != d.flip else ()
  return KernelPlan(
    "depthwise",
    s_layout,
    d_layout,
    permutation,
    flip_axes,
    expand=expand if expand != shape else None,
    reshape=new if new != tuple(expand[a] for a in permutation) else None,
  )


def convert_depthwise_kernel(
  kernel: ArrayLike,
  src: str | Convention,
  dst: str | Convention,
  *,
  groups: int | None = None,
) -> Any:
  """Converts a depthwise kernel between the frameworks' depthwise forms.

  A depthwise conv with ``C`` input channels and channel multiplier ``M`` is a
  grouped conv with ``groups = C``, ``I = 1`` and ``O = C * M``: output channel
  ``c * M + m`` reads input channel ``c``. Frameworks store its kernel as

  ========================  ===============================  =========================
  convention                depthwise kernel                 layout
  ========================  ===============================  =========================
  tensorflow / keras        ``(kh, kw, C, M)``               ``HWCM``
  tflite                    ``(1, kh, kw, C * M)``           ``IHWO`` (grouped)
  flax / haiku              ``(kh, kw, 1, C * M)``           ``HWIO`` (grouped)
  pytorch, onnx, ...        ``(C * M, 1, kh, kw)``           ``OIHW`` (grouped)
  ========================  ===============================  =========================

  (a convention's ``depthwise_kernel_layout``, else its ``kernel_layout``).
  The result, used with ``dst`` and ``groups=C``, computes what ``kernel``
  computed with ``src``; the spatial axes are reversed where the flips differ.
  The round trip is bit-exact.

  Args:
    kernel: the depthwise kernel in ``src``'s depthwise form (any spatial rank).
    src: the convention it comes from (name or Convention).
    dst: the convention it goes to.
    groups: ``C``, the input channels (PyTorch ``groups``, Flax
      ``feature_group_count``). Needed only to go from a grouped form to the
      ``(kh, kw, C, M)`` form, where ``C * M`` must be split; checked otherwise.

  Returns:
    The converted kernel: NumPy for NumPy input, ``jax.Array`` for ``jax.Array``.

  Examples:
    >>> import numpy as np, flipconv as fc
    >>> k = np.arange(3 * 3 * 4 * 2).reshape(3, 3, 4, 2)   # Keras DepthwiseConv2D
    >>> fc.convert_depthwise_kernel(k, "keras", "pytorch").shape   # groups=4
    (8, 1, 3, 3)
    >>> w = fc.convert_depthwise_kernel(k, "keras", "flax")        # (3, 3, 1, 8)
    >>> bool((fc.convert_depthwise_kernel(w, "flax", "keras", groups=4) == k).all())
    True
  """
  plan = depthwise_plan(np.shape(kernel), src, dst, groups=groups)
  return apply_plan(kernel, plan)


# ---------------------------------------------------------------------------
# Dense kernels


def _feature_orders(
  s: Convention, d: Convention, feature_shape: Any, feature_order: Any, where: str
) -> tuple[str, str, dict[str, int]]:
  """The flatten orders before and after, and each feature letter's size."""
  named = isinstance(feature_shape, Mapping)
  if feature_order is None:
    # Each convention flattens one example's feature map in its data layout.
    n = len(feature_shape) - 1
    if n < 0:
      raise ValueError(f"{where}: feature_shape must have the channel axis, got ().")
    s_data = generalize(s.layout, n).replace("N", "") if n else "C"
    d_data = generalize(d.layout, n).replace("N", "") if n else "C"
    s_sp, d_sp = spatial_letters(s_data, "data"), spatial_letters(d_data, "data")
    if sorted(s_sp) != sorted(d_sp):  # different spatial letters: match them by order
      s_data = s_data.translate(str.maketrans(s_sp, d_sp))
  else:
    if (
      not isinstance(feature_order, Sequence)
      or isinstance(feature_order, str)
      or len(feature_order) != 2
      or not all(isinstance(o, str) and o.isalpha() and o.isupper() for o in feature_order)
    ):
      raise TypeError(
        f"{where}: feature_order must be a pair of strings of feature letters, the "
        f"flatten order before and after, e.g. ('CHW', 'HWC'); got {feature_order!r}."
      )
    s_data, d_data = feature_order
    if len(set(s_data)) != len(s_data) or sorted(s_data) != sorted(d_data):
      raise ValueError(
        f"{where}: feature_order {feature_order!r} must name the same letters, each "
        "once, in both orders."
      )
  if "O" in s_data or "I" in s_data:
    raise ValueError(
      f"{where}: the feature letters {s_data!r} may not use O or I (the dense kernel's "
      "own axes); name the channels C."
    )
  if named:
    if sorted(feature_shape) != sorted(s_data):
      raise ValueError(
        f"{where}: feature_shape names the letters {''.join(feature_shape)!r} but the "
        f"flatten order is {s_data!r}; name each letter once."
      )
    sizes = dict(feature_shape)
  else:
    if len(feature_shape) != len(s_data):
      raise ValueError(
        f"{where}: feature_shape {shape_str(feature_shape)} has {len(feature_shape)} "
        f"axes but the flatten order {s_data!r} has {len(s_data)} letters."
      )
    sizes = dict(zip(s_data, feature_shape, strict=True))
  return s_data, d_data, sizes


def linear_plan(
  shape: Sequence[int],
  src: str | Convention,
  dst: str | Convention,
  *,
  feature_shape: Sequence[int] | Mapping[str, int] | None = None,
  feature_order: tuple[str, str] | None = None,
  where: str = "convert_linear_kernel",
) -> KernelPlan:
  """The reshape and permutation that take a dense kernel from ``src`` to ``dst``.

  See :func:`convert_linear_kernel`.
  """
  shape = tuple(int(s) for s in shape)
  if len(shape) != 2:
    raise ValueError(f"{where}: a dense kernel has rank 2, got shape {shape_str(shape)}.")
  s, d = get_convention(src), get_convention(dst)
  plan = kernel_plan(2, s, d, kind="linear", where=where)
  if feature_shape is None:
    if feature_order is not None:
      raise ValueError(
        f"{where}: feature_order={feature_order!r} needs feature_shape, the size of "
        "each feature letter (e.g. {'C': 64, 'H': 4, 'W': 4})."
      )
    return plan
  values = feature_shape.values() if isinstance(feature_shape, Mapping) else feature_shape
  if (
    not isinstance(feature_shape, (Sequence, Mapping))
    or isinstance(feature_shape, str)
    or not all(is_int(f) and f >= 1 for f in values)
  ):
    raise TypeError(
      f"{where}: feature_shape must be a sequence of positive ints (one example's "
      f"feature map before the flatten, in {s.name!r}'s layout) or a mapping of "
      f"feature letters to positive ints; got {feature_shape!r}."
    )
  s_data, d_data, sizes = _feature_orders(s, d, feature_shape, feature_order, where)
  sizes = {c: int(n) for c, n in sizes.items()}
  i_size = shape[s.linear_layout.index("I")]
  n_features = math.prod(sizes.values())
  if n_features != i_size:
    raise ValueError(
      f"{where}: feature_shape {feature_shape!r} has {n_features} elements but the "
      f"dense kernel of shape {shape_str(shape)} ({s.name!r} layout "
      f"{s.linear_layout!r}) has I = {i_size} inputs."
    )
  sizes["O"] = shape[s.linear_layout.index("O")]
  s_exp = s.linear_layout.replace("I", s_data)
  d_exp = d.linear_layout.replace("I", d_data)
  return KernelPlan(
    "linear",
    s.linear_layout,
    d.linear_layout,
    tuple(s_exp.index(c) for c in d_exp),
    (),
    expand=tuple(sizes[c] for c in s_exp),
    reshape=plan.new_shape(shape),
  )


def convert_linear_kernel(
  kernel: ArrayLike,
  src: str | Convention,
  dst: str | Convention,
  *,
  feature_shape: Sequence[int] | Mapping[str, int] | None = None,
  feature_order: tuple[str, str] | None = None,
) -> Any:
  """Converts a dense kernel: ``OI`` <-> ``IO``, and the rows of a flattened feature map.

  Dense kernels are ``(out, in)`` (``linear_layout="OI"``: PyTorch, ONNX Gemm
  with ``transB=1``, TFLite, Caffe, Equinox) or ``(in, out)`` (``"IO"``: Flax,
  Keras, Haiku, Lasagne). A dense layer right after a flatten has a second
  trap: ``torch.flatten`` of an NCHW feature map orders its inputs
  ``(c, h, w)``, a flatten of NHWC ``(h, w, c)``, and a model that permutes
  before flattening has yet another order. With ``feature_shape`` the
  kernel's inputs are permuted from the source's flatten order to the
  destination's as well, so that::

    dense(flatten(x), kernel)  ==  dense(flatten(x'), convert_linear_kernel(kernel, ...))

  with ``x'`` the same features in the destination's order. The round trip is bit-exact.

  The flatten orders are those of the conventions' data layouts (``"CHW"`` for
  PyTorch, ``"HWC"`` for Flax) unless ``feature_order=(src_order, dst_order)``
  names them: any two orders of the same letters, e.g. ``("WHC", "HWC")`` for
  a PyTorch model that flattens after ``x.permute(0, 3, 2, 1)``.

  Args:
    kernel: a rank-2 dense kernel in ``src``'s ``linear_layout``.
    src: the convention it comes from (name or Convention).
    dst: the convention it goes to.
    feature_shape: the feature map's shape before the flatten (without the
      batch axis): a tuple in the source's flatten order (``(C, H, W)`` for
      PyTorch), or a mapping of letters to sizes (``{"C": 64, "H": 4, "W": 4}``);
      ``None``: the inputs are not a flattened feature map (only ``OI`` <-> ``IO``).
    feature_order: ``(src_order, dst_order)``, the letters in the order each
      side flattens them; ``None``: the conventions' data layouts.

  Returns:
    The converted kernel: NumPy for NumPy input, ``jax.Array`` for ``jax.Array``.

  Raises:
    ValueError: the feature sizes do not multiply to the kernel's inputs, or the
      two orders do not name the same letters.

  Examples:
    >>> import numpy as np, flipconv as fc
    >>> w = np.arange(2 * 12).reshape(2, 12)        # nn.Linear(12, 2) after flatten of (3, 2, 2)
    >>> fc.convert_linear_kernel(w, "pytorch", "flax").shape
    (12, 2)
    >>> fc.convert_linear_kernel(w, "pytorch", "flax", feature_shape=(3, 2, 2))[:4, 0]
    array([0, 4, 8, 1])
    >>> fc.convert_linear_kernel(w, "pytorch", "flax", feature_shape={"C": 3, "H": 2, "W": 2},
    ...                          feature_order=("WHC", "HWC"))[:4, 0]
    array([0, 1, 2, 6])
  """
  plan = linear_plan(
    np.shape(kernel), src, dst, feature_shape=feature_shape, feature_order=feature_order
  )
  return apply_plan(kernel, plan)
