"""Porting a whole checkpoint onto a Flax model: ``convert_params(..., like=variables)``.

The source's leaves are grouped into *layers* (the leaves under one module
name, or, for a list of arrays, as many leaves as each target layer takes);
so are the target's (the variables under one module path, across the
``params`` and ``batch_stats`` collections). Each target layer takes one
source layer, by name where the names agree, else by order among layers of
the same kind; then each target leaf takes the source leaf whose name the
layer kind and the source framework give it (``running_var`` -> ``var``),
converted as the target layer needs (conv, transposed conv, depthwise, dense,
dense after a flatten) and checked against the target's shape.

The layers are built in :mod:`flipconv._port_layers` and paired in
:mod:`flipconv._port_match`; this module plans and converts each leaf.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from flipconv import _trees
from flipconv._port_layers import (
  INV_STD_EPSILON,
  NAMES,
  SourceLayer,
  SourceLeaf,
  TargetLayer,
  TargetLeaf,
  shape_of,
  source_layers,
  target_layers,
)
from flipconv._port_match import Pairing, match_layers, split_list
from flipconv._validate import shape_str
from flipconv.convert import KernelPlan, apply_plan, depthwise_plan, kernel_plan, linear_plan
from flipconv.registry import Convention


class UnmatchedWarning(UserWarning):
  """``strict=False``: some target leaves kept ``like``'s value, or source leaves went unused.

  Examples:
    >>> import warnings, jax, numpy as np, flax.linen as nn, flipconv as fc
    >>> like = nn.Conv(4, (3, 3)).init(jax.random.key(0), np.zeros((1, 5, 5, 2)))
    >>> with warnings.catch_warnings(record=True) as caught:
    ...   warnings.simplefilter("always")
    ...   _ = fc.convert_params({"conv.weight": np.zeros((4, 2, 3, 3))}, "pytorch", "flax",
    ...                         like=like, strict=False)   # no bias in the source
    >>> caught[0].category is fc.UnmatchedWarning
    True
  """


class FlattenWarning(UserWarning):
  """A dense layer after a conv may follow a flatten whose order no ``flatten=`` rule gave.

  Examples:
    >>> import warnings, jax, numpy as np, flax.linen as nn, flipconv as fc
    >>> class Net(nn.Module):
    ...   @nn.compact
    ...   def __call__(self, x):   # NHWC; the Dense reads a flatten of (H, W, C)
    ...     x = nn.Conv(4, (3, 3))(x)
    ...     return nn.Dense(3)(x.reshape(x.shape[0], -1))
    >>> like = Net().init(jax.random.key(0), np.zeros((1, 4, 4, 2)))
    >>> sd = {"0.weight": np.zeros((4, 2, 3, 3)), "0.bias": np.zeros(4),   # PyTorch: (C, H, W)
    ...       "2.weight": np.zeros((3, 64)), "2.bias": np.zeros(3)}
    >>> with warnings.catch_warnings(record=True) as caught:
    ...   warnings.simplefilter("always")
    ...   _ = fc.plan_params(sd, "pytorch", "flax", like=like)
    >>> caught[0].category is fc.FlattenWarning
    True
    >>> flatten = {"Dense_0": ("CHW", "HWC", {"C": 4, "H": 4, "W": 4})}   # says it: no warning
    >>> with warnings.catch_warnings(record=True) as caught:
    ...   warnings.simplefilter("always")
    ...   _ = fc.plan_params(sd, "pytorch", "flax", like=like, flatten=flatten)
    >>> caught
    []
  """


class OrderWarning(UserWarning):
  """``like`` lost its call order and some layers were matched by a sorted order of names.

  ``jax.eval_shape`` and ``nnx.state`` sort their keys, so a model whose
  modules are named ``enc`` and ``dec`` comes as ``dec, enc``; where names
  do not agree with the source's, the order matching then guesses. Give the
  call order with ``order=[layer paths]`` (or pass ``model.init(...)``'s own
  output, which keeps it).

  Examples:
    >>> import warnings, jax, numpy as np, flax.linen as nn, flipconv as fc
    >>> class Net(nn.Module):
    ...   @nn.compact
    ...   def __call__(self, x):
    ...     return nn.Dense(4, name="dec")(nn.Dense(4, name="enc")(x))
    >>> like = jax.eval_shape(Net().init, jax.random.key(0), np.zeros((1, 4)))
    >>> list(like["params"])                                    # sorted: the call order is lost
    ['dec', 'enc']
    >>> sd = {"0.weight": np.ones((4, 4)), "0.bias": np.zeros(4),
    ...       "1.weight": np.zeros((4, 4)), "1.bias": np.zeros(4)}
    >>> with warnings.catch_warnings(record=True) as caught:
    ...   warnings.simplefilter("always")
    ...   _ = fc.convert_params(sd, "pytorch", "flax", like=like)
    >>> any(w.category is fc.OrderWarning for w in caught)
    True
    >>> out = fc.convert_params(sd, "pytorch", "flax", like=like, order=["enc", "dec"])
    >>> float(out["params"]["enc"]["kernel"].sum())                  # 0.weight went to enc
    16.0
  """


# ---------------------------------------------------------------------------
# Converting one leaf


@dataclasses.dataclass(frozen=True)
class FlattenRule:
  """A dense layer after a flatten: the two flatten orders and each letter's size."""

  pattern: str
  src_order: str
  dst_order: str
  sizes: tuple[tuple[str, int], ...]

  def matches(self, path: str) -> bool:
    return _trees.glob_regex(self.pattern).fullmatch(path) is not None


