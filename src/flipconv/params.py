"""Converting whole parameter trees: which leaves are kernels, and what each becomes.

:func:`convert_params` walks a tree (dict, FrozenDict, ``nnx.State``, list,
tuple, namedtuple, any registered pytree, or a flat PyTorch-style dict with
dotted keys), picks the kernels (``select``), and converts each with the
:class:`~flipconv.convert.KernelPlan` of :mod:`flipconv.convert` (dense
kernels: ``OI`` <-> ``IO``). :func:`plan_params` returns the same decisions as
a list of :class:`Change` without converting anything.

Paths are the tree's keys joined by ``"/"``; a dotted key is split at its
dots, so ``{"layer1.0.conv1.weight": w}`` has the path
``layer1/0/conv1/weight``, the same as the nested
``{"layer1": {"0": {"conv1": {"weight": w}}}}``.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from flipconv import _trees
from flipconv._porting import PlanRow, format_rows, port
from flipconv._validate import shape_str
from flipconv.convert import KernelPlan, apply_plan, describe_change, kernel_plan
from flipconv.registry import Convention, get_convention

Kind = Literal["conv", "conv_transpose", "linear"]
KINDS: tuple[str, ...] = ("conv", "conv_transpose", "linear")
Selector = Callable[[str, Any], Any]

# "auto": leaf names that hold kernels in Flax/Haiku/Keras (kernel, w), PyTorch/
# Equinox (weight), Lasagne (W) and TF1 (filter).
KERNEL_NAMES = frozenset({"kernel", "weight", "w", "filter"})
# Names that never hold kernels, whatever their rank.
_NOT_KERNELS = frozenset({"bias", "b", "scale"})


class UnselectedKernelWarning(UserWarning):
  """``select="auto"`` met leaves shaped like kernels that it could not classify.

  Examples:
    >>> import warnings, numpy as np, flipconv as fc
    >>> with warnings.catch_warnings(record=True) as caught:
    ...   warnings.simplefilter("always")
    ...   _ = fc.convert_params({"pos_embed": np.zeros((1, 16, 8))}, "pytorch", "flax")
    >>> caught[0].category is fc.UnselectedKernelWarning
    True
  """


@dataclasses.dataclass(frozen=True)
class Change:
  """What converting one selected leaf does.

  Attributes:
    path: the leaf's path, ``"/"``-joined (dotted keys split at the dots).
    kind: ``"conv"``, ``"conv_transpose"`` or ``"linear"``.
    old_shape: the shape before.
    new_shape: the shape after.
    flip: whether spatial axes are reversed.
    permutation: axes of the old array in the order of the new one
      (``np.transpose(old, permutation)``), applied before the flip.
    flip_axes: axes of the *new* array that are reversed.
    src_layout: the kernel's layout before, e.g. ``"OIHW"`` (``"OI"`` for dense).
    dst_layout: its layout after, e.g. ``"HWIO"``.
    dtype: the leaf's dtype name (kept by the conversion).

  Examples:
    >>> import numpy as np, flipconv as fc
    >>> change = fc.plan_params({"conv1.weight": np.zeros((8, 3, 3, 3))}, "pytorch", "flax")[0]
    >>> change.kind, change.old_shape, change.new_shape, change.flip
    ('conv', (8, 3, 3, 3), (3, 3, 3, 8), False)
    >>> change.describe()
    'OIHW -> HWIO: transpose (2, 3, 1, 0)'
  """

  path: str
  kind: str
  old_shape: tuple[int, ...]
  new_shape: tuple[int, ...]
  flip: bool
  permutation: tuple[int, ...]
  flip_axes: tuple[int, ...] = ()
  src_layout: str = ""
  dst_layout: str = ""
  dtype: str = ""

  @property
  def changed(self) -> bool:
    """False when the conventions store this kernel alike: the leaf is returned as is."""
    return self.flip or self.permutation != tuple(range(len(self.permutation)))

  def describe(self) -> str:
    """What is done, in words: ``"OIHW -> HWIO: transpose (2, 3, 1, 0), flip H W"``."""
    return describe_change(self.src_layout, self.dst_layout, self.permutation, self.flip_axes)

  def __str__(self) -> str:
    return (
      f"{self.path}: {self.kind} {shape_str(self.old_shape)} -> "
      f"{shape_str(self.new_shape)} ({self.describe()})"
    )


class Plan(list):
  """What :func:`plan_params` returns; ``str()`` is a table.

  Without ``like``, one :class:`Change` per selected leaf; with ``like``, one
  :class:`PlanRow` per target leaf, grouped by layer in the target's order.

  Examples:
    >>> import numpy as np, flipconv as fc
    >>> plan = fc.plan_params({"conv1.weight": np.zeros((8, 3, 3, 3))}, "pytorch", "flax")
    >>> print(plan)
    conv1/weight  conv  (8, 3, 3, 3)  ->  (3, 3, 3, 8)  OIHW -> HWIO: transpose (2, 3, 1, 0)
    1 selected: 1 converted (0 flipped), 0 unchanged.
  """

  def __str__(self) -> str:
    if self and isinstance(self[0], PlanRow):
      return format_rows(self)
    return format_plan(self)


def format_plan(changes: Sequence[Change]) -> str:
  """The changes as an aligned table, one line per leaf, and a count (``flipconv --dry-run``)."""
  if not changes:
    return "no leaf selected: nothing to convert."
  rows = [
    (c.path, c.kind, shape_str(c.old_shape), "->", shape_str(c.new_shape), c.describe())
    for c in changes
  ]
  widths = [max(len(r[i]) for r in rows) for i in range(5)]
  lines = ["  ".join(r[i].ljust(widths[i]) for i in range(5)) + "  " + r[5] for r in rows]
  n_changed = sum(c.changed for c in changes)
  n_flip = sum(c.flip for c in changes)
  lines.append(
    f"{len(changes)} selected: {n_changed} converted ({n_flip} flipped), "
    f"{len(changes) - n_changed} unchanged."
  )
  return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Selected:
  """One selected leaf: where it is in the flattened tree, and its plan."""

  index: int
  keypath: tuple[Any, ...]
  change: Change
  plan: KernelPlan


@dataclasses.dataclass(frozen=True)
class Unclassified:
  """A leaf shaped like a kernel that ``select="auto"`` left alone, and why."""

  path: str
  shape: tuple[int, ...]
  reason: str

  def __str__(self) -> str:
    return f"{self.path} {shape_str(self.shape)}: {self.reason}"


# ---------------------------------------------------------------------------
# Paths


def _unwrapped(keypath: Sequence[Any]) -> list[Any]:
  keys = list(keypath)
  if (
    len(keys) > 1
    and isinstance(keys[-1], jax.tree_util.GetAttrKey)
    and keys[-1].name in _trees.WRAPPER_ATTRS
  ):
    keys = keys[:-1]
  return keys


def path_parts(keypath: Sequence[Any]) -> list[str]:
  """The path's names: keys split at ``.`` and ``/``, a wrapper's trailing ``value`` dropped."""
  return [p for k in _unwrapped(keypath) for p in _trees.SEPARATORS.split(_trees.key_str(k)) if p]


def _child(node: Any, key: Any) -> Any:
  tu = jax.tree_util
  if isinstance(key, tu.DictKey):
    return node[key.key]
  if isinstance(key, tu.SequenceKey):
    return node[key.idx]
  if isinstance(key, tu.GetAttrKey):
    return getattr(node, key.name)
  raise LookupError(key)


def _module_names(tree: Any, keypath: Sequence[Any], parts: list[str]) -> list[str]:
  """The names of the module that holds a leaf: its key (the nearest one that is not an
  index, so ``decoder.deconv.weight`` gives ``deconv``) and the holder's class name (an
  Equinox field ``up: eqx.nn.ConvTranspose2d`` gives ``ConvTranspose2d``)."""
  names = [next((p for p in reversed(parts[:-1]) if not p.isdigit()), "")]
  node = tree
  try:
    for key in _unwrapped(keypath)[:-1]:
      node = _child(node, key)
  except Exception:  # a pytree without key access: the key is all we know
    return names
  return [*names, type(node).__name__]


# ---------------------------------------------------------------------------
# Selection


def _is_array(leaf: Any) -> bool:
  return hasattr(leaf, "shape") and hasattr(leaf, "dtype") and not isinstance(leaf, type)


def _auto(
  parts: list[str],
  modules: Callable[[], list[str]],
  shape: tuple[int, ...],
  src: Convention,
  dst: Convention,
) -> tuple[str | None, str | None]:
  """The "auto" rule: ``(kind or None, reason to report or None)``."""
  name = parts[-1] if parts else ""
  kernel_named = name.lower() in KERNEL_NAMES
  if len(shape) >= 3:
    if not kernel_named:
      if name.lower() in _NOT_KERNELS or sum(n > 1 for n in shape) < 2:
        return None, None  # an Equinox bias (C, 1, 1), a scale: nothing like a kernel
      return None, (
        f"rank {len(shape)} like a conv kernel, but named {name!r}, not one of "
        f"{', '.join(sorted(KERNEL_NAMES))}"
      )
    transposed = any(_trees.TRANSPOSED.search(m) for m in modules())
    return ("conv_transpose" if transposed else "conv"), None
  if len(shape) == 2 and kernel_named and src.linear_layout != dst.linear_layout:
    if any(_trees.EMBEDDING.search(m) for m in modules()):
      return None, "a rank-2 weight under an embedding (a lookup table, not a dense kernel?)"
    return "linear", None
  return None, None


def _check_kind(kind: Any, where: str, what: str) -> str | None:
  if kind is None or kind == "none":
    return None
  if kind == "auto" or kind in KINDS:
    return kind
  raise ValueError(
    f"{where}: {what} gave kind {kind!r}; allowed: "
    f"{', '.join(repr(k) for k in (*KINDS, 'auto', None))}."
  )


class _GlobSelector:
  """A mapping of glob patterns to kinds; the first pattern that matches a path wins."""

  def __init__(self, mapping: Mapping[str, Any], where: str):
    self.where = where
    self.rules = []
    for pattern, kind in mapping.items():
      if not isinstance(pattern, str) or not pattern:
        raise TypeError(f"{where}: select patterns must be non-empty strings, got {pattern!r}.")
      self.rules.append(
        (
          pattern,
          _trees.glob_regex(pattern),
          _check_kind(kind, where, f"select pattern {pattern!r}"),
        )
      )
    self.used: set[str] = set()
    self.paths: list[str] = []

  def __call__(self, path: str, leaf: Any) -> str | None:
    self.paths.append(path)
    # Every matching pattern counts as used, also one an earlier pattern shadows:
    # "matches nothing" must mean exactly that.
    hits = [(pattern, kind) for pattern, regex, kind in self.rules if regex.fullmatch(path)]
    self.used.update(pattern for pattern, _ in hits)
    return hits[0][1] if hits else None

  def check_used(self) -> None:
    unused = [p for p, _, _ in self.rules if p not in self.used]
    if unused:
      examples = ", ".join(repr(p) for p in self.paths[:4]) or "none: the tree has no array"
      raise ValueError(
        f"{self.where}: select pattern{'s' if len(unused) > 1 else ''} "
        f"{', '.join(repr(p) for p in unused)} match{'' if len(unused) > 1 else 'es'} no "
        f"array leaf. Patterns are globs on the '/'-joined path (dots count as '/', '*' "
        f"crosses '/'); paths look like {examples}."
      )


def _selector(select: Any, where: str) -> Selector:
  if isinstance(select, str):
    if select != "auto":
      raise ValueError(
        f"{where}: select must be 'auto', a callable (path, leaf) -> kind, or a "
        f"mapping from glob patterns to kinds; got the string {select!r}."
      )
    return lambda path, leaf: "auto"
  if isinstance(select, Mapping):
    return _GlobSelector(select, where)
  if callable(select):
    return lambda path, leaf: _check_kind(select(path, leaf), where, f"select({path!r}, leaf)")
  raise TypeError(
    f"{where}: select must be 'auto', a callable (path, leaf) -> kind, or a "
    f"mapping from glob patterns to kinds; got {type(select).__name__} "
    f"{select!r}."
  )


def _plan_leaf(
  kind: str, path: str, shape: tuple[int, ...], src: Convention, dst: Convention, where: str
) -> KernelPlan:
  if kind == "linear":
    if len(shape) != 2:
      raise ValueError(
        f"{where}: leaf {path!r} of shape {shape_str(shape)} is selected as "
        "'linear', but a dense kernel has rank 2."
      )
    # The dense kernel's axes are O and I, permuted like a conv kernel's.
    s, d = src.linear_layout, dst.linear_layout
    return KernelPlan("linear", s, d, tuple(s.index(c) for c in d), ())
  if len(shape) < 3:
    raise ValueError(
      f"{where}: leaf {path!r} of shape {shape_str(shape)} is selected as "
      f"{kind!r}, but a conv kernel has rank >= 3 (O, I and spatial axes)."
    )
  return kernel_plan(len(shape), src, dst, kind=kind, where=where)


def select_leaves(
  params: Any,
  src: str | Convention,
  dst: str | Convention,
  select: Any = "auto",
  *,
  where: str = "convert_params",
) -> tuple[list[tuple[Any, Any]], Any, list[Selected], list[Unclassified]]:
  """Flattens ``params`` and decides, leaf by leaf, what is converted and how.

  Returns:
    ``(flat, treedef, selected, unclassified)``: ``flat`` is
    ``jax.tree_util.tree_flatten_with_path(params)[0]``, ``selected`` one
    :class:`Selected` per converted leaf (in ``flat`` order), ``unclassified``
    the leaves that ``"auto"`` reports.
  """
  s, d = get_convention(src), get_convention(dst)
  chooser = _selector(select, where)
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  selected, unclassified = [], []
  plans: dict[tuple[str, int], KernelPlan] = {}
  for i, (keypath, leaf) in enumerate(flat):
    if not _is_array(leaf):
      continue
    parts = path_parts(keypath)
    path = "/".join(parts)
    shape = tuple(int(n) for n in leaf.shape)
    kind = chooser(path, leaf)
    if kind == "auto":
      modules = lambda kp=keypath, parts=parts: _module_names(params, kp, parts)
      kind, reason = _auto(parts, modules, shape, s, d)
      if reason:
        unclassified.append(Unclassified(path, shape, reason))
    if kind is None:
      continue
    if (kind, len(shape)) not in plans:  # one plan per kind and rank
      plans[kind, len(shape)] = _plan_leaf(kind, path, shape, s, d, where)
    plan = plans[kind, len(shape)]
    change = Change(
      path,
      kind,
      shape,
      plan.new_shape(shape),
      plan.flip,
      plan.permutation,
      plan.flip_axes,
      plan.src_layout,
      plan.dst_layout,
      str(np.dtype(leaf.dtype)),
    )
    selected.append(Selected(i, keypath, change, plan))
  if isinstance(chooser, _GlobSelector):
    chooser.check_used()
  return flat, treedef, selected, unclassified


def _warn_unclassified(unclassified: list[Unclassified], where: str) -> None:
  if not unclassified:
    return
  listed = "; ".join(str(u) for u in unclassified[:8])
  more = f"; and {len(unclassified) - 8} more" if len(unclassified) > 8 else ""
  first = unclassified[0].path
  warnings.warn(
    f"{where}: select='auto' left {len(unclassified)} kernel-shaped leaf/leaves unchanged: "
    f"{listed}{more}. Say what they are with a mapping, e.g. select={{{first!r}: 'conv', "
    f"'*': 'auto'}} (or None to keep it as is and silence this).",
    UnselectedKernelWarning,
    stacklevel=3,
  )


# ---------------------------------------------------------------------------
# Applying a plan


def out_sharding(sharding: Any, plan: KernelPlan, ndim: int) -> Any:
  """The sharding of the converted array: a NamedSharding's spec permuted like the axes."""
  if isinstance(sharding, jax.sharding.NamedSharding):
    spec = tuple(sharding.spec) + (None,) * (ndim - len(sharding.spec))
    return jax.sharding.NamedSharding(
      sharding.mesh,
      jax.sharding.PartitionSpec(*(spec[a] for a in plan.permutation)),
      memory_kind=sharding.memory_kind,
    )
  if isinstance(sharding, jax.sharding.SingleDeviceSharding):
    return sharding
  return None  # let XLA propagate it


