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
from flipconv._validate import shape_str
from flipconv.convert import KernelPlan, apply_plan, depthwise_plan, kernel_plan, linear_plan
from flipconv.registry import Convention

_ARR = re.compile(r"arr_(\d+)")
# Collections of a linen variables dict that hold what a checkpoint has.
_COLLECTIONS = ("params", "batch_stats")
# Leaves a checkpoint holds that no Flax layer has.
DROPPED = frozenset({"num_batches_tracked"})


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
# Parameter names: for each target layer kind and Flax leaf name, the names
# the frameworks give the same parameter (PyTorch, Keras, Lasagne, ONNX, Flax).

_NAMES: dict[tuple[str, str], tuple[str, ...]] = {
  ("conv", "kernel"): ("weight", "kernel", "W", "w", "filter", "depthwise_kernel"),
  ("dense", "kernel"): ("weight", "kernel", "W", "w"),
  ("conv", "bias"): ("bias", "b", "B"),
  ("dense", "bias"): ("bias", "b", "B"),
  ("batchnorm", "scale"): ("weight", "gamma", "scale"),
  ("batchnorm", "bias"): ("bias", "beta", "b", "B"),
  ("batchnorm", "mean"): ("running_mean", "moving_mean", "mean", "input_mean"),
  ("batchnorm", "var"): ("running_var", "moving_variance", "var", "input_var", "inv_std"),
  ("norm", "scale"): ("weight", "gamma", "scale"),
  ("norm", "bias"): ("bias", "beta", "b"),
  ("embed", "embedding"): ("weight", "embeddings", "embedding", "W"),
  ("prelu", "negative_slope"): ("weight", "alpha", "negative_slope"),
}

_STATS = frozenset({"mean", "var"})


def flax_name(kind: str, key: str) -> tuple[str, str]:
  """``(collection, name)`` of the Flax variable that a source parameter of a layer becomes."""
  for (k, flax_key), names in _NAMES.items():
    if k == kind and key in names:
      return ("batch_stats" if flax_key in _STATS else "params"), flax_key
  return "params", key


# A list of arrays (Lasagne's get_all_param_values, Keras' get_weights) has no
# names: each framework's order of a layer's parameters, under its own names.
_LIST_ORDER: dict[str, dict[str, tuple[tuple[str, str], ...]]] = {
  "lasagne": {
    "conv": (("kernel", "W"), ("bias", "b")),
    "dense": (("kernel", "W"), ("bias", "b")),
    "batchnorm": (("bias", "beta"), ("scale", "gamma"), ("mean", "mean"), ("var", "inv_std")),
    "norm": (("bias", "beta"), ("scale", "gamma")),
    "embed": (("embedding", "W"),),
    "prelu": (("negative_slope", "alpha"),),
  },
  "keras": {
    "conv": (("kernel", "kernel"), ("bias", "bias")),
    "dense": (("kernel", "kernel"), ("bias", "bias")),
    "batchnorm": (
      ("scale", "gamma"),
      ("bias", "beta"),
      ("mean", "moving_mean"),
      ("var", "moving_variance"),
    ),
    "norm": (("scale", "gamma"), ("bias", "beta")),
    "embed": (("embedding", "embeddings"),),
    "prelu": (("negative_slope", "alpha"),),
  },
  "pytorch": {
    "conv": (("kernel", "weight"), ("bias", "bias")),
    "dense": (("kernel", "weight"), ("bias", "bias")),
    "batchnorm": (
      ("scale", "weight"),
      ("bias", "bias"),
      ("mean", "running_mean"),
      ("var", "running_var"),
    ),
    "norm": (("scale", "weight"), ("bias", "bias")),
    "embed": (("embedding", "weight"),),
    "prelu": (("negative_slope", "weight"),),
  },
}
_LIST_FAMILY = {
  "lasagne": "lasagne",
  "lasagne-mm": "lasagne",
  "theano": "lasagne",
  "tensorflow": "keras",
  "tflite": "keras",
  "flax": "keras",
  "haiku": "keras",
}
# Lasagne's BatchNormLayer default: var = 1 / inv_std**2 - epsilon.
_INV_STD_EPSILON = {"lasagne": 1e-4, "lasagne-mm": 1e-4, "theano": 1e-4}


# ---------------------------------------------------------------------------
# The two sides, as layers


@dataclasses.dataclass
class SourceLeaf:
  name: str  # exactly as the source names it: "features.0.weight", "arr_3"
  key: str  # the parameter's own name: "weight", "running_var", "inv_std"
  value: Any


