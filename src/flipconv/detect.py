"""``detect_convention``: which flip and layouts reproduce a layer's output.

Given one input, the kernel and the output of some framework's conv layer
(arrays exactly as that framework holds them), :func:`detect_convention`
names the registry conventions that reproduce the output, with the conv
arguments that do it. The search, cheapest first:

1. **Shapes prune.** Each registry convention (then, only where none matches,
   every flip x data layout x kernel layout of :data:`DATA_LAYOUTS` and
   :data:`KERNEL_LAYOUTS`) is checked against the shapes by
   :func:`flipconv._spec.resolve_conv`, without computing anything; the
   feature groups follow from the channel counts.
2. **Argument sets.** For each surviving layout pair, the arguments not given
   are enumerated among the values that map the input's sizes to the output's
   (per spatial dimension): tier 0: dilation 1, the padding names and
   symmetric ints, every fitting stride; tier 1: dilation 1, explicit
   ``(low, high)`` pairs; tiers 2 to :data:`MAX_DILATION`: that dilation (where
   the dilated kernel fits in the input), one stride for all dimensions, names
   and ints. Argument sets that compute the same thing (same low padding, stride
   and dilation wherever they matter) are evaluated once. The search stops
   after the first tier that gives a match. The values that fit are ranges in
   closed form, enumerated lazily: at most :data:`MAX_CANDIDATES` spellings and
   :data:`MAX_ARGUMENT_SETS` argument sets per layout pair and tier, and no
   argument set whose input window exceeds a fixed element count, so that
   neither memory nor time grows with an argument's value (``padding=10**9``
   costs what ``padding=1`` does). A search that reaches a budget without a
   match raises a ``ValueError`` that says so.
3. **Computing.** Argument sets sharing a stride and dilation are stacked and
   run as one jit-compiled conv for both flips at once (the flipped kernel is
   stacked with the kernel), so a typical layer costs one compiled conv.

A candidate matches when ``max|conv + bias - y| / max|y| <= rtol``; the
default ``rtol`` is ``max(4 eps, 4 sqrt(kernel.size) eps_f32)`` with ``eps``
that of the least precise floating dtype among the arrays (``eps_f32`` that
of the computation: float32, or float64 with x64 enabled).

Conventions that are the same on the given arrays (same flip and layouts,
e.g. ``pytorch``, ``onnx``, ``caffe``) are reported as one :class:`Match` that
names the first in registry order and lists the rest in ``equivalent``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from flipconv import _padding, _spec, ops, transpose
from flipconv._layouts import Layouts, default_spatial, generalize, parse_layouts
from flipconv._validate import as_bool, did_you_mean, shape_str
from flipconv.registry import Convention, conventions, get_convention

WHERE = "detect_convention"
"""The prefix of this module's error messages (``flipconv detect`` strips it)."""

MAX_DILATION = 8
"""Largest kernel dilation searched when ``dilation`` is not given."""

MAX_ARGUMENT_SETS = 256
"""Most argument sets evaluated per layout pair and tier (the rest is reported as cut)."""

MAX_CANDIDATES = 4096
"""Most spellings (stride x padding) examined per layout pair and tier. Enumeration is
lazy, so fixed arguments with huge values cost no memory; a search that reaches this
budget without a match raises a ``ValueError`` that says so."""

DATA_LAYOUTS = ("NC{s}", "N{s}C")
"""Data layouts tried for bare combinations (``{s}``: spatial letters; no ``N`` if unbatched)."""

KERNEL_LAYOUTS = ("OI{s}", "{s}IO", "{s}OI", "IO{s}", "O{s}I", "I{s}O")
"""Kernel layouts tried for bare combinations."""

# Padding names in the order they are preferred when several spell one computation.
_PADDING_NAMES = ("VALID", "SAME", "HALF", "FULL", "SAME_LOWER", "CAUSAL")

FIXABLE = (  # the conv arguments a caller (or a detect .npz) may fix
  "flip",
  "layout",
  "kernel_layout",
  "out_layout",
  "strides",
  "padding",
  "dilation",
  "groups",
  "input_dilation",
  "pad_mode",
)
_FORWARD_ONLY = ("input_dilation", "pad_mode")
_MAX_ELEMENTS = 1 << 25  # per compiled call: argument sets x flips x output (or window) size
_UNDETERMINED = "flip undetermined: the kernel is symmetric under flipping"


@dataclasses.dataclass(frozen=True)
class Match:
  """One convention (or bare flip/layout combination) that reproduces ``y``.

  Attributes:
    convention: the registry name, or ``None`` for a combination that no
      registry convention has.
    flip: ``True`` = true convolution (for ``transposed=True``: the flip of the
      forward conv the layer is the adjoint of).
    layout: the data layout of ``x`` (and ``y``).
    kernel_layout: the kernel's layout (forward-conv letters).
    error: ``max|conv(x, kernel, **kwargs) + bias - y| / max|y|``.
    kwargs: every argument such that ``fc.conv(x, kernel, **kwargs)`` (or
      ``fc.conv_transpose`` for ``transposed=True``) plus ``bias`` gives ``y``.
    note: what is ambiguous or worth knowing (``"flip undetermined: ..."``,
      other spellings of the padding, other argument sets that also match).
    equivalent: other registry conventions that compute exactly the same here
      (same flip and layouts).

  Examples:
    >>> import numpy as np, flipconv as fc
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((1, 2, 8)).astype(np.float32)   # N C W
    >>> k = rng.standard_normal((3, 2, 3)).astype(np.float32)   # O I W: a torch Conv1d(2, 3, 3)
    >>> y = fc.conv(x, k, convention="pytorch", padding=1)
    >>> m = fc.detect_convention(x, k, y)[0]
    >>> m.names
    ('pytorch', 'onnx', 'caffe', 'lasagne-mm', 'equinox')
    >>> m.flip, m.layout, m.kernel_layout, m.kwargs["padding"]
    (False, 'NCW', 'OIW', 'SAME')
  """

  convention: str | None
  flip: bool
  layout: str
  kernel_layout: str
  error: float
  kwargs: Mapping[str, Any] = dataclasses.field(hash=False)
  note: str = ""
  equivalent: tuple[str, ...] = ()

  @property
  def names(self) -> tuple[str, ...]:
    """The convention and its equivalents (empty for a bare combination)."""
    return ((self.convention,) if self.convention else ()) + self.equivalent