def device_fn(plan: KernelPlan, sharding: Any, ndim: int) -> Callable[[jax.Array], jax.Array]:
  """A jitted permutation whose output sharding is the input's, permuted: no collective.

  Each device permutes its own shard (a transpose moves no element between
  shards when the spec moves with the axes); the flip reverses spatial axes,
  which only need communication if they are themselves sharded.
  """

  def fn(kernel):
    out = jnp.transpose(kernel, plan.permutation)
    return jax.lax.rev(out, plan.flip_axes) if plan.flip_axes else out

  return jax.jit(fn, out_shardings=out_sharding(sharding, plan, ndim))


def _apply(
  leaf: Any, change: Change, plan: KernelPlan, cache: dict[Any, Callable[[jax.Array], jax.Array]]
) -> Any:
  if not change.changed:
    return leaf
  if isinstance(leaf, jax.core.Tracer):
    return apply_plan(leaf, plan)
  if isinstance(leaf, jax.Array):
    key = (plan, leaf.sharding, leaf.ndim)
    if key not in cache:
      cache[key] = device_fn(plan, leaf.sharding, leaf.ndim)
    return cache[key](leaf)
  if isinstance(leaf, jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct(change.new_shape, leaf.dtype)
  return apply_plan(leaf, plan)


def _keep_dict_order(template: Any, out: Any) -> Any:
  # jax.tree_util rebuilds plain dicts with sorted keys; give back the caller's order.
  if type(template) is dict and type(out) is dict and template.keys() == out.keys():
    return {k: _keep_dict_order(template[k], out[k]) for k in template}
  return out


# ---------------------------------------------------------------------------
# Public


def _prepared(params: Any, where: str) -> Any:
  """The tree, checked to be finite, with torch (and other foreign) tensors as NumPy."""
  _trees.check_tree(params, "params", where)
  return _keep_dict_order(params, _trees.host_leaves(params, where))


def port_params(
  source: Any,
  src: str | Convention,
  dst: str | Convention,
  *,
  like: Any,
  convert: bool,
  where: str,
  **kwargs: Any,
) -> tuple[Plan, Any]:
  """``plan_params`` and (with ``convert``) ``convert_params`` with ``like``, in one pass.

  ``source`` is checked and its foreign tensors read here; ``kwargs`` are
  ``select``, ``flatten``, ``strict``, ``epsilon`` and ``order``.

  Returns:
    ``(plan, variables)``; ``variables`` is ``None`` without ``convert``.
  """
  source = _prepared(source, where)
  _trees.check_tree(like, "like", where)
  rows, out = port(
    source, get_convention(src), get_convention(dst), like, convert=convert, where=where, **kwargs
  )
  return Plan(rows), (_keep_dict_order(like, out) if convert else None)


def convert_params(
  params: Any,
  src: str | Convention,
  dst: str | Convention,
  *,
  like: Any = None,
  select: str | Mapping[str, str | None] | Selector = "auto",
  flatten: Mapping[str, Any] | None = None,
  strict: bool = True,
  epsilon: float | None = None,
  order: Sequence[str] | None = None,
) -> Any:
  """Converts every kernel in a parameter tree from ``src``'s convention to ``dst``'s.

  Each selected conv kernel goes through :func:`flipconv.convert_kernel`'s plan
  (a permutation, and a flip where the conventions' flips differ); each
  selected dense kernel is transposed where the ``linear_layout`` differ
  (``OI`` <-> ``IO``). Every other leaf is returned as it is (the same object),
  and so is a selected kernel that both conventions store alike.

  With ``like=variables`` the whole checkpoint is ported onto a Flax model:
  the result is ``like``'s tree, every leaf taken from ``params`` (see ``like``
  below and ``plan_params(..., like=...)`` to check the mapping first).

  Args:
    params: a pytree: dict, ``FrozenDict``, ``nnx.State``, list, tuple,
      namedtuple, any registered pytree (an Equinox module), or a flat dict
      with dotted keys (a PyTorch ``state_dict``). Leaves may be NumPy,
      ``jax.Array`` or ``torch.Tensor`` (read without a copy where torch
      allows; they come back as NumPy). With ``like``, also a list of arrays
      in layer order (Lasagne's ``get_all_param_values``, Keras'
      ``get_weights``, an ``.npz`` of ``arr_0..arr_N``).
    src: the convention the parameters were trained in (name or Convention).
    dst: the convention they will be used with.
    select: which leaves are kernels, and of what kind:

      * ``"auto"``: leaves named ``kernel``, ``weight``, ``W``, ``w`` or
        ``filter`` with rank >= 3 are conv kernels, ``conv_transpose`` when
        the module that holds them is named like ``ConvTranspose``,
        ``deconv``, ``transpose`` or ``up_conv`` (its key, the nearest one
        that is not an index, or its class: an Equinox field
        ``up: eqx.nn.ConvTranspose2d``); such leaves of rank 2 are dense
        kernels when the conventions' ``linear_layout`` differ. A transposed
        conv under a plain name (``up.0.weight`` in an ``nn.Sequential``) is
        taken for a conv: check with :func:`plan_params`. Leaves of rank >= 3 with other names (a
        Keras ``depthwise_kernel``, a ``pos_embed``) and rank-2 weights under
        an ``embed`` module are left unchanged with an
        :class:`UnselectedKernelWarning` that lists them.
      * a callable ``(path, leaf) -> None | "conv" | "conv_transpose" |
        "linear"`` (or ``"auto"``), called for every array leaf.
      * a mapping from glob patterns on the path to those kinds; the first
        pattern that matches wins, unmatched leaves are left alone, and a
        pattern that matches nothing is an error. ``{"head/*": None, "*":
        "auto"}`` excludes a subtree and lets ``"auto"`` decide the rest.
      * with ``like``: a mapping from globs on the target's leaf paths
        (``"up/kernel"``) to those kinds, for a kernel that the shapes and
        names leave ambiguous (a transposed conv with as many inputs as
        outputs under a plain name).
    like: the target Flax model's variables: ``model.init(...)`` (call order
      kept; not ``jax.jit(model.init)``, whose dicts come back sorted),
      ``jax.eval_shape`` of it (``ShapeDtypeStruct`` leaves), or
      ``nnx.state(model)`` (sorted keys: an ``OrderWarning`` names layers whose
      order is then a guess). With ``like``, the source's layers are matched onto
      its layers (by name where the names agree, a linen list item
      ``layer1_0`` being PyTorch's ``layer1.0``; else by order among layers
      of the same kind), parameters are renamed by layer kind (PyTorch
      ``running_var`` -> ``batch_stats`` ``var``, Keras ``gamma`` -> ``scale``,
      Lasagne ``inv_std`` -> ``var``, ...), every shape is checked, and the
      result has exactly ``like``'s structure. Conv kernels are converted to
      ``dst``'s layout (a depthwise one where like's shape says so); dense
      kernels to Flax's ``(in, out)`` (``dst``'s ``linear_layout`` only where like's
      shape asks for it).
    flatten: with ``like``, ``{glob on a dense layer's path: (src_order,
      dst_order, sizes)}`` for a dense layer after a flatten, e.g.
      ``{"Dense_0": ("CHW", "HWC", {"C": 64, "H": 4, "W": 4})}``; a glob
      that matches no dense layer is an error.
    strict: with ``like``: a target leaf with no source, or a source tensor
      that no target takes, is a ``ValueError`` naming each; ``False`` keeps
      ``like``'s value for the former and warns (``UnmatchedWarning``).
    epsilon: with ``like``: the epsilon of a Lasagne BatchNorm, whose
      ``var = 1/inv_std**2 - epsilon`` (default: Lasagne's 1e-4).
    order: with ``like``: the target's layer paths (``"/"``-joined, no
      collection) in call order, where ``like`` lost it (sorted keys).

  Returns:
    A tree of the same structure and container types. Dtypes are kept; NumPy
    leaves come back as NumPy, ``jax.Array`` leaves as ``jax.Array``: a sharded
    one is permuted shard by shard (under ``jit``, its ``PartitionSpec``
    permuted like its axes), never gathered onto one device. With ``like``:
    ``like``'s tree, a leaf a ``jax.Array`` where ``like``'s is one or carries a
    sharding (placed with that sharding, so each device receives only its
    shards), else NumPy.

  Raises:
    ValueError: a glob that matches nothing, an unknown kind, a selected leaf
      of the wrong rank, an unknown convention, a tree that contains itself;
      with ``like``: a converted shape that differs from ``like``'s, and
      (``strict``) unmatched leaves on either side.

  Note:
    The first dense layer after a flatten also depends on the order in which
    activations are flattened; no conversion of the weights alone can know
    that. With ``like``, give it with ``flatten=`` (a ``FlattenWarning`` names
    a dense layer after a conv that has none); without, convert that kernel
    with :func:`flipconv.convert_linear_kernel`.

  Examples:
    >>> import numpy as np, flipconv as fc
    >>> sd = {"conv.weight": np.zeros((8, 3, 5, 5)), "conv.bias": np.zeros(8),
    ...       "fc.weight": np.zeros((10, 8))}
    >>> out = fc.convert_params(sd, "pytorch", "flax")
    >>> out["conv.weight"].shape, out["fc.weight"].shape, out["conv.bias"] is sd["conv.bias"]
    ((5, 5, 3, 8), (8, 10), True)

    Onto a Flax model, BatchNorm statistics included:

    >>> import jax, jax.numpy as jnp, flax.linen as nn
    >>> class Net(nn.Module):
    ...   @nn.compact
    ...   def __call__(self, x):
    ...     x = nn.BatchNorm(use_running_average=True)(nn.Conv(8, (5, 5))(x))
    ...     return nn.Dense(10)(x.mean((1, 2)))
    >>> like = jax.eval_shape(Net().init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    >>> sd |= {"bn.weight": np.ones(8), "bn.bias": np.zeros(8), "bn.running_mean": np.zeros(8),
    ...        "bn.running_var": np.ones(8), "bn.num_batches_tracked": np.array(0),
    ...        "fc.bias": np.zeros(10)}
    >>> variables = fc.convert_params(sd, "pytorch", "flax", like=like)
    >>> variables["params"]["Conv_0"]["kernel"].shape
    (5, 5, 3, 8)
    >>> sorted(variables["batch_stats"]["BatchNorm_0"])
    ['mean', 'var']
  """
  where = "convert_params"
  if like is not None:
    return port_params(
      params, src, dst, like=like, select=select, flatten=flatten, strict=strict,
      epsilon=epsilon, order=order, convert=True, where=where,
    )[1]  # fmt: skip
  _no_port_args(flatten, strict, epsilon, order, where)
  params = _prepared(params, where)
  flat, treedef, selected, unclassified = select_leaves(params, src, dst, select, where=where)
  _warn_unclassified(unclassified, where)
  leaves = [leaf for _, leaf in flat]
  cache: dict[Any, Callable[[jax.Array], jax.Array]] = {}
  for sel in selected:
    leaves[sel.index] = _apply(leaves[sel.index], sel.change, sel.plan, cache)
  return _keep_dict_order(params, jax.tree_util.tree_unflatten(treedef, leaves))


def _no_port_args(flatten: Any, strict: Any, epsilon: Any, order: Any, where: str) -> None:
  named = (("flatten", flatten), ("epsilon", epsilon), ("order", order))
  given = [n for n, v in named if v is not None]
  given += ["strict"] if strict is not True else []
  if given:
    raise ValueError(
      f"{where}: {', '.join(given)} only apply with like= (porting onto a target "
      "model's variables); without like, convert one dense kernel after a flatten with "
      "convert_linear_kernel(..., feature_shape=..., feature_order=...)."
    )


def plan_params(
  params: Any,
  src: str | Convention,
  dst: str | Convention,
  *,
  like: Any = None,
  select: str | Mapping[str, str | None] | Selector = "auto",
  flatten: Mapping[str, Any] | None = None,
  strict: bool = True,
  epsilon: float | None = None,
  order: Sequence[str] | None = None,
) -> Plan:
  """What :func:`convert_params` would do, leaf by leaf, without converting anything.

  Args:
    params: as in :func:`convert_params`; leaves may be anything with
      ``shape`` and ``dtype`` (``jax.ShapeDtypeStruct`` too).
    src, dst, select, like, flatten, strict, epsilon, order: as in
      :func:`convert_params`; with ``like`` nothing is converted, but every
      match, name and shape is checked as :func:`convert_params` checks them
      (the same errors and warnings).

  Returns:
    Without ``like``, one :class:`Change` per selected leaf, in the tree's
    flattening order. With ``like``, one :class:`PlanRow` per target leaf,
    grouped by layer in the target's order, naming the source tensor as the
    source names it. The list's ``str()`` is an aligned table (what
    ``flipconv convert --dry-run`` prints).

  Examples:
    >>> import numpy as np, flipconv as fc
    >>> plan = fc.plan_params({"up": {"ConvTranspose_0": {"kernel": np.zeros((4, 4, 8, 3))}}},
    ...                       "flax", "pytorch")
    >>> print(plan[0])
    up/ConvTranspose_0/kernel: conv_transpose (4, 4, 8, 3) -> (8, 3, 4, 4) (HWOI -> OIHW: transpose (2, 3, 0, 1), flip H W)

    With ``like``, one row per target leaf:

    >>> like = {"params": {"fc": {"kernel": np.zeros((8, 10)), "bias": np.zeros(10)}}}
    >>> sd = {"fc.weight": np.zeros((10, 8)), "fc.bias": np.zeros(10)}
    >>> print(fc.plan_params(sd, "pytorch", "flax", like=like))
    params/fc/kernel  <-  fc.weight  (10, 8)  ->  (8, 10)  dense OI -> IO: transpose (1, 0)
    params/fc/bias    <-  fc.bias    (10,)    ->  (10,)    copy
    2 target leaves in 1 layers: 2 matched by name, 0 by order, 0 unmatched.
  """  # noqa: E501
  where = "plan_params"
  if like is not None:
    return port_params(
      params, src, dst, like=like, select=select, flatten=flatten, strict=strict,
      epsilon=epsilon, order=order, convert=False, where=where,
    )[0]  # fmt: skip
  _no_port_args(flatten, strict, epsilon, order, where)
  params = _prepared(params, where)
  _, _, selected, unclassified = select_leaves(params, src, dst, select, where=where)
  _warn_unclassified(unclassified, where)
  return Plan(sel.change for sel in selected)