@dataclasses.dataclass
class SourceLayer:
  name: str  # "features.0"; "" for a list source
  parts: tuple[str, ...]
  leaves: dict[str, SourceLeaf]
  kind: str
  dropped: list[str] = dataclasses.field(default_factory=list)
  used: set[str] = dataclasses.field(default_factory=set)


@dataclasses.dataclass
class TargetLeaf:
  target: str  # "params/conv1/kernel" (or "conv1/kernel" for an nnx.State)
  key: str  # "kernel", "mean"
  index: int  # position in like's flattening
  value: Any  # like's leaf: jax.Array, ShapeDtypeStruct or NumPy


@dataclasses.dataclass
class TargetLayer:
  path: str  # "conv1", "layer1/0/conv1"
  parts: tuple[str, ...]
  leaves: dict[str, TargetLeaf]
  kind: str


def _natural(text: str) -> tuple[Any, ...]:
  return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


def _shape(value: Any) -> tuple[int, ...]:
  # .shape first: np.shape would read a ShapeDtypeStruct as a 0-d object array.
  return tuple(int(n) for n in (value.shape if hasattr(value, "shape") else np.shape(value)))


def _kernel_key(keys: Sequence[str]) -> str | None:
  return next((k for k in ("weight", "kernel", "W", "w", "filter") if k in keys), None)


def source_kind(name: str, leaves: Mapping[str, SourceLeaf]) -> str:
  """A source layer's kind, from its parameter names and ranks."""
  keys = set(leaves)
  if keys & {"running_mean", "moving_mean", "inv_std", "running_var", "moving_variance"} or (
    {"mean", "var"} <= keys
  ):
    return "batchnorm"
  if "depthwise_kernel" in keys:
    return "conv"
  if keys & {"embeddings", "embedding"}:
    return "embed"
  if "negative_slope" in keys or "alpha" in keys:
    return "prelu"
  k = _kernel_key(list(keys))
  if k is not None:
    rank = len(_shape(leaves[k].value))
    if rank >= 3:
      return "conv"
    if rank == 2:
      return "embed" if _trees.EMBEDDING.search(name) and not keys - {k} else "dense"
    if keys - {k} & {"bias", "beta", "b"}:
      return "norm"
    return "prelu"
  if keys & {"gamma", "beta", "scale"}:
    return "norm"
  return "other"


def target_kind(path: str, leaves: Mapping[str, TargetLeaf]) -> str:
  """A target layer's kind, from its Flax variable names and ranks."""
  keys = set(leaves)
  if {"mean", "var"} <= keys:
    return "batchnorm"
  if "embedding" in keys:
    return "embed"
  if "negative_slope" in keys:
    return "prelu"
  if "kernel" in keys:
    return "conv" if len(_shape(leaves["kernel"].value)) >= 3 else "dense"
  if keys and keys <= {"scale", "bias"}:
    return "norm"
  return "other"


def _is_leaf_value(value: Any) -> bool:
  return _trees.is_native(value) or _trees.is_foreign_array(value)


def _source_from_list(items: Sequence[Any], names: Sequence[str]) -> list[SourceLeaf]:
  return [SourceLeaf(n, "", v) for n, v in zip(names, items, strict=True)]


