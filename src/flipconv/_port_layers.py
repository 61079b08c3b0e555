"""The two sides of a port, as layers: a checkpoint's and a Flax model's.

The source's leaves are grouped into layers (the leaves under one module name),
and so are the target's (the variables under one module path, across the
``params`` and ``batch_stats`` collections); each layer gets a kind (conv,
dense, batchnorm, norm, embed, prelu) from its parameter names and ranks. The
tables here say which name each framework gives a Flax variable.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from flipconv import _trees

_ARR = re.compile(r"arr_(\d+)")
# Collections of a linen variables dict that hold what a checkpoint has.
_COLLECTIONS = ("params", "batch_stats")
# Leaves a checkpoint holds that no Flax layer has.
DROPPED = frozenset({"num_batches_tracked"})

# Parameter names: for each target layer kind and Flax leaf name, the names
# the frameworks give the same parameter (PyTorch, Keras, Lasagne, ONNX, Flax).

NAMES: dict[tuple[str, str], tuple[str, ...]] = {
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
  for (k, flax_key), names in NAMES.items():
    if k == kind and key in names:
      return ("batch_stats" if flax_key in _STATS else "params"), flax_key
  return "params", key


# A list of arrays (Lasagne's get_all_param_values, Keras' get_weights) has no
# names: each framework's order of a layer's parameters, under its own names.
LIST_ORDER: dict[str, dict[str, tuple[tuple[str, str], ...]]] = {
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
LIST_FAMILY = {
  "lasagne": "lasagne",
  "lasagne-mm": "lasagne",
  "theano": "lasagne",
  "tensorflow": "keras",
  "tflite": "keras",
  "flax": "keras",
  "haiku": "keras",
}
# Lasagne's BatchNormLayer default: var = 1 / inv_std**2 - epsilon.
INV_STD_EPSILON = {"lasagne": 1e-4, "lasagne-mm": 1e-4, "theano": 1e-4}


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


def natural_key(text: str) -> tuple[Any, ...]:
  return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


def shape_of(value: Any) -> tuple[int, ...]:
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
    rank = len(shape_of(leaves[k].value))
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
    return "conv" if len(shape_of(leaves["kernel"].value)) >= 3 else "dense"
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
    out.sort(key=lambda layer: tuple(natural_key(p) for p in layer.parts))
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
    out.sort(key=lambda layer: tuple(natural_key(p) for p in layer.parts))
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