def parse_flatten(flatten: Any, where: str) -> list[FlattenRule]:
  if flatten is None:
    return []
  if not isinstance(flatten, Mapping):
    raise TypeError(
      f"{where}: flatten must be a mapping from a glob on the dense layer's path to "
      f"(src_order, dst_order, sizes), e.g. {{'Dense_0': ('CHW', 'HWC', "
      f"{{'C': 64, 'H': 4, 'W': 4}})}}; got {type(flatten).__name__}."
    )
  rules = []
  for pattern, spec in flatten.items():
    if not isinstance(pattern, str) or not pattern:
      raise TypeError(f"{where}: flatten keys must be non-empty globs, got {pattern!r}.")
    if not (isinstance(spec, (tuple, list)) and len(spec) == 3):
      raise TypeError(
        f"{where}: flatten[{pattern!r}] must be (src_order, dst_order, sizes), e.g. "
        f"('CHW', 'HWC', {{'C': 64, 'H': 4, 'W': 4}}); got {spec!r}."
      )
    s_order, d_order, sizes = spec
    if not isinstance(sizes, Mapping):
      if not isinstance(sizes, (tuple, list)) or not isinstance(s_order, str):
        raise TypeError(
          f"{where}: flatten[{pattern!r}] sizes must be a mapping of letters to sizes or a "
          f"tuple in src_order, got {sizes!r}."
        )
      if len(sizes) != len(s_order):
        raise ValueError(
          f"{where}: flatten[{pattern!r}] gives {len(sizes)} sizes for the "
          f"{len(s_order)} letters of {s_order!r}."
        )
      sizes = dict(zip(s_order, sizes, strict=True))
    rules.append(FlattenRule(pattern, s_order, d_order, tuple(sizes.items())))
  return rules


@dataclasses.dataclass(frozen=True)
class LeafPlan:
  """How one source leaf becomes one target leaf."""

  change: str  # in words
  new_shape: tuple[int, ...]
  kernel: KernelPlan | None = None
  inv_std_epsilon: float | None = None  # var = 1 / inv_std**2 - epsilon
  reshape: tuple[int, ...] | None = None


def _kernel_words(plan: KernelPlan, what: str) -> str:
  return f"{what} {plan.describe()}"