def source_layers(source: Any, where: str) -> tuple[list[SourceLayer], list[SourceLeaf] | None]:
  """The source's layers in its own order, or ``(_, leaves)`` for a list of arrays."""
  if (
    isinstance(source, Mapping)
    and source
    and all(isinstance(k, str) and _ARR.fullmatch(k) for k in source)
  ):
    names = sorted(source, key=lambda k: int(k[4:]))
    return [], _source_from_list([source[k] for k in names], names)
  if isinstance(source, (list, tuple)) and all(_is_leaf_value(v) for v in source):
    return [], _source_from_list(list(source), [f"[{i}]" for i in range(len(source))])
  flat: list[tuple[tuple[str, ...], str, Any]] = []  # (parts, name, leaf)
  if isinstance(source, Mapping):
    strip = (
      bool(source)
      and "params" in source
      and all(k in (*_COLLECTIONS, "cache", "intermediates") for k in source)
    )
    _walk(source, (), "", flat, strip)
  else:
    for kp, leaf in jax.tree_util.tree_flatten_with_path(source)[0]:
      keys = [_trees.key_str(k) for k in kp]
      if len(keys) > 1 and keys[-1] in _trees.WRAPPER_ATTRS:
        keys = keys[:-1]
      name = ".".join(keys)
      flat.append((tuple(p for k in keys for p in _trees.SEPARATORS.split(k) if p), name, leaf))
  layers: dict[tuple[str, ...], SourceLayer] = {}
  for parts, name, leaf in flat:
    if not _is_leaf_value(leaf):
      continue
    if not parts:
      raise ValueError(f"{where}: the source is a single array, not a tree of named arrays.")
    head, key = parts[:-1], parts[-1]
    layer = layers.get(head)
    if layer is None:
      prefix = name[: max(0, len(name) - len(key) - 1)]
      layer = layers[head] = SourceLayer(prefix, head, {}, "")
    if key in DROPPED:
      layer.dropped.append(name)
      continue
    if key in layer.leaves:
      raise ValueError(
        f"{where}: source names {layer.leaves[key].name!r} and {name!r} are the same "
        f"parameter {'/'.join(parts)!r}; keep one of them."
      )
    layer.leaves[key] = SourceLeaf(name, key, leaf)
  out = [layer for layer in layers.values() if layer.leaves]
  for layer in out:
    layer.kind = source_kind(layer.name, layer.leaves)
  names = [layer.name for layer in out]
  if names == sorted(names):
    # Sorted as strings, as safetensors and some savers list tensors: "features.10"
    # before "features.2" is no model's order, the natural order is the best guess.
    out.sort(key=lambda layer: tuple(_natural(p) for p in layer.parts))
  return out, None


def _walk(node: Any, parts: tuple[str, ...], name: str, out: list, strip: bool) -> None:
  if isinstance(node, Mapping):
    for k, v in node.items():
      k = str(k)
      if strip and not parts:  # a variables dict: the collection is not part of the name
        _walk(v, (), "", out, False)
        continue
      split = tuple(p for p in _trees.SEPARATORS.split(k) if p)
      _walk(v, parts + split, f"{name}/{k}" if name else k, out, False)
  elif isinstance(node, (list, tuple)) and not _is_leaf_value(node):
    for i, v in enumerate(node):
      _walk(v, (*parts, str(i)), f"{name}/{i}" if name else str(i), out, False)
  else:
    out.append((parts, name, node))


def target_layers(like: Any, where: str) -> tuple[list[TargetLayer], bool]:
  """The target's layers in its own order, and whether that order is the call order."""
  flat = jax.tree_util.tree_flatten_with_path(like)[0]
  by_path = {tuple(kp): i for i, (kp, _) in enumerate(flat)}
  collections = isinstance(like, Mapping) and "params" in like
  nnx_state = _is_nnx_state(like)
  variables = _nnx_variables(like) if nnx_state else {}
  entries: list[tuple[str, list[str], int]] = []  # (collection, names, index)
  # Walk like's mappings in their own order (jax's flattening sorts dict keys).
  for keys, index in _ordered_paths(like, by_path):
    names = [_trees.key_str(k) for k in keys]
    if names and names[-1] in _trees.WRAPPER_ATTRS and len(names) > 1:
      names = names[:-1]
    collection = ""
    if collections:
      collection, names = names[0], names[1:]
      if collection not in _COLLECTIONS:
        continue
    elif nnx_state:
      collection = variables.get(tuple(names), "")
      if collection not in _COLLECTIONS:
        continue
    if names:
      entries.append((collection, names, index))
  if collections:
    # A layer's params leaves first (scale, bias, then mean, var), whatever like's
    # key order; the layers' order is merged from the collections below.
    entries.sort(key=lambda e: _COLLECTIONS.index(e[0]))
  layers: dict[tuple[str, ...], TargetLayer] = {}
  sequences: dict[str, dict[tuple[str, ...], None]] = {}
  for collection, names, index in entries:
    head, key = tuple(names[:-1]), names[-1]
    target = "/".join(([collection] if collections else []) + names)
    layer = layers.get(head)
    if layer is None:
      layer = layers[head] = TargetLayer("/".join(head), head, {}, "")
    layer.leaves[key] = TargetLeaf(target, key, index, flat[index][1])
    sequences.setdefault(collection, {})[head] = None
  out = [layers[head] for head in _merged_order(list(sequences.values()))]
  for layer in out:
    layer.kind = target_kind(layer.path, layer.leaves)
  # Sorted keys in every collection (jax.eval_shape, nnx.state): the call order is lost.
  is_sorted = all(list(seq) == sorted(seq) for seq in sequences.values())
  ordered = not is_sorted or len(out) < 2
  if is_sorted:
    out.sort(key=lambda layer: tuple(_natural(p) for p in layer.parts))
  return out, ordered


