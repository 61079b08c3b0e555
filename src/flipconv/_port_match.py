"""Matching a port's target layers with its source layers: by name, else by order."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np

from flipconv._port_layers import (
  LIST_FAMILY,
  LIST_ORDER,
  SourceLayer,
  SourceLeaf,
  TargetLayer,
  shape_of,
)
from flipconv.registry import Convention


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
    shape_of(t.leaves["embedding"].value)
    for t in targets
    if t.kind == "embed" and "embedding" in t.leaves
  ]
  for s in sources:
    if s.kind == "embed" and len(s.leaves) == 1:
      shape = shape_of(next(iter(s.leaves.values())).value)
      if shape in tables:
        tables.remove(shape)
  for s in sources:
    if not tables:
      return
    if s.kind == "dense" and len(s.leaves) == 1:
      shape = shape_of(next(iter(s.leaves.values())).value)
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
  family = LIST_FAMILY.get(src.name, "pytorch")
  orders = LIST_ORDER[family]
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
      if shape_of(nxt) == () and np.issubdtype(np.dtype(nxt.dtype), np.integer):
        layer.dropped.append(leaves[i].name)
        i += 1
    if layer.leaves:
      layer.name = leaves[i - 1].name if i else ""
    pairs.append(Pairing(t, layer if layer.leaves else None, "order"))
  return pairs, leaves[i:]