def plan_leaf(
  target: TargetLayer,
  tleaf: TargetLeaf,
  sleaf: SourceLeaf,
  src: Convention,
  dst: Convention,
  *,
  kind_hint: str | None,
  flatten: FlattenRule | None,
  epsilon: float | None,
  where: str,
) -> LeafPlan:
  """The conversion of ``sleaf`` into ``tleaf``; its shape is checked by the caller."""
  shape = shape_of(sleaf.value)
  want = shape_of(tleaf.value)
  if target.kind == "conv" and tleaf.key == "kernel":
    if sleaf.key == "depthwise_kernel":
      plan = depthwise_plan(shape, src, dst, where=where)
      return LeafPlan(_kernel_words(plan, "depthwise"), plan.new_shape(shape), plan)
    if kind_hint in ("conv", "conv_transpose"):
      kinds = [kind_hint]
    elif _trees.TRANSPOSED.search(target.path):
      kinds = ["conv_transpose", "conv"]
    else:
      kinds = ["conv", "conv_transpose"]
    plans = [kernel_plan(len(shape), src, dst, kind=k, where=where) for k in kinds]
    plan = next((p for p in plans if p.new_shape(shape) == want), None)
    if plan is None and kind_hint is None:
      # Keras 3 names a DepthwiseConv2D's (kh, kw, C, multiplier) kernel "kernel", and a
      # list has no names at all: a depthwise kernel is known by the target's shape.
      try:
        dw = depthwise_plan(shape, src, dst, where=where)
      except ValueError:
        dw = None
      if dw is not None and dw.new_shape(shape) == want:
        return LeafPlan(_kernel_words(dw, "depthwise"), want, dw)
    plan = plan or plans[0]
    what = "transposed conv" if plan.kind == "conv_transpose" else "conv"
    return LeafPlan(_kernel_words(plan, what), plan.new_shape(shape), plan)
  if target.kind == "dense" and tleaf.key == "kernel" and len(shape) == 2:
    # A Flax dense kernel (nn.Dense, nnx.Linear) is (in, out) whatever dst's convs
    # are (fc.linen convs of convention="pytorch" sit next to a plain nn.Dense); dst's
    # own linear_layout only where like's shape asks for it.
    layouts = [dst if dst.linear_layout == "IO" else dataclasses.replace(dst, linear_layout="IO")]
    if dst.linear_layout != "IO":
      layouts.append(dst)
    kwargs = {}
    what = "dense"
    if flatten is not None:
      kwargs = {
        "feature_shape": dict(flatten.sizes),
        "feature_order": (flatten.src_order, flatten.dst_order),
      }
      what = f"dense after flatten {flatten.src_order} -> {flatten.dst_order}"
    plans = [linear_plan(shape, src, d, where=where, **kwargs) for d in layouts]
    plan = next((p for p in plans if p.new_shape(shape) == want), plans[0])
    return LeafPlan(_kernel_words(plan, what), plan.new_shape(shape), plan)
  if sleaf.key == "inv_std":
    eps = INV_STD_EPSILON.get(src.name, 1e-4) if epsilon is None else float(epsilon)
    return LeafPlan(f"var = 1/inv_std**2 - {eps:g}", shape, inv_std_epsilon=eps)
  if (
    shape != want
    and int(np.prod(shape)) == int(np.prod(want))
    and (target.kind == "prelu" or (len(shape) <= 1 and len(want) <= 1))
  ):
    return LeafPlan(f"reshape {shape_str(shape)} -> {shape_str(want)}", want, reshape=want)
  return LeafPlan("copy", shape)


def apply_leaf(value: Any, plan: LeafPlan) -> Any:
  """Converts one (host or device) leaf; the dtype is kept."""
  if plan.kernel is not None:
    return apply_plan(value, plan.kernel)
  if plan.inv_std_epsilon is not None:
    a = np.asarray(value)
    return (1 / (a.astype(np.float64) ** 2) - plan.inv_std_epsilon).astype(a.dtype)
  if plan.reshape is not None:
    return value.reshape(plan.reshape)
  return value


def place(value: Any, like_leaf: Any) -> Any:
  """A jax.Array with ``like_leaf``'s sharding where it has one, else NumPy."""
  sharding = getattr(like_leaf, "sharding", None)
  if isinstance(like_leaf, jax.Array) or sharding is not None:
    return jax.device_put(value, sharding)
  return np.asarray(value)