def _merged_order(sequences: list[Mapping[tuple[str, ...], None]]) -> list[tuple[str, ...]]:
  """The layers of several collections in one order: the first collection's (params,
  every layer with weights), each layer only in a later one (a BatchNorm without scale
  and bias has only batch_stats) placed right after the layer before it there."""
  order: list[tuple[str, ...]] = []
  for seq in sequences:
    position = 0
    for head in seq:
      if head in order:
        position = order.index(head) + 1
      else:
        order.insert(position, head)
        position += 1
  return order


def _ordered_paths(like: Any, by_path: Mapping[tuple[Any, ...], int]) -> list[tuple[tuple, int]]:
  """Like's leaf keypaths in the order of its mappings' own keys."""
  order: list[tuple[tuple, int]] = []

  def walk(node: Any, prefix: tuple[Any, ...]) -> None:
    if isinstance(node, Mapping) or _is_nnx_state(node):
      for k in node:
        walk(node[k], (*prefix, jax.tree_util.DictKey(k)))
      return
    # Anything else: its own flattening, in jax's order.
    for kp, _ in jax.tree_util.tree_flatten_with_path(node)[0]:
      full = (*prefix, *kp)
      if full in by_path:
        order.append((full, by_path[full]))

  walk(like, ())
  if len(order) != len(by_path):  # a container we did not walk: fall back to jax's order
    return sorted(by_path.items(), key=lambda item: item[1])
  return order


def _is_nnx_state(node: Any) -> bool:
  return type(node).__name__ == "State" and type(node).__module__.startswith("flax.nnx")


def _nnx_variables(state: Any) -> dict[tuple[str, ...], str]:
  """nnx: each variable's path and collection (``Param``: params, ``BatchStat``: batch_stats)."""
  from flax import nnx

  out = {}
  for path, var in nnx.to_flat_state(state):
    names = tuple(str(p) for p in path)
    if isinstance(var, nnx.BatchStat):
      out[names] = "batch_stats"
    elif isinstance(var, nnx.Param):
      out[names] = "params"
    else:
      out[names] = type(var).__name__
  return out


# ---------------------------------------------------------------------------
# Matching layers


@dataclasses.dataclass
class Pairing:
  target: TargetLayer
  source: SourceLayer | None
  by: str  # "name", "order" or ""


# linen names the items of a list attribute of setup() "layer1_0" where PyTorch's
# nn.Sequential says "layer1.0"; Flax's own auto names (Conv_0) are capitalised.
_LIST_ITEM = re.compile(r"([a-z]\w*?)_(\d+)")


def _split(parts: Sequence[str]) -> tuple[str, ...]:
  split: list[str] = []
  for p in parts:
    m = _LIST_ITEM.fullmatch(p)
    split += [m[1], m[2]] if m else [p]
  return tuple(p.lower() for p in split)


def _norm(parts: Sequence[str]) -> str:
  return ".".join(_split(parts))


def _indices(names: Sequence[tuple[str, ...]]) -> dict[tuple[str, ...], set[str]]:
  """For each list in a model (the names before an index), the indices it has."""
  out: dict[tuple[str, ...], set[str]] = {}
  for parts in names:
    for i, p in enumerate(parts):
      if p.isdigit():
        out.setdefault(parts[:i], set()).add(p)
  return out


def _compatible(target: str, source: str) -> bool:
  return target == source or "other" in (target, source)


def _find_embeddings(targets: list[TargetLayer], sources: list[SourceLayer]) -> None:
  """Source layers of a lone rank-2 weight that are the target's missing embeddings.

  Such a layer (GPT-2's ``wte``, a ``tok`` or ``emb`` module) looks like a Linear
  without bias; where the target has more embedding tables than the source has
  layers named like one, the first such layers whose shape is a missing table's
  (vocabulary, features) are taken for embeddings.
  """
  tables = [
    _shape(t.leaves["embedding"].value)
    for t in targets
    if t.kind == "embed" and "embedding" in t.leaves
  ]
  for s in sources:
    if s.kind == "embed" and len(s.leaves) == 1:
      shape = _shape(next(iter(s.leaves.values())).value)
      if shape in tables:
        tables.remove(shape)
  for s in sources:
    if not tables:
      return
    if s.kind == "dense" and len(s.leaves) == 1:
      shape = _shape(next(iter(s.leaves.values())).value)
      if shape in tables:
        s.kind = "embed"
        tables.remove(shape)