@dataclasses.dataclass(frozen=True)
class Search:
  """What :func:`search` tried and found (the report behind ``flipconv detect``).

  Attributes:
    matches: as :func:`detect_convention` returns them.
    tried: the conventions or combinations whose layouts fit the shapes.
    pruned: ``(name, reason)`` for each registry convention that did not fit.
    evaluated: how many distinct argument sets x flips were computed.
    cut: whether some tier had more than :data:`MAX_ARGUMENT_SETS` argument sets or
      :data:`MAX_CANDIDATES` spellings, or argument sets too large to evaluate.
    rtol: the error threshold used.
    closest: the smallest error seen and what gave it (``None`` if nothing ran).
  """

  matches: list[Match]
  tried: list[str]
  pruned: list[tuple[str, str]]
  evaluated: int
  cut: bool
  rtol: float
  closest: tuple[float, str] | None


def detect_convention(
  x: ArrayLike,
  kernel: ArrayLike,
  y: ArrayLike,
  *,
  transposed: bool = False,
  bias: ArrayLike | None = None,
  candidates: Iterable[str | Convention] | None = None,
  rtol: float | None = None,
  **conv_kwargs: Any,
) -> list[Match]:
  """Finds the conventions (flip and layouts) under which ``kernel`` maps ``x`` to ``y``.

  Pass one input, the kernel and the output of a conv layer of some framework,
  exactly as that framework holds them (bias separately). Arguments given in
  ``conv_kwargs`` are fixed; ``padding`` (names, ints, pairs), ``strides`` and
  ``dilation`` are otherwise searched among the values that fit the shapes
  (dilation up to :data:`MAX_DILATION`); ``groups`` follows from the shapes.
  Registry conventions come first; only when none of them reproduces ``y``
  are bare flip x layout combinations tried (:data:`DATA_LAYOUTS` x
  :data:`KERNEL_LAYOUTS`), reported with ``convention=None``.

  Ambiguity is reported, not hidden: conventions that compute the same on
  these arrays (same flip and layouts) come as one match with the others in
  ``equivalent``; a kernel symmetric under flipping (a 1x1 kernel, say)
  matches with both flips, each match noting ``"flip undetermined: the kernel
  is symmetric under flipping"``.

  Args:
    x: the layer's input.
    kernel: the layer's kernel (for ``transposed=True``: the transposed layer's
      stored kernel).
    y: the layer's output for ``x``.
    transposed: the layer is a transposed convolution; conventions are tried
      with their ``transpose_flip`` and ``transpose_kernel_layout`` and the
      matches' ``kwargs`` are for :func:`flipconv.conv_transpose`.
    bias: the layer's bias (one value per output channel), added to the conv.
    candidates: registry names or :class:`flipconv.Convention` objects to try
      instead of the whole registry (no bare combinations then).
    rtol: the largest relative error ``max|diff| / max|y|`` that counts as a
      match; default scaled to the dtypes (see the module docstring). Raise it
      for outputs computed in reduced precision (TF32 on GPUs, say).
    **conv_kwargs: fixed arguments of :func:`flipconv.conv`: ``flip``,
      ``layout``, ``kernel_layout``, ``out_layout``, ``strides``, ``padding``,
      ``dilation``, ``groups``, ``input_dilation``, ``pad_mode`` (the last two
      not with ``transposed=True``).

  Returns:
    The matches, best (smallest error) first; an empty list if nothing
    reproduces ``y``.

  Raises:
    TypeError: an array is not numeric, or an unknown keyword is given.
    ValueError: the arrays contain NaN/inf, ``y`` is all zeros, no convention
      or combination fits the shapes at all (the message says why for each
      convention), no argument values fit the fixed ones, or the search reached
      its budget (:data:`MAX_CANDIDATES`) without a match.

  Examples:
    >>> import numpy as np, flipconv as fc
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(1, 2, 6, 6)).astype(np.float32)   # NCHW
    >>> w = rng.normal(size=(3, 2, 3, 3)).astype(np.float32)   # OIHW
    >>> y = fc.conv(x, w, convention="lasagne", padding="HALF")
    >>> best = fc.detect_convention(x, w, y)[0]
    >>> best.names, best.flip, best.kwargs["padding"]
    (('theano', 'lasagne'), True, 'SAME')
  """
  return search(
    x, kernel, y, transposed=transposed, bias=bias, candidates=candidates, rtol=rtol, **conv_kwargs
  ).matches


# ---------------------------------------------------------------------------
# Inputs


def _array(value: Any, name: str) -> np.ndarray:
  if value is None:
    raise TypeError(f"{WHERE}: {name} must be an array, got None.")
  if isinstance(value, (str, bytes)):
    raise TypeError(f"{WHERE}: {name} must be an array, got {type(value).__name__} {value!r}.")
  try:
    arr = np.asarray(value)
  except Exception as e:  # e.g. a torch tensor that requires grad
    raise TypeError(
      f"{WHERE}: {name} ({type(value).__name__}) cannot be read as an array: {e}. Pass a "
      "NumPy or JAX array (a PyTorch tensor: t.detach().cpu().numpy())."
    ) from None
  if arr.dtype == np.bool_ or not jnp.issubdtype(arr.dtype, jnp.number):
    raise TypeError(
      f"{WHERE}: {name} has dtype {arr.dtype}; detection needs numeric arrays "
      "(float, int or complex)."
    )
  return arr


def _compute_dtype(arrays: Sequence[np.ndarray]) -> Any:
  dtype = jnp.float32
  for a in arrays:
    dtype = jnp.promote_types(dtype, a.dtype)
  return jax.dtypes.canonicalize_dtype(dtype)


def _default_rtol(arrays: Sequence[np.ndarray], dtype: Any, kernel_size: int) -> float:
  eps = [float(jnp.finfo(a.dtype).eps) for a in arrays if jnp.issubdtype(a.dtype, jnp.inexact)]
  low = max(eps, default=float(jnp.finfo(dtype).eps))
  return max(4 * low, 4 * math.sqrt(kernel_size) * float(jnp.finfo(dtype).eps))


def _fixed_args(kwargs: dict[str, Any], transposed: bool) -> dict[str, Any]:
  for key in kwargs:
    if key not in FIXABLE:
      raise TypeError(
        f"{WHERE}: unexpected keyword argument {key!r}"
        f"{did_you_mean(key, FIXABLE)}; the conv arguments it can fix are "
        f"{', '.join(FIXABLE)}."
      )
    if transposed and key in _FORWARD_ONLY:
      raise TypeError(
        f"{WHERE}: {key} is an argument of conv, not of conv_transpose; do not "
        "pass it with transposed=True."
      )
  fixed = dict(kwargs)
  if fixed.get("flip") is not None:
    fixed["flip"] = as_bool(fixed["flip"], "flip", WHERE)
  return fixed


# ---------------------------------------------------------------------------
# Layout pairs ("combos") and their shape checks