# ---------------------------------------------------------------------------
# The whole port


@dataclasses.dataclass(frozen=True)
class PlanRow:
  """One target leaf of a port: where it comes from and what is done to it.

  Attributes:
    target: the target leaf's path, ``"/"``-joined with its collection
      (``"params/conv1/kernel"``; an ``nnx.State`` has none: ``"conv1/kernel"``).
    source: the source tensor's name exactly as the source has it
      (``"features.0.weight"``, ``"arr_3"``); ``None`` when nothing matched.
    change: what is done, in words.
    old_shape: the source tensor's shape (``like``'s when unmatched).
    new_shape: the shape after conversion (= the target's).
    layer: the target layer's path (``"conv1"``).
    kind: the target layer's kind: conv, dense, batchnorm, norm, embed, prelu, other.
    matched_by: ``"name"``, ``"order"``, or ``""`` when unmatched.
    dtype: the dtype of the result.

  Examples:
    >>> import jax, numpy as np, flax.linen as nn, flipconv as fc
    >>> like = nn.Conv(4, (3, 3)).init(jax.random.key(0), np.zeros((1, 5, 5, 2)))
    >>> sd = {"conv.weight": np.zeros((4, 2, 3, 3)), "conv.bias": np.zeros(4)}
    >>> row = fc.plan_params(sd, "pytorch", "flax", like=like)[0]
    >>> row.target, row.source, row.old_shape, row.new_shape
    ('params/kernel', 'conv.weight', (4, 2, 3, 3), (3, 3, 2, 4))
    >>> row.change
    'conv OIHW -> HWIO: transpose (2, 3, 1, 0)'
  """

  target: str
  source: str | None
  change: str
  old_shape: tuple[int, ...]
  new_shape: tuple[int, ...]
  layer: str = ""
  kind: str = ""
  matched_by: str = ""
  dtype: str = ""

  def __str__(self) -> str:
    return (
      f"{self.target} <- {self.source or '(unmatched)'}: {shape_str(self.old_shape)} -> "
      f"{shape_str(self.new_shape)} ({self.change})"
    )


def format_rows(rows: Sequence[PlanRow]) -> str:
  """The rows as an aligned table and a count (``flipconv convert --like --dry-run``)."""
  if not rows:
    return "like has no leaf to fill."
  cells = [
    (
      r.target,
      "<-",
      r.source if r.source is not None else "(unmatched: like's value kept)",
      shape_str(r.old_shape),
      "->",
      shape_str(r.new_shape),
      r.change,
    )
    for r in rows
  ]
  widths = [max(len(c[i]) for c in cells) for i in range(6)]
  lines = ["  ".join(c[i].ljust(widths[i]) for i in range(6)) + "  " + c[6] for c in cells]
  n_by = {by: sum(r.matched_by == by for r in rows) for by in ("name", "order", "")}
  layers = len(dict.fromkeys(r.layer for r in rows))
  lines.append(
    f"{len(rows)} target leaves in {layers} layers: {n_by['name']} matched by name, "
    f"{n_by['order']} by order, {n_by['']} unmatched."
  )
  return "\n".join(lines)


def _check_order(order: Any, layers: list[TargetLayer], where: str) -> list[TargetLayer]:
  if isinstance(order, str) or not isinstance(order, Sequence):
    raise TypeError(
      f"{where}: order must be a list of the target's layer paths ('/'-joined, no "
      f"collection), got {order!r}."
    )
  by_path = {layer.path: layer for layer in layers}
  unknown = [p for p in order if p not in by_path]
  missing = [p for p in by_path if p not in order]
  dup = sorted({p for p in order if list(order).count(p) > 1})
  if unknown or missing or dup:
    what = []
    if unknown:
      what.append(f"not layers of like: {unknown}")
    if missing:
      what.append(f"layers of like it leaves out: {missing}")
    if dup:
      what.append(f"named twice: {dup}")
    raise ValueError(f"{where}: order must name each layer of like once; " + "; ".join(what) + ".")
  return [by_path[p] for p in order]