def match_layers(
  targets: list[TargetLayer], sources: list[SourceLayer]
) -> tuple[list[Pairing], list[SourceLayer]]:
  """Pairs target and source layers: by name first, then by order within each kind."""
  _find_embeddings(targets, sources)
  by_name: dict[str, list[SourceLayer]] = {}
  for s in sources:
    by_name.setdefault(_norm(s.parts), []).append(s)
  # An index is a name only where both sides' lists have the same indices: an
  # nn.Sequential counts its ReLUs (body.0, body.2), a Flax list does not (body_1).
  t_idx = _indices([_split(t.parts) for t in targets])
  s_idx = _indices([_split(s.parts) for s in sources])
  taken: set[int] = set()
  pairs = [Pairing(t, None, "") for t in targets]
  for pair in pairs:
    parts = _split(pair.target.parts)
    if any(p.isdigit() and t_idx[parts[:i]] != s_idx.get(parts[:i]) for i, p in enumerate(parts)):
      continue
    candidates = by_name.get(".".join(parts), [])
    for s in candidates:
      if id(s) not in taken and _compatible(pair.target.kind, s.kind):
        pair.source, pair.by = s, "name"
        taken.add(id(s))
        break
  for kind in dict.fromkeys(t.kind for t in targets):
    if kind == "other":
      continue
    free_t = [p for p in pairs if p.source is None and p.target.kind == kind]
    free_s = [s for s in sources if id(s) not in taken and s.kind == kind]
    for pair, s in zip(free_t, free_s, strict=False):
      pair.source, pair.by = s, "order"
      taken.add(id(s))
  return pairs, [s for s in sources if id(s) not in taken]


def split_list(
  leaves: list[SourceLeaf], targets: list[TargetLayer], src: Convention, where: str
) -> tuple[list[Pairing], list[SourceLeaf]]:
  """A list source: each target layer, in order, takes the leaves it has, in ``src``'s order."""
  family = _LIST_FAMILY.get(src.name, "pytorch")
  orders = _LIST_ORDER[family]
  pairs, i = [], 0
  for t in targets:
    order = orders.get(t.kind)
    if order is None:
      order = tuple((k, k) for k in t.leaves)
    layer = SourceLayer("", (), {}, t.kind)
    for tkey, skey in order:
      if tkey not in t.leaves:
        continue
      if i < len(leaves):
        leaf = leaves[i]
        layer.leaves[skey] = SourceLeaf(leaf.name, skey, leaf.value)
        i += 1
      # PyTorch's list(state_dict.values()) has a BatchNorm's step counter after var.
    if t.kind == "batchnorm" and family == "pytorch" and i < len(leaves):
      nxt = leaves[i].value
      if _shape(nxt) == () and np.issubdtype(np.dtype(nxt.dtype), np.integer):
        layer.dropped.append(leaves[i].name)
        i += 1
    if layer.leaves:
      layer.name = leaves[i - 1].name if i else ""
    pairs.append(Pairing(t, layer if layer.leaves else None, "order"))
  return pairs, leaves[i:]


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
  perm = plan.permutation != tuple(range(len(plan.permutation)))
  if not perm and not plan.flip and plan.expand is None and plan.reshape is None:
    return f"{what}: unchanged ({plan.src_layout})"
  words = []
  if plan.expand is not None or plan.reshape is not None:
    words.append("reshape")
  if perm:
    words.append(f"transpose {plan.permutation}")
  if plan.flip:
    words.append("flip " + " ".join(plan.dst_layout[a] for a in plan.flip_axes))
  return f"{what} {plan.src_layout} -> {plan.dst_layout}: " + ", ".join(words)


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
  shape = _shape(sleaf.value)
  want = _shape(tleaf.value)
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
    eps = _INV_STD_EPSILON.get(src.name, 1e-4) if epsilon is None else float(epsilon)
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
      want = _shape(tleaf.value)
      sleaf = None
      if s is not None:
        names = _NAMES.get((t.kind, key), (key,))
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
        lp = LeafPlan("kept as is (select)", _shape(value))
      else:
        lp = plan_leaf(
          t,
          tleaf,
          SourceLeaf(sleaf.name, sleaf.key, value),
          src,
          dst,
          kind_hint=None if hint == "auto" else hint,
          flatten=rule,
          epsilon=epsilon,
          where=where,
        )
      if lp.new_shape != want:
        mismatched.append(
          f"{tleaf.target} <- {sleaf.name}: {shape_str(_shape(value))} becomes "
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
          _shape(value),
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