@dataclasses.dataclass
class _Combo:
  """One data layout + kernel layout, checked against the shapes."""

  layouts: Layouts
  names: dict[bool, list[str]]  # flip -> registry names (empty lists: bare)
  groups: int = 0
  dims: tuple[tuple[int, int, int], ...] = ()  # per dim: (size in, size out, kernel size)
  x_c: np.ndarray | None = None  # canonical (N, C, spatial...) arrays
  k_c: np.ndarray | None = None
  y_c: np.ndarray | None = None
  bias_c: np.ndarray | None = None

  def describe(self, flip: bool | None = None) -> str:
    f = "" if flip is None else f"flip={flip}, "
    return f"{f}layout {self.layouts.lhs!r}, kernel_layout {self.layouts.rhs!r}"


def _canonical(arr: np.ndarray, layout: str, spatial: str, first: str, second: str) -> np.ndarray:
  """``arr`` with axes (first, second, spatial...); a batch axis added if ``first`` is absent."""
  if first not in layout:
    arr, layout = arr[None], first + layout
  return np.transpose(arr, [layout.index(c) for c in (first + second + spatial)])


def _check_combo(
  combo: _Combo,
  x: np.ndarray,
  k: np.ndarray,
  y: np.ndarray,
  bias: np.ndarray | None,
  fixed: dict[str, Any],
  transposed: bool,
) -> str:
  """Fills ``combo`` from the shapes; returns ``""`` or why the layouts do not fit."""
  lay = combo.layouts
  # The forward conv of a transposed layer reads y and writes x.
  src, dst = (y, x) if transposed else (x, y)
  src_layout, dst_layout = (lay.out, lay.lhs) if transposed else (lay.lhs, lay.out)
  src_name, dst_name = ("y", "x") if transposed else ("x", "y")
  try:
    fwd = Layouts(src_layout, lay.rhs, dst_layout)
    _spec.check_ranks(src.shape, k.shape, fwd, WHERE, x_name=src_name)
    if dst.ndim != len(dst_layout):
      return (
        f"{dst_name} has rank {dst.ndim} (shape {shape_str(dst.shape)}) but its layout "
        f"{dst_layout!r} has {len(dst_layout)} axes"
      )
    c_src = src.shape[src_layout.index("C")]
    k_in, k_out = k.shape[lay.rhs.index("I")], k.shape[lay.rhs.index("O")]
    groups = fixed.get("groups")
    if groups is None:
      groups = c_src // k_in if k_in and c_src % k_in == 0 else 1
    _spec.check_groups(
      groups, c_src, k_in, k_out, _spec.context(src.shape, k.shape, fwd, src_name), WHERE, src_name
    )
  except (ValueError, TypeError) as e:
    return str(e).removeprefix(f"{WHERE}: ")
  c_dst = dst.shape[dst_layout.index("C")]
  if c_dst != k_out:
    return (
      f"{dst_name} has {c_dst} channels but the kernel has {k_out} output channels (O) "
      f"(kernel_layout {lay.rhs!r}, kernel.shape={shape_str(k.shape)}, "
      f"{dst_name}.shape={shape_str(dst.shape)})"
    )
  if "N" in lay.lhs and x.shape[lay.lhs.index("N")] != y.shape[lay.out.index("N")]:
    return (
      f"x has batch {x.shape[lay.lhs.index('N')]} but y has "
      f"{y.shape[lay.out.index('N')]} (layout {lay.lhs!r})"
    )
  c_out = y.shape[lay.out.index("C")]
  if bias is not None and bias.size != c_out:
    return f"bias has {bias.size} values but y has {c_out} channels (layout {lay.out!r})"
  sp = lay.spatial
  src_sp = [src.shape[src_layout.index(c)] for c in sp]
  dst_sp = [dst.shape[dst_layout.index(c)] for c in sp]
  k_sp = [k.shape[lay.rhs.index(c)] for c in sp]
  if 0 in src_sp or 0 in dst_sp:
    return "an empty spatial axis"
  combo.groups = int(groups)
  combo.dims = tuple(zip(src_sp, dst_sp, k_sp, strict=True))
  combo.x_c = _canonical(x, lay.lhs, sp, "N", "C")
  combo.y_c = _canonical(y, lay.out, sp, "N", "C")
  combo.k_c = _canonical(k, lay.rhs, sp, "O", "I")
  combo.bias_c = None if bias is None else bias.reshape(-1)
  return ""


def _registry_combos(
  n: int, x_ndim: int, transposed: bool, names: Sequence[Convention], fixed: dict[str, Any]
) -> tuple[list[_Combo], list[tuple[str, str]]]:
  combos: dict[tuple[str, str], _Combo] = {}
  pruned = []
  for c in names:
    flip = c.transpose_flip if transposed else c.flip
    try:
      layout = generalize(c.layout, n)
      kernel_layout = generalize(c.transpose_kernel_layout if transposed else c.kernel_layout, n)
    except ValueError as e:
      pruned.append((c.name, str(e)))
      continue
    if "N" not in layout and x_ndim == len(layout) + 1:
      layout = "N" + layout  # an unbatched convention, vmapped over a batch (Equinox)
    why = _disagrees(fixed, flip, layout, kernel_layout)
    if why:
      pruned.append((c.name, why))
      continue
    key = (layout, kernel_layout)
    if key not in combos:
      try:
        lay = parse_layouts(
          layout, kernel_layout, fixed.get("out_layout"), default_n=n, where=WHERE
        )
      except (ValueError, TypeError) as e:
        pruned.append((c.name, str(e).removeprefix(f"{WHERE}: ")))
        continue
      combos[key] = _Combo(Layouts(lay.lhs, lay.rhs, lay.out), {False: [], True: []})
    combos[key].names[flip].append(c.name)
  return list(combos.values()), pruned


def _disagrees(fixed: dict[str, Any], flip: bool, layout: str, kernel_layout: str) -> str:
  for name, value in (("flip", flip), ("layout", layout), ("kernel_layout", kernel_layout)):
    given = fixed.get(name)
    if given is not None and given != value:
      return f"{name}={value!r}, but {name}={given!r} was given"
  return ""


def _bare_combos(
  n: int, x_ndim: int, fixed: dict[str, Any], seen: set[tuple[str, str]]
) -> list[_Combo]:
  sp = default_spatial(n)
  data = [d.format(s=sp) for d in DATA_LAYOUTS]
  if x_ndim == n + 1:
    data = [d.replace("N", "") for d in data]
  kernels = [k.format(s=sp) for k in KERNEL_LAYOUTS]
  if fixed.get("layout") is not None:
    data = [fixed["layout"]]
  if fixed.get("kernel_layout") is not None:
    kernels = [fixed["kernel_layout"]]
  combos = []
  for layout, kernel_layout in itertools.product(data, kernels):
    if (layout, kernel_layout) in seen:
      continue
    out = fixed.get("out_layout") or layout
    try:
      lay = parse_layouts(layout, kernel_layout, out, default_n=n, where=WHERE)
    except (ValueError, TypeError) as e:
      raise ValueError(str(e)) from None  # a fixed layout that is not a layout
    combos.append(_Combo(Layouts(lay.lhs, lay.rhs, lay.out), {False: [], True: []}))
  return combos