def _select_kinds(select: Any, layers: list[TargetLayer], where: str) -> dict[str, str | None]:
  """With ``like``: ``select`` maps globs on target leaf paths (no collection) to kinds."""
  if select is None or (isinstance(select, str) and select == "auto"):
    return {}
  if not isinstance(select, Mapping):
    raise TypeError(
      f"{where}: with like=, select must be 'auto' or a mapping from globs on the "
      f"target's leaf paths (e.g. 'up/kernel') to 'conv', 'conv_transpose', 'linear' "
      f"or None; got {type(select).__name__}."
    )
  allowed = ("conv", "conv_transpose", "linear", "auto", None)
  paths = [f"{layer.path}/{k}" for layer in layers for k in layer.leaves]
  out: dict[str, str | None] = {}
  for pattern, kind in select.items():
    if kind not in allowed:
      raise ValueError(f"{where}: select[{pattern!r}] = {kind!r}; allowed: {allowed}.")
    regex = _trees.glob_regex(pattern)
    hits = [p for p in paths if regex.fullmatch(p)]
    if not hits:
      raise ValueError(
        f"{where}: select pattern {pattern!r} matches no leaf of like; its paths look "
        f"like {paths[:4]}."
      )
    for p in hits:
      out.setdefault(p, kind)
  return out


def _out_channels(shape: tuple[int, ...], plan: KernelPlan | None) -> int | None:
  if plan is None:
    return None
  layout = plan.dst_layout
  letter = "I" if plan.kind == "conv_transpose" else "O"
  return shape[layout.index(letter)] if letter in layout else None


def _warn_flatten(
  pairs: list[Pairing],
  source_order: list[SourceLayer] | None,
  conv_out: Mapping[int, int | None],
  dense_in: list[tuple[Pairing, int]],
  src: Convention,
  dst: Convention,
  where: str,
) -> None:
  """Warns for each dense layer right after a conv whose inputs are a multiple of its channels.

  Only where the two conventions flatten a feature map in different orders
  (NCHW's ``CHW`` vs NHWC's ``HWC``); a model that permutes before flattening
  on one side is beyond what the conventions say, and ``flatten=`` says it.
  "Previous" is in the target's call order where ``like`` keeps it, else in the
  source's own order (a state_dict lists its layers as the model registers them;
  sorted target keys put ``fc`` before ``layer1``).
  """
  s_order, d_order = src.layout.replace("N", ""), dst.layout.replace("N", "")
  if not dense_in or s_order == d_order:
    return
  if source_order is None:
    sequence = [(id(p), p.target.kind) for p in pairs]
  else:
    by_source = {id(p.source): p for p in pairs if p.source is not None}
    sequence = [
      (id(by_source[id(s)]), by_source[id(s)].target.kind)
      for s in source_order
      if id(s) in by_source
    ]
  position = {key: i for i, (key, _) in enumerate(sequence)}
  for pair, inputs in dense_in:
    i = position.get(id(pair))
    if i is None:
      continue
    # The nearest conv or dense layer before it: after a dense layer, no feature map.
    key, kind = next(
      ((k, kd) for k, kd in reversed(sequence[:i]) if kd in ("conv", "dense")), (0, "")
    )
    channels = conv_out.get(key) if kind == "conv" else None
    if channels and inputs > channels and inputs % channels == 0:
      path = pair.target.path
      warnings.warn(
        f"{where}: dense layer {path!r} has {inputs} inputs, {inputs // channels} x "
        f"the {channels} channels of the conv before it: if it follows a flatten, "
        f"its rows are in the source's flatten order ({s_order!r} for {src.name!r}, "
        f"{d_order!r} for {dst.name!r}). Pass flatten={{{path!r}: ({s_order!r}, "
        f"{d_order!r}, {{'C': {channels}, ...}})}} (the orders both sides flatten in), "
        "or a rule that maps an order to itself to silence this.",
        FlattenWarning,
        stacklevel=5,
      )


