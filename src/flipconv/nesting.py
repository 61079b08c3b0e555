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
) -> dict[str, Any]:
  """Splits flat ``sep``-joined keys into nested dicts and renames the leaf names.

  ``{"block.conv.weight": w}`` becomes ``{"block": {"conv": {"kernel": w}}}``:
  every part of a key but the last names a module (a sub-dict); the last
  names the parameter and is renamed by ``rename`` (only the last part, so a
  module called ``weight`` keeps its name). Values are returned as they are
  (the same objects), in the order of ``flat``; the result is plain dicts,
  ready for ``module.apply({"params": nest_params(...)}, x)``.

  Indices stay strings (``"layer1.0.conv1.weight"`` gives ``{"layer1": {"0":
  ...}}``); a parameter that Flax names differently by module (a BatchNorm's
  ``weight`` is Flax's ``scale``) needs its own renaming, before or after.

  Args:
    flat: a mapping from string keys to leaves (arrays, or anything else).
    sep: the separator in the keys (``"."`` for PyTorch, ``"/"`` for paths).
    rename: leaf names to replace, ``{old: new}``; ``{}`` renames nothing.

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
  # Every key's nested path, then the two kinds of ambiguity, then the tree.
  paths: dict[tuple[str, ...], str] = {}
  for key in flat:
    *heads, last = _parts(key, sep)
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
    node[path[-1]] = flat[key]
  return tree


__all__ = ["nest_params"]
