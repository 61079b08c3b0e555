"""Flat, dotted parameter names to the nested dicts that Flax modules take.

A PyTorch ``state_dict`` (or a checkpoint file read back whole) is flat:
``{"conv1.weight": w, "conv1.bias": b}``. A ``flax.linen`` module's
``params`` are nested by module and named ``kernel``/``bias``:
``{"conv1": {"kernel": w, "bias": b}}``. :func:`nest_params` does that
reshaping of the *names*; the arrays themselves are not touched (convert
kernels with :func:`flipconv.convert_params`, before or after).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from flipconv import _port_layers, _trees

_WHERE = "nest_params"


def _parts(key: Any, sep: str) -> tuple[str, ...]:
  if not isinstance(key, str):
    raise TypeError(f"{_WHERE}: keys must be strings, got {type(key).__name__} {key!r}.")
  parts = tuple(key.split(sep))
  if not all(parts):
    raise ValueError(
      f"{_WHERE}: key {key!r} has an empty name between separators {sep!r} "
      "(a leading, trailing or doubled separator); which module would it be?"
    )
  return parts


def nest_params(
  flat: Mapping[str, Any],
  *,
  sep: str = ".",
  rename: Mapping[str, str] = MappingProxyType({"weight": "kernel"}),
  collections: bool = False,
) -> dict[str, Any]:
  """Splits flat ``sep``-joined keys into nested dicts and renames the leaf names.

  ``{"block.conv.weight": w}`` becomes ``{"block": {"conv": {"kernel": w}}}``:
  every part of a key but the last names a module (a sub-dict); the last
  names the parameter and is renamed by ``rename`` (only the last part, so a
  module called ``weight`` keeps its name). Values are returned as they are
  (the same objects; a ``torch.Tensor`` becomes a NumPy array, a view where
  torch allows), in the order of ``flat``; the result is plain dicts, ready
  for ``module.apply({"params": nest_params(...)}, x)``.

  Indices stay strings (``"layer1.0.conv1.weight"`` gives ``{"layer1": {"0":
  ...}}``).

  With ``collections=True`` the result is a Flax variables dict, ``{"params":
  ..., "batch_stats": ...}``, and each parameter is named as the Flax layer of
  its kind names it, whatever framework named it: a BatchNorm's ``weight`` /
  ``gamma`` becomes ``params`` ``scale``, its ``running_mean`` /
  ``moving_mean`` ``batch_stats`` ``mean`` (``num_batches_tracked`` is
  dropped), a LayerNorm's ``weight`` ``scale``, an Embedding's ``weight``
  ``embedding``, a PReLU's ``weight`` ``negative_slope``, a conv or dense
  ``weight``/``W`` ``kernel``. The kind is read from each module's parameter
  names and ranks (``rename`` is not used). To fill a given model's variables
  (and convert its kernels), use ``convert_params(..., like=variables)``.

  Args:
    flat: a mapping from string keys to leaves (arrays, or anything else).
    sep: the separator in the keys (``"."`` for PyTorch, ``"/"`` for paths).
    rename: leaf names to replace, ``{old: new}``; ``{}`` renames nothing.
    collections: return ``{"params": ..., "batch_stats": ...}`` with Flax's
      names per layer kind (see above).

  Returns:
    Nested plain dicts with the same leaves.

  Raises:
    TypeError: ``flat`` is not a mapping, a key is not a string, or ``sep`` /
      ``rename`` are not a non-empty string / a mapping of strings.
    ValueError: ambiguous keys: two keys that give the same nested path (``conv.weight``
      and ``conv.kernel`` with the default ``rename``), a key that is both a
      leaf and a module (``conv`` and ``conv.weight``), or an empty part
      (``conv..weight``).

  Examples:
    >>> import numpy as np, flipconv as fc
    >>> sd = {"conv1.weight": np.zeros((8, 3, 3, 3)), "conv1.bias": np.zeros(8),
    ...       "head.weight": np.zeros((10, 8))}
    >>> params = fc.nest_params(sd)
    >>> {module: sorted(p) for module, p in params.items()}
    {'conv1': ['bias', 'kernel'], 'head': ['kernel']}
    >>> params["conv1"]["kernel"] is sd["conv1.weight"]
    True
    >>> fc.nest_params({"a/b/w": 1}, sep="/", rename={"w": "kernel"})
    {'a': {'b': {'kernel': 1}}}
    >>> bn = {"bn.weight": np.ones(8), "bn.bias": np.zeros(8), "bn.running_mean": np.zeros(8),
    ...       "bn.running_var": np.ones(8), "bn.num_batches_tracked": np.array(3)}
    >>> v = fc.nest_params(bn, collections=True)
    >>> {c: {m: sorted(p) for m, p in tree.items()} for c, tree in v.items()}
    {'params': {'bn': ['bias', 'scale']}, 'batch_stats': {'bn': ['mean', 'var']}}
  """
  if not isinstance(flat, Mapping):
    raise TypeError(
      f"{_WHERE}: expected a mapping of flat keys to leaves (a state_dict), got "
      f"{type(flat).__name__}."
    )
  if not isinstance(sep, str) or not sep:
    raise TypeError(f"{_WHERE}: sep must be a non-empty string, got {sep!r}.")
  if not isinstance(rename, Mapping) or not all(
    isinstance(k, str) and isinstance(v, str) and v for k, v in rename.items()
  ):
    raise TypeError(
      f"{_WHERE}: rename must be a mapping of leaf names to new non-empty names "
      f"(e.g. {{'weight': 'kernel'}}), got {rename!r}."
    )
  if not isinstance(collections, bool):
    raise TypeError(f"{_WHERE}: collections must be True or False, got {collections!r}.")
  renamed = _by_kind(flat, sep) if collections else None
  # Every key's nested path, then the two kinds of ambiguity, then the tree.
  paths: dict[tuple[str, ...], str] = {}
  for key in flat:
    *heads, last = _parts(key, sep)
    if renamed is not None:
      if key not in renamed:
        continue  # dropped (a BatchNorm's step counter)
      collection, name = renamed[key]
      path = (collection, *heads, name)
    else:
      path = (*heads, rename.get(last, last))
    if path in paths:
      raise ValueError(
        f"{_WHERE}: keys {paths[path]!r} and {key!r} both become "
        f"{'/'.join(path)!r} (rename={dict(rename)!r}); keep one of them."
      )
    paths[path] = key
  for path, key in paths.items():
    for i in range(1, len(path)):
      if path[:i] in paths:
        raise ValueError(
          f"{_WHERE}: {paths[path[:i]]!r} is a leaf (at "
          f"{'/'.join(path[:i])!r}) but {key!r} puts parameters under it; a "
          "name cannot be both."
        )
  tree: dict[str, Any] = {}
  for path, key in paths.items():
    node = tree
    for head in path[:-1]:
      node = node.setdefault(head, {})
    # A torch tensor would reach jax.jit as a foreign object: hand on a NumPy view.
    node[path[-1]] = _trees.host_array(flat[key], repr(key), _WHERE)
  return tree


def _by_kind(flat: Mapping[str, Any], sep: str) -> dict[str, tuple[str, str]]:
  """Each key's Flax collection and parameter name, from its module's kind."""
  modules: dict[tuple[str, ...], dict[str, Any]] = {}
  for key, value in flat.items():
    *heads, last = _parts(key, sep)
    modules.setdefault(tuple(heads), {})[last] = _port_layers.SourceLeaf(key, last, value)
  out = {}
  for heads, leaves in modules.items():
    kind = _port_layers.source_kind(sep.join(heads), leaves)
    for last, leaf in leaves.items():
      if last in _port_layers.DROPPED:
        continue
      if last == "inv_std":
        raise ValueError(
          f"{_WHERE}: {leaf.name!r} is a Lasagne BatchNorm's inv_std; its variance "
          "needs the layer's epsilon: use convert_params(..., like=variables, epsilon=...)."
        )
      out[leaf.name] = _port_layers.flax_name(kind, last)
  return out


__all__ = ["nest_params"]