def _numbered_alike(a: str, b: str) -> bool:
  """Sibling names whose sorted order is their creation order: Conv_2/Conv_10, 0/1, layer1/2."""
  stem_a, stem_b = re.sub(r"\d+", "#", a), re.sub(r"\d+", "#", b)
  return stem_a == stem_b and "#" in stem_a


def _warn_guessed_order(pairs: list[Pairing], where: str) -> None:
  """Warns where layers matched by order sit under names whose sorted order means nothing.

  With sorted keys (``jax.eval_shape``, ``nnx.state``) the target's order is the
  natural order of its paths: the call order among ``Conv_0, Conv_1, ...`` (Flax
  numbers them as they are made) or list items, a guess between ``encoder`` and
  ``decoder``. A wrong guess between layers of the same shape passes every check.
  """
  by_kind: dict[str, list[TargetLayer]] = {}
  for p in pairs:
    if p.by == "order":
      by_kind.setdefault(p.target.kind, []).append(p.target)
  doubtful = []
  for layers in by_kind.values():
    for a, b in itertools.pairwise(layers):
      i = next((i for i, (x, y) in enumerate(zip(a.parts, b.parts, strict=False)) if x != y), None)
      if i is not None and not _numbered_alike(a.parts[i], b.parts[i]):
        doubtful.append(f"{a.path!r} before {b.path!r}")
  if doubtful:
    warnings.warn(
      f"{where}: like has sorted keys (its call order is lost), so layers were matched by "
      f"the natural order of their names, a guess for {'; '.join(doubtful[:6])}"
      f"{'; ...' if len(doubtful) > 6 else ''}. Check plan_params, or pass like from "
      "model.init(...) (not jitted) or order=[layer paths].",
      OrderWarning,
      stacklevel=5,
    )