# ---------------------------------------------------------------------------
# Argument sets


@dataclasses.dataclass
class _ArgSet:
  """One spelling of the searched arguments, resolved to what it computes."""

  kwargs: dict[str, Any]
  strides: tuple[int, ...]
  dilation: tuple[int, ...]
  lows: tuple[int, ...]
  pads: tuple[tuple[int, int], ...]
  key: tuple[Any, ...]
  tier: int
  spellings: list[Any] = dataclasses.field(default_factory=list)


def _uniform(values: Sequence[Any]) -> Any:
  return values[0] if len(set(values)) == 1 else tuple(values)


def _stride_options(size: int, out: int, k_eff: int, max_pad: int) -> Sequence[int]:
  """Strides that map ``size`` to ``out`` with at most ``max_pad`` on each side.

  A ``range`` (or a short list): its length is not bounded by the arguments'
  values, so it is only ever iterated lazily, under the candidate budget.
  """
  if out == 1:
    # Past the first window every stride gives the same single output; the
    # smallest stride for each total padding is enough: 1, then
    # size + p - k_eff + 1 for p = 0 .. 2 max_pad.
    first = max(2, size - k_eff + 1)
    last = size + 2 * max_pad - k_eff + 1
    return _Chain([1], range(first, last + 1))
  low = max(1, (size - k_eff) // out + 1)
  high = (size + 2 * max_pad - k_eff) // (out - 1)
  return range(low, high + 1)


class _Chain(Sequence):
  """Two sequences one after the other, without copying either (ranges stay lazy)."""

  def __init__(self, a: Sequence[int], b: Sequence[int]):
    self.a, self.b = a, b

  def __len__(self) -> int:
    return len(self.a) + len(self.b)

  def __getitem__(self, i: Any) -> int:
    if isinstance(i, slice):
      raise TypeError("_Chain takes no slices")
    return self.a[i] if i < len(self.a) else self.b[i - len(self.a)]

  def __iter__(self) -> Any:
    return itertools.chain(self.a, self.b)


def _product(*seqs: Sequence[Any]) -> Iterable[tuple[Any, ...]]:
  """``itertools.product`` without materialising its inputs (which may be huge ranges)."""
  if not seqs:
    yield ()
    return
  for head in seqs[0]:
    for rest in _product(*seqs[1:]):
      yield (head, *rest)


def _fixed_pad_strides(padded: int, out: int, k: int) -> Sequence[int]:
  """Strides with ``(padded - k) // s + 1 == out`` (just 1 where every stride gives ``out``)."""
  if padded < k:
    return []
  if out == 1:
    return [1] if padded - k < 1 else range(padded - k + 1, padded - k + 2)
  return range((padded - k) // out + 1, (padded - k) // (out - 1) + 1)


def _symmetric_pads(size: int, out: int, k: int, s: int) -> range:
  """Symmetric paddings ``p < k`` with ``(size + 2p - k) // s + 1 == out``, in closed form."""
  # (out - 1) s <= size + 2p - k <= out s - 1
  lo = max(0, -(-((out - 1) * s - size + k) // 2))
  hi = min(k - 1, (out * s - 1 - size + k) // 2)
  return range(lo, hi + 1)


def _low_pads(size: int, out: int, k: int, s: int) -> range:
  """Low paddings ``lo < k`` for which the smallest fitting high padding exists."""
  # hi = max(0, t - lo) with t = (out - 1) s + k - size fits exactly when t <= lo + (s - 1)
  # for lo > t (hi = 0) and always for lo <= t.
  t = (out - 1) * s + k - size
  return range(0, min(k - 1, t + s - 1) + 1)


def _fits(size: int, out: int, k_eff: int, s: int, lo: int, hi: int) -> bool:
  return _padding.conv_output_sizes((size,), ((lo, hi),), (k_eff,), (s,)) == (out,)


def _spellings(
  tier: int, dims: Sequence[tuple[int, int, int]], strides: tuple[int, ...], fixed_padding: Any
) -> Iterable[Any]:
  """Padding arguments to try for one stride/dilation; ``dims``: (size, out, k_eff)."""
  if fixed_padding is not None:
    if tier != 1:
      yield fixed_padding
    return
  if tier != 1:
    yield from _PADDING_NAMES
    per_dim = [
      _symmetric_pads(size, out, k, s) for (size, out, k), s in zip(dims, strides, strict=True)
    ]
    for ps in _product(*per_dim):
      if all(_fits(*d, s, p, p) for d, s, p in zip(dims, strides, ps, strict=True)):
        yield _uniform(ps)
  else:
    per_dim = [_low_pads(size, out, k, s) for (size, out, k), s in zip(dims, strides, strict=True)]
    for lows in _product(*per_dim):
      pairs = tuple(
        (lo, max(0, (out - 1) * s + k - size - lo))
        for lo, (size, out, k), s in zip(lows, dims, strides, strict=True)
      )
      if any(lo != hi for lo, hi in pairs) and all(
        _fits(*d, s, lo, hi) for d, s, (lo, hi) in zip(dims, strides, pairs, strict=True)
      ):
        yield pairs


def _arg_sets(
  combo: _Combo,
  tier: int,
  fixed: dict[str, Any],
  transposed: bool,
  x_shape: tuple[int, ...],
  k_shape: tuple[int, ...],
  y_shape: tuple[int, ...],
  seen: set[tuple[Any, ...]],
) -> tuple[list[_ArgSet], bool, bool]:
  """The distinct argument sets of one tier for one layout pair, whether some were cut,
  and whether the candidate budget (:data:`MAX_CANDIDATES`) ran out."""
  n = len(combo.dims)
  ks = [k for _, _, k in combo.dims]
  if tier == 1 and fixed.get("padding") is not None:
    return [], False, False
  if fixed.get("dilation") is not None:
    if tier >= 2:
      return [], False, False
    dilations = [tuple(_spec.as_int_tuple(fixed["dilation"], n, "dilation", WHERE))]
  elif tier >= 2:
    # Dilations whose dilated kernel still fits in the input (SAME fits any).
    fits = all(k == 1 or (k - 1) * tier + 1 <= size for size, _, k in combo.dims)
    dilations = [(tier,) * n] if max(ks) > 1 and fits else []
  else:
    dilations = [(1,) * n]
  idil = (1,) * n
  if not transposed and fixed.get("input_dilation") is not None:
    idil = _spec.as_int_tuple(fixed["input_dilation"], n, "input_dilation", WHERE)
  fixed_pads = None
  if fixed.get("padding") is not None and not isinstance(fixed["padding"], str):
    fixed_pads = _padding.normalize_padding(fixed["padding"], n, WHERE)

  found: list[_ArgSet] = []
  by_key: dict[tuple[Any, ...], _ArgSet] = {}
  cut = False
  budget = MAX_CANDIDATES
  for dil in dilations:
    k_eff = _padding.effective_sizes(ks, dil)
    sizes = _padding.effective_sizes([s for s, _, _ in combo.dims], idil)
    dims = [(size, out, k) for size, (_, out, _), k in zip(sizes, combo.dims, k_eff, strict=True)]
    if fixed.get("strides") is not None:
      stride_sets = [_spec.as_int_tuple(fixed["strides"], n, "strides", WHERE)]
    elif fixed_pads:  # the padded sizes are known: exactly the strides that fit
      stride_sets = _product(
        *(
          _fixed_pad_strides(size + lo + hi, out, k)
          for (size, out, k), (lo, hi) in zip(dims, fixed_pads, strict=True)
        )
      )
    else:
      stride_sets = _product(*(_stride_options(size, out, k, k - 1) for size, out, k in dims))
    for strides in stride_sets:
      strides = tuple(strides)
      budget -= 1
      if budget < 0:
        seen.update(by_key)
        return found, True, True
      # Dilated tiers: one stride for every dimension whose output has > 1 element.
      if (
        tier >= 2 and len({s for s, (_, out, _) in zip(strides, dims, strict=True) if out > 1}) > 1
      ):
        continue
      for padding in _spellings(tier, dims, strides, fixed.get("padding")):
        budget -= 1
        if budget < 0:
          seen.update(by_key)
          return found, True, True
        kwargs = {"strides": _uniform(strides), "padding": padding, "dilation": _uniform(dil)}
        arg = _resolve(combo, kwargs, fixed, transposed, x_shape, k_shape, y_shape, tier)
        if arg is None:
          continue
        if arg.key in by_key:
          by_key[arg.key].spellings.append(padding)
          continue
        if arg.key in seen:
          continue
        if len(found) >= MAX_ARGUMENT_SETS:
          cut = True
          break
        arg.spellings.append(padding)
        by_key[arg.key] = arg
        found.append(arg)
      if cut:
        break
    if cut:
      break
  seen.update(by_key)
  return found, cut, False


def _resolve(
  combo: _Combo,
  kwargs: dict[str, Any],
  fixed: dict[str, Any],
  transposed: bool,
  x_shape: tuple[int, ...],
  k_shape: tuple[int, ...],
  y_shape: tuple[int, ...],
  tier: int,
) -> _ArgSet | None:
  """Checks one spelling with :func:`flipconv._spec.resolve_conv`; None if it does not fit."""
  lay = combo.layouts
  extra = {k: fixed[k] for k in ("input_dilation", "pad_mode") if fixed.get(k) is not None}
  try:
    if transposed:  # the forward conv that the layer is the adjoint of: y -> x
      call = _spec.resolve_conv(
        y_shape,
        k_shape,
        flip=False,
        convention=None,
        input_dilation=1,
        pad_mode="zeros",
        groups=combo.groups,
        layout=lay.out,
        kernel_layout=lay.rhs,
        out_layout=lay.lhs,
        where=WHERE,
        **kwargs,
      )
    else:
      call = _spec.resolve_conv(
        x_shape,
        k_shape,
        flip=False,
        convention=None,
        input_dilation=extra.get("input_dilation", 1),
        pad_mode=extra.get("pad_mode", "zeros"),
        groups=combo.groups,
        layout=lay.lhs,
        kernel_layout=lay.rhs,
        out_layout=lay.out,
        where=WHERE,
        **kwargs,
      )
  except (ValueError, TypeError):
    return None
  sizes = _padding.effective_sizes([s for s, _, _ in combo.dims], call.input_dilation)
  k_eff = _padding.effective_sizes([k for _, _, k in combo.dims], call.dilation)
  outs = tuple(out for _, out, _ in combo.dims)
  if _padding.conv_output_sizes(sizes, call.pads, k_eff, call.strides) != outs:
    return None
  kwargs = dict(kwargs)
  if transposed:
    more = _transposed_size_kwargs(combo, call, kwargs["padding"], k_eff)
    if more is None:
      return None
    kwargs.update(more)
  # What the conv computes depends on the low padding, on the stride where the
  # output has more than one element and on the dilation where the kernel has.
  key = tuple(
    (lo, s if out > 1 else 0, d if k > 1 else 0)
    for (lo, _), s, d, (_, out, k) in zip(
      call.pads, call.strides, call.dilation, combo.dims, strict=True
    )
  )
  return _ArgSet(
    kwargs, call.strides, call.dilation, tuple(lo for lo, _ in call.pads), call.pads, key, tier
  )


def _transposed_size_kwargs(
  combo: _Combo, call: _spec.ConvCall, padding: Any, k_eff: Sequence[int]
) -> dict[str, Any] | None:
  """``output_padding`` or ``output_shape`` so that conv_transpose gives y's sizes."""
  n = len(combo.dims)
  m = [out for _, out, _ in combo.dims]
  target = tuple(size for size, _, _ in combo.dims)
  spec = _padding.normalize_padding(padding, n, WHERE)
  args = (spec, m, k_eff, call.strides, call.dilation)
  try:
    if transpose.output_sizes(*args, None, None, "pytorch", WHERE) == target:
      return {}
    smallest = transpose.output_sizes(*args, 0, None, "pytorch", WHERE)
    extra = [t - s for t, s in zip(target, smallest, strict=True)]
    if all(0 <= p < max(s, d) for p, s, d in zip(extra, call.strides, call.dilation, strict=True)):
      return {"output_padding": _uniform(extra)}
    transpose.output_sizes(*args, None, target, "pytorch", WHERE)
  except ValueError:
    return None
  return {"output_shape": _uniform(target)}


# ---------------------------------------------------------------------------
# Computing: one compiled call per stride/dilation, every argument set and both flips


def _max_errors(out: jax.Array, y: jax.Array, bias: jax.Array) -> jax.Array:
  """``out``: (sets, flips, N, C, ...); returns max |out + bias - y| per set and flip."""
  out = out + bias.reshape((1, 1, 1, -1) + (1,) * (y.ndim - 2))
  err = jnp.abs(out - y)
  return jnp.max(err, axis=tuple(range(2, err.ndim)))


@functools.partial(jax.jit, static_argnames=("strides", "dilation", "groups"))
def _forward_errors(windows, kernels, y, bias, index, *, strides, dilation, groups):
  """``index``: per spatial dimension, (sets, size) positions kept from the strided conv."""
  sp = default_spatial(y.ndim - 2)

  def per_set(w, idx):
    out = jax.vmap(
      lambda k: ops.conv(
        w,
        k,
        flip=False,
        strides=strides,
        dilation=dilation,
        groups=groups,
        layout="NC" + sp,
        kernel_layout="OI" + sp,
        precision=lax.Precision.HIGHEST,
      )
    )(kernels)
    for axis, i in enumerate(idx):
      out = jnp.take(out, i, axis=3 + axis)
    return out

  return _max_errors(jax.vmap(per_set)(windows, index), y, bias)


@functools.partial(jax.jit, static_argnames=("strides", "dilation", "groups", "max_start"))
def _transposed_errors(x, kernels, y, bias, starts, *, strides, dilation, groups, max_start):
  sp = default_spatial(y.ndim - 2)
  # The adjoint of the forward conv with no low padding, over every position
  # a window touches; low padding `lo` makes the output z[lo : lo + size].
  z = jax.vmap(
    lambda k: transpose.conv_transpose(
      x,
      k,
      flip=False,
      strides=strides,
      padding="VALID",
      dilation=dilation,
      groups=groups,
      layout="NC" + sp,
      kernel_layout="OI" + sp,
      precision=lax.Precision.HIGHEST,
    )
  )(kernels)
  sizes = y.shape[2:]
  more = [max(0, m + size - zs) for m, size, zs in zip(max_start, sizes, z.shape[3:], strict=True)]
  z = jnp.pad(z, [(0, 0)] * 3 + [(0, e) for e in more])

  def window(start):
    return lax.dynamic_slice(z, (0, 0, 0, *start), z.shape[:3] + sizes)

  return _max_errors(jax.vmap(window)(starts), y, bias)


def _reach(combo: _Combo, strides: Sequence[int], dilation: Sequence[int]) -> tuple[int, ...]:
  """Per dimension, the padded input that an argument set's outputs read."""
  return tuple(
    (out - 1) * (s if out > 1 else 1) + (k - 1) * (d if k > 1 else 1) + 1
    for (_, out, k), s, d in zip(combo.dims, strides, dilation, strict=True)
  )


def _window_elements(combo: _Combo, arg: _ArgSet) -> int:
  """Elements of the input window (or, transposed, the adjoint's output) one set needs."""
  batch, channels = combo.x_c.shape[0], max(combo.x_c.shape[1], combo.y_c.shape[1])
  return batch * channels * math.prod(_reach(combo, arg.strides, arg.dilation))


def _windows(
  x_c: np.ndarray,
  args: Sequence[_ArgSet],
  reach: Sequence[int],
  pad_mode: str,
  idil: tuple[int, ...],
) -> np.ndarray:
  """Each argument set's padded input, cut (or padded with zeros) to ``reach``."""
  if any(d != 1 for d in idil):
    dilated = np.zeros(
      x_c.shape[:2] + tuple((s - 1) * d + 1 for s, d in zip(x_c.shape[2:], idil, strict=True)),
      x_c.dtype,
    )
    dilated[(slice(None), slice(None), *(slice(None, None, d) for d in idil))] = x_c
    x_c = dilated
  out = []
  for a in args:
    if pad_mode == "zeros":
      padded = np.pad(x_c, [(0, 0), (0, 0), *a.pads])
    else:
      padded = np.asarray(_padding.apply_pad_mode(x_c, pad_mode, a.pads, range(2, x_c.ndim)))
    padded = padded[(slice(None), slice(None), *(slice(0, r) for r in reach))]
    short = [(0, 0), (0, 0), *((0, r - s) for r, s in zip(reach, padded.shape[2:], strict=True))]
    out.append(np.pad(padded, short))
  return np.stack(out)


def _evaluate(
  combo: _Combo,
  args: list[_ArgSet],
  flips: tuple[bool, ...],
  dtype: Any,
  transposed: bool,
  fixed: dict[str, Any],
) -> np.ndarray:
  """Max abs errors, shape (len(args), len(flips)), of every argument set and flip."""
  n = len(combo.dims)
  k_c = combo.k_c.astype(dtype)
  kernels = np.stack([np.flip(k_c, tuple(range(2, k_c.ndim))) if f else k_c for f in flips])
  y_c = jnp.asarray(combo.y_c, dtype)
  c_out = combo.y_c.shape[1]
  bias = jnp.zeros((c_out,), dtype) if combo.bias_c is None else jnp.asarray(combo.bias_c, dtype)
  x_c = combo.x_c.astype(dtype)
  idil = (1,) * n
  if not transposed and fixed.get("input_dilation") is not None:
    idil = _spec.as_int_tuple(fixed["input_dilation"], n, "input_dilation", WHERE)
  errors = np.zeros((len(args), len(flips)))
  # One compiled call per group. A stride where the output has one element, or
  # a dilation where the kernel has one tap, changes nothing, so 1 is used
  # there. Small strides are taken from a stride-1 conv by indexing, so that
  # argument sets with different small strides share the call.
  groups: dict[tuple[Any, ...], list[int]] = {}
  plans = []
  for i, a in enumerate(args):
    strides = tuple(
      s if out > 1 else 1 for s, (_, out, _) in zip(a.strides, combo.dims, strict=True)
    )
    dilation = tuple(d if k > 1 else 1 for d, (_, _, k) in zip(a.dilation, combo.dims, strict=True))
    conv_strides = strides if transposed or math.prod(strides) > 4 else (1,) * n
    step = tuple(s // c for s, c in zip(strides, conv_strides, strict=True))
    reach = tuple(
      (out - 1) * s + (k - 1) * d + 1
      for (_, out, k), s, d in zip(combo.dims, strides, dilation, strict=True)
    )
    plans.append((step, reach))
    groups.setdefault((conv_strides, dilation), []).append(i)
  chunk = max(1, _MAX_ELEMENTS // (len(flips) * max(1, combo.y_c.size)))
  # ... and stacked windows no larger than that either.
  chunk = max(1, min(chunk, _MAX_ELEMENTS // max(_window_elements(combo, a) for a in args)))
  pad_mode = _padding.normalize_pad_mode(fixed.get("pad_mode") or "zeros", WHERE)
  for (strides, dilation), members in groups.items():
    for start in range(0, len(members), chunk):
      idx = members[start : start + chunk]
      # Padded to a power of two with repeats, so that tiers share compilations.
      idx_padded = idx + idx[:1] * (min(chunk, 1 << (len(idx) - 1).bit_length()) - len(idx))
      part = [args[i] for i in idx_padded]
      if transposed:
        starts = np.array([a.lows for a in part], np.int32)
        err = _transposed_errors(
          jnp.asarray(x_c),
          jnp.asarray(kernels),
          y_c,
          bias,
          jnp.asarray(starts),
          strides=strides,
          dilation=dilation,
          groups=combo.groups,
          max_start=tuple(int(v) for v in starts.max(axis=0)),
        )
      else:
        reach = tuple(max(plans[i][1][d] for i in idx_padded) for d in range(n))
        windows = _windows(x_c, part, reach, pad_mode, idil)
        index = tuple(
          jnp.asarray(
            np.stack([np.arange(out) * plans[i][0][d] for i in idx_padded]).astype(np.int32)
          )
          for d, (_, out, _) in enumerate(combo.dims)
        )
        err = _forward_errors(
          jnp.asarray(windows),
          jnp.asarray(kernels),
          y_c,
          bias,
          index,
          strides=strides,
          dilation=dilation,
          groups=combo.groups,
        )
      errors[idx] = np.asarray(err)[: len(idx)]
  return errors


# ---------------------------------------------------------------------------
# The search


def _candidate_conventions(candidates: Any) -> list[Convention]:
  if candidates is None:
    return [c for name, c in conventions.items() if name == c.name]
  if isinstance(candidates, (str, Convention)):
    candidates = [candidates]
  out: list[Convention] = []
  for c in candidates:
    try:
      conv = get_convention(c)
    except (ValueError, TypeError) as e:
      raise type(e)(f"{WHERE}: candidates: {str(e).removeprefix('get_convention: ')}") from None
    if conv not in out:
      out.append(conv)
  if not out:
    raise ValueError(f"{WHERE}: candidates is empty; pass None to try every convention.")
  return out


def _flip_note(k: np.ndarray, kernel_layout: str, rtol: float) -> str:
  axes = tuple(i for i, c in enumerate(kernel_layout) if c not in "OI")
  k = k.astype(np.float64) if not np.iscomplexobj(k) else k
  scale = float(np.max(np.abs(k))) if k.size else 0.0
  diff = float(np.max(np.abs(k - np.flip(k, axes)))) if k.size else 0.0
  if diff <= rtol * scale:
    taps = math.prod(k.shape[a] for a in axes)
    return _UNDETERMINED + (" (it has a single spatial tap)" if taps == 1 else "")
  return ""


def _padding_note(arg: _ArgSet) -> str:
  first = arg.spellings[0]
  # 'VALID' is also 0 (and zero pairs) everywhere: not worth a note.
  others = [
    s
    for s in arg.spellings[1:]
    if s != first
    and not (first == "VALID" and not isinstance(s, str) and not np.any(np.asarray(s)))
  ]
  if not others:
    return ""
  shown = ", ".join(repr(s) for s in dict.fromkeys(map(_hashable, others)))
  return f"padding {first!r} is also {shown} here"


def _hashable(v: Any) -> Any:
  return tuple(_hashable(e) for e in v) if isinstance(v, (list, tuple)) else v


def search(
  x: ArrayLike,
  kernel: ArrayLike,
  y: ArrayLike,
  *,
  transposed: bool = False,
  bias: ArrayLike | None = None,
  candidates: Iterable[str | Convention] | None = None,
  rtol: float | None = None,
  **conv_kwargs: Any,
) -> Search:
  """:func:`detect_convention` with a report of what was tried (for the command line)."""
  transposed = as_bool(transposed, "transposed", WHERE)
  xa, ka, ya = _array(x, "x"), _array(kernel, "kernel"), _array(y, "y")
  ba = None if bias is None else _array(bias, "bias")
  fixed = _fixed_args(conv_kwargs, transposed)
  arrays = [a for a in (xa, ka, ya, ba) if a is not None]
  dtype = _compute_dtype(arrays)
  for name, a in zip(("x", "kernel", "y", "bias"), arrays, strict=False):
    if not np.all(np.isfinite(np.asarray(a, dtype))):
      raise ValueError(f"{WHERE}: {name} contains NaN or infinity; pass finite arrays.")
  if ka.ndim < 3:
    raise ValueError(
      f"{WHERE}: kernel must have rank >= 3 (O, I and at least one spatial "
      f"axis), got shape {shape_str(ka.shape)}."
    )
  n = ka.ndim - 2
  if xa.ndim not in (n + 1, n + 2) or ya.ndim != xa.ndim:
    raise ValueError(
      f"{WHERE}: x, kernel and y must have ranks r, n + 2 and r with r = n + 2 (batched) or "
      f"n + 1 (unbatched), got x {shape_str(xa.shape)}, kernel {shape_str(ka.shape)}, "
      f"y {shape_str(ya.shape)}."
    )
  if ba is not None and ba.size and np.squeeze(ba).ndim > 1:
    raise ValueError(
      f"{WHERE}: bias must hold one value per output channel, got shape {shape_str(ba.shape)}."
    )
  y_scale = float(np.max(np.abs(np.asarray(ya, dtype)))) if ya.size else 0.0
  if y_scale == 0.0:
    raise ValueError(
      f"{WHERE}: y is all zeros (shape {shape_str(ya.shape)}), which tells "
      "no convention from another; pass an output with non-zero values."
    )
  if rtol is None:
    rtol = _default_rtol(arrays, dtype, ka.size)
  elif not isinstance(rtol, (int, float)) or isinstance(rtol, bool) or not rtol > 0:
    raise ValueError(f"{WHERE}: rtol must be a positive number, got {rtol!r}.")
  rtol = float(rtol)

  named, pruned = _registry_combos(
    n, xa.ndim, transposed, _candidate_conventions(candidates), fixed
  )
  fitting, reasons = [], {}
  for combo in named:
    why = _check_combo(combo, xa, ka, ya, ba, fixed, transposed)
    if why:
      for names in combo.names.values():
        pruned.extend((name, why) for name in names)
      reasons[combo.describe()] = why
    else:
      fitting.append(combo)
  flips = (fixed["flip"],) if fixed.get("flip") is not None else (False, True)
  state = _State(xa.shape, ka.shape, ya.shape, transposed, fixed, flips, dtype, rtol, y_scale)
  state.run(fitting, named=True)
  tried = [n_ for c in fitting for names in c.names.values() for n_ in names]
  bare: list[_Combo] = []
  if not state.any_named_match() and candidates is None:
    seen = {(c.layouts.lhs, c.layouts.rhs) for c in named}
    for combo in _bare_combos(n, xa.ndim, fixed, seen):
      why = _check_combo(combo, xa, ka, ya, ba, fixed, transposed)
      if why:
        reasons[combo.describe()] = why
      else:
        bare.append(combo)
    state.run(bare, named=False)
    tried += [f"bare {c.describe()}" for c in bare]
  if not fitting and not bare:
    shapes = f"x {shape_str(xa.shape)}, kernel {shape_str(ka.shape)}, y {shape_str(ya.shape)}" + (
      f", bias {shape_str(ba.shape)}" if ba is not None else ""
    )
    why = "; ".join(f"{name}: {r}" for name, r in pruned[:6]) or "; ".join(
      f"{d}: {r}" for d, r in list(reasons.items())[:6]
    )
    raise ValueError(
      f"{WHERE}: no convention or flip/layout combination fits the shapes "
      f"{shapes}{' with ' + repr(fixed) if fixed else ''}. {why}."
    )
  if state.over_budget and not state.hits:
    given = {k: v for k, v in fixed.items() if k in ("strides", "padding", "dilation")}
    raise ValueError(
      f"{WHERE}: the search reached its budget without a match: it left "
      f"{' and '.join(state.over_budget.values())} unexamined"
      f"{' (with ' + kwargs_str(given) + ')' if given else ''}. Fix strides, padding and "
      "dilation to the layer's values, or check that x, kernel and y belong together."
    )
  if state.evaluated == 0:
    fits = "; ".join(
      f"{c.describe()}: sizes {tuple(d[0] for d in c.dims)} -> {tuple(d[1] for d in c.dims)} "
      f"with kernel {tuple(d[2] for d in c.dims)}"
      for c in (fitting + bare)[:4]
    )
    given = {k: v for k, v in fixed.items() if k in ("strides", "padding", "dilation")}
    what = (
      "y's spatial sizes to x's (in the forward conv of the transposed layer)"
      if transposed
      else "x's spatial sizes to y's"
    )
    raise ValueError(
      f"{WHERE}: the layouts fit, but no padding, stride or dilation (up to "
      f"{MAX_DILATION}){' with ' + kwargs_str(given) if given else ''} maps "
      f"{what}: {fits}."
    )
  matches = state.matches(ka, bare=candidates is None)
  return Search(matches, tried, pruned, state.evaluated, state.cut, rtol, state.closest)


class _State:
  """Results of the search so far: per layout pair and flip, the matching argument sets."""

  def __init__(self, x_shape, k_shape, y_shape, transposed, fixed, flips, dtype, rtol, y_scale):
    self.shapes = (x_shape, k_shape, y_shape)
    self.transposed, self.fixed, self.flips = transposed, fixed, flips
    self.dtype, self.rtol, self.y_scale = dtype, rtol, y_scale
    self.hits: dict[tuple[int, bool], list[tuple[int, float, int, _ArgSet]]] = {}
    self.combos: list[_Combo] = []
    self.evaluated = 0
    self.cut = False
    self.over_budget: dict[str, str] = {}  # what the budgets left unexamined, by kind
    self.closest: tuple[float, str] | None = None

  def run(self, combos: list[_Combo], *, named: bool) -> None:
    """Evaluates tier after tier; stops after the first tier with a match that counts."""
    start = len(self.combos)
    self.combos += combos
    seen: dict[int, set[tuple[Any, ...]]] = {i: set() for i in range(start, len(self.combos))}
    for tier in range(MAX_DILATION + 1):
      for i in range(start, len(self.combos)):
        combo = self.combos[i]
        args, cut, spent = _arg_sets(
          combo, tier, self.fixed, self.transposed, *self.shapes, seen[i]
        )
        self.cut |= cut
        if spent:
          self.over_budget.setdefault("spent", f"more than {MAX_CANDIDATES} candidate spellings")
        # Windows up to 2**n times the arrays given (padding up to the kernel's size)
        # are what any layer needs; larger ones grow with an argument's value.
        limit = max(_MAX_ELEMENTS, 2 ** len(combo.dims) * (combo.x_c.size + combo.y_c.size))
        small = [a for a in args if _window_elements(combo, a) <= limit]
        if len(small) < len(args):
          self.cut = True
          self.over_budget.setdefault(
            "windows",
            f"argument sets whose windows hold more than {limit} elements, e.g. "
            f"{kwargs_str(next(a for a in args if a not in small).kwargs)}",
          )
        args = small
        if not args:
          continue
        errors = _evaluate(combo, args, self.flips, self.dtype, self.transposed, self.fixed)
        errors = errors / self.y_scale
        self.evaluated += errors.size
        for j, a in enumerate(args):
          for f_i, flip in enumerate(self.flips):
            e = float(errors[j, f_i])
            if self.closest is None or e < self.closest[0]:
              self.closest = (e, f"{combo.describe(flip)}, {kwargs_str(a.kwargs)}")
            if e <= self.rtol:
              self.hits.setdefault((i, flip), []).append((tier, e, j, a))
      if self._counting_hit(start, named):
        return

  def _counting_hit(self, start: int, named: bool) -> bool:
    return any(i >= start and (not named or self.combos[i].names[flip]) for (i, flip) in self.hits)

  def any_named_match(self) -> bool:
    return any(self.combos[i].names[flip] for (i, flip) in self.hits)

  def matches(self, kernel: np.ndarray, *, bare: bool) -> list[Match]:
    named_only = self.any_named_match() or not bare
    out = []
    order = []
    for (i, flip), hits in self.hits.items():
      combo = self.combos[i]
      names = combo.names[flip]
      if named_only and not names:
        continue
      hits = sorted(hits, key=lambda h: (h[0], h[1], h[2]))
      tier, err, _, arg = hits[0]
      notes = []
      flip_note = _flip_note(kernel, combo.layouts.rhs, self.rtol)
      if flip_note:
        notes.append(flip_note)
      elif (i, not flip) in self.hits:
        notes.append("flip undetermined: both flips reproduce y on this input")
      if len(names) > 1:
        verb = "computes" if len(names) == 2 else "compute"
        notes.append(f"{', '.join(names[1:])} {verb} the same here (same flip and layouts)")
      if not names:
        notes.append("no registry convention has this flip and these layouts")
      pad = _padding_note(arg)
      if pad:
        notes.append(pad)
      if len(hits) > 1:
        notes.append(
          f"{len(hits) - 1} other argument set{'s' if len(hits) > 2 else ''} also "
          f"reproduce{'' if len(hits) > 2 else 's'} y, e.g. "
          f"{kwargs_str(hits[1][3].kwargs)}"
        )
      lay = combo.layouts
      kwargs = {"flip": flip, "layout": lay.lhs, "kernel_layout": lay.rhs}
      if lay.out != lay.lhs:
        kwargs["out_layout"] = lay.out
      kwargs.update(arg.kwargs)
      kwargs["groups"] = combo.groups
      for key in _FORWARD_ONLY:
        if self.fixed.get(key) is not None:
          kwargs[key] = self.fixed[key]
      out.append(
        Match(
          names[0] if names else None,
          flip,
          lay.lhs,
          lay.rhs,
          err,
          kwargs,
          "; ".join(notes),
          tuple(names[1:]),
        )
      )
      order.append((err, tier, i, flip))
    return [m for _, m in sorted(zip(order, out, strict=True), key=lambda p: p[0])]


def kwargs_str(kwargs: Mapping[str, Any]) -> str:
  """Arguments as ``key=value`` words, as matches and ``flipconv detect`` print them."""
  return " ".join(f"{k}={v!r}" for k, v in kwargs.items())


__all__ = ["Match", "detect_convention"]