def port(
  source: Any,
  src: Convention,
  dst: Convention,
  like: Any,
  *,
  select: Any,
  flatten: Any,
  strict: bool,
  epsilon: float | None,
  order: Any,
  convert: bool,
  where: str,
) -> tuple[list[PlanRow], Any]:
  """Plans (and with ``convert``, carries out) the port of ``source`` onto ``like``."""
  if not isinstance(strict, bool):
    raise TypeError(f"{where}: strict must be True or False, got {strict!r}.")
  if epsilon is not None and not (isinstance(epsilon, (int, float)) and epsilon >= 0):
    raise TypeError(f"{where}: epsilon must be a non-negative float, got {epsilon!r}.")
  targets, ordered = target_layers(like, where)
  if not targets:
    raise ValueError(
      f"{where}: like has no params or batch_stats leaves; pass the target model's "
      "variables (model.init(...), jax.eval_shape of it, or nnx.state(model))."
    )
  if order is not None:
    targets, ordered = _check_order(order, targets, where), True
  rules = parse_flatten(flatten, where)
  dense = [t.path for t in targets if t.kind == "dense"]
  idle = [r.pattern for r in rules if not any(r.matches(p) for p in dense)]
  if idle:
    # A misspelt glob would leave the dense layer in the source's order, silently.
    raise ValueError(
      f"{where}: flatten pattern(s) {idle} match no dense layer of like; its dense "
      f"layers are {dense or 'none'}."
    )
  kinds = _select_kinds(select, targets, where)
  sources, listed = source_layers(source, where)
  if listed is not None:
    # One kind of layer in natural order (Conv_0, Conv_1, ...) can still take a list.
    if not ordered and len({t.kind for t in targets}) > 1:
      raise ValueError(
        f"{where}: a list source ({len(listed)} arrays, no names) is matched by order "
        "only, but like's layer order is lost (its keys are sorted, as jax.eval_shape "
        "and nnx.state give them); pass like from model.init(...) or order=[layer paths]."
      )
    pairs, unused_leaves = split_list(listed, targets, src, where)
    unused_layers: list[SourceLayer] = []
  else:
    pairs, unused_layers = match_layers(targets, sources)
    unused_leaves = []

  rows: list[PlanRow] = []
  results: dict[int, Any] = {}
  unmatched: list[str] = []
  mismatched: list[str] = []
  conv_out: dict[int, int | None] = {}  # id(pair) -> the conv's output channels
  dense_in: list[tuple[Pairing, int]] = []  # dense layers with no flatten rule, their inputs
  for pair in pairs:
    t, s = pair.target, pair.source
    rule = next((r for r in rules if r.matches(t.path)), None)
    for key, tleaf in t.leaves.items():
      want = shape_of(tleaf.value)
      sleaf = None
      if s is not None:
        names = NAMES.get((t.kind, key), (key,))
        sleaf = next((s.leaves[n] for n in names if n in s.leaves and n not in s.used), None)
      if sleaf is None:
        expected = f"from {s.name or 'the list'!r}" if s is not None else "no source layer"
        unmatched.append(f"{tleaf.target} ({expected})")
        rows.append(
          PlanRow(
            tleaf.target,
            None,
            "unmatched: like's value kept",
            want,
            want,
            t.path,
            t.kind,
            "",
            str(np.dtype(tleaf.value.dtype)),
          )
        )
        continue
      s.used.add(sleaf.key)
      value = sleaf.value  # foreign tensors were read as NumPy before (params._prepared)
      hint = kinds.get(f"{t.path}/{key}", "auto")
      if hint is None:
        lp = LeafPlan("kept as is (select)", shape_of(value))
      else:
        lp = plan_leaf(
          t,
          tleaf,
          sleaf,
          src,
          dst,
          kind_hint=None if hint == "auto" else hint,
          flatten=rule,
          epsilon=epsilon,
          where=where,
        )
      if lp.new_shape != want:
        mismatched.append(
          f"{tleaf.target} <- {sleaf.name}: {shape_str(shape_of(value))} becomes "
          f"{shape_str(lp.new_shape)} ({lp.change}), like has {shape_str(want)}"
        )
      if t.kind == "conv" and key == "kernel":
        conv_out[id(pair)] = _out_channels(want, lp.kernel)
      elif t.kind == "dense" and key == "kernel" and rule is None:
        layout = lp.kernel.dst_layout if lp.kernel is not None else "IO"
        dense_in.append((pair, want[layout.index("I")]))
      rows.append(
        PlanRow(
          tleaf.target,
          sleaf.name,
          lp.change,
          shape_of(value),
          lp.new_shape,
          t.path,
          t.kind,
          pair.by,
          str(np.dtype(value.dtype)),
        )
      )
      if convert and lp.new_shape == want:
        results[tleaf.index] = place(apply_leaf(value, lp), tleaf.value)
  _warn_flatten(
    pairs,
    sources if listed is None and not ordered else None,
    conv_out,
    dense_in,
    src,
    dst,
    where,
  )
  unused = [leaf.name for leaf in unused_leaves]
  for p in pairs:
    if p.source is not None:
      unused += [lf.name for k, lf in p.source.leaves.items() if k not in p.source.used]
  for layer in unused_layers:
    unused += [lf.name for lf in layer.leaves.values()]
  if mismatched:
    raise ValueError(
      f"{where}: {len(mismatched)} converted shape(s) differ from like's: "
      + "; ".join(mismatched[:10])
      + ("; ..." if len(mismatched) > 10 else "")
      + ". Check the layer order (order=), the source convention, or select= for "
      "transposed convs."
    )
  if unmatched or unused:
    text = []
    if unmatched:
      text.append(f"target leaves with no source: {', '.join(unmatched)}")
    if unused:
      text.append(f"source tensors used by no target: {', '.join(unused)}")
    if strict:
      raise ValueError(
        f"{where}: the source and like do not match one to one; "
        + "; ".join(text)
        + ". Name the layers alike, give order=, or pass strict=False to keep like's "
        "values for the unmatched target leaves."
      )
    warnings.warn(f"{where}: " + "; ".join(text) + ".", UnmatchedWarning, stacklevel=4)
  if not ordered:
    _warn_guessed_order(pairs, where)
  if not convert:
    return rows, None
  flat, treedef = jax.tree_util.tree_flatten(like)
  leaves = [results.get(i, leaf) for i, leaf in enumerate(flat)]
  return rows, jax.tree_util.tree_unflatten(treedef, leaves)
