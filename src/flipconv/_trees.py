"""Parameter trees as users hand them to us: their names, foreign array leaves, and trees
that are not trees.

The names of a tree's leaves and modules (:func:`key_str`, the separators,
what names a transposed conv or an embedding) are read the same way by the
converter (:mod:`flipconv.params`) and the porter (:mod:`flipconv._porting`).
Two more jobs, both done before ``jax.tree_util`` sees a tree:

* :func:`check_tree` refuses a container that contains itself (JAX's C++
  flattener recurses into it until the interpreter's stack is exhausted, and
  every later JAX call then fails) or that is nested absurdly deep.
* :func:`host_array` turns a ``torch.Tensor`` (``requires_grad`` ones too), or
  anything else with ``__dlpack__`` or ``__array__``, into a NumPy array
  without copying where the framework allows it.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

# Keys are split at dots and slashes: "layer1.0.conv1.weight" is layer1/0/conv1/weight.
SEPARATORS = re.compile(r"[./]")
# A module (path part or node class) named like a transposed conv.
TRANSPOSED = re.compile(r"transpose|deconv|up[-_]?conv", re.IGNORECASE)
# A module named like an embedding (embed, tok_emb, GPT-2's wte/wpe): its rank-2
# "weight" is a lookup table, not a dense kernel.
EMBEDDING = re.compile(r"emb|wte|wpe", re.IGNORECASE)
# nnx.Variable and similar wrappers flatten to a ".value" child: not part of the name.
WRAPPER_ATTRS = frozenset({"value", "raw_value"})


def key_str(key: Any) -> str:
  """One ``jax.tree_util`` path key as the name it stands for."""
  tu = jax.tree_util
  if isinstance(key, tu.DictKey):
    return str(key.key)
  if isinstance(key, tu.SequenceKey):
    return str(key.idx)
  if isinstance(key, tu.GetAttrKey):
    return key.name
  if isinstance(key, tu.FlattenedIndexKey):
    return str(key.key)
  return str(key)


@functools.lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern[str]:
  """A glob on ``"/"``-joined paths; a dot counts as ``"/"`` (``"a.*.w"`` is ``"a/*/w"``)."""
  return re.compile(fnmatch.translate(pattern.replace(".", "/")))


# Far deeper than any model (a ResNet-152 state_dict is 6 deep), far shallower
# than the interpreter's recursion limit that jax.tree_util would hit.
MAX_DEPTH = 200


def _children(node: Any) -> list[Any] | None:
  if isinstance(node, Mapping):
    return list(node.values())
  if isinstance(node, (list, tuple)):
    return list(node)
  return None


def check_tree(tree: Any, name: str, where: str) -> None:
  """Raises ``ValueError`` for a cyclic or too deeply nested dict/list/tuple tree.

  Only Python containers are walked (other pytree nodes cannot refer to
  themselves without a container in between that this walk sees).
  """
  # An explicit stack: a recursive walk would itself overflow on the trees we refuse.
  on_path: set[int] = set()
  stack: list[tuple[Any, int, bool]] = [(tree, 0, False)]
  while stack:
    node, depth, leaving = stack.pop()
    if leaving:
      on_path.discard(id(node))
      continue
    children = _children(node)
    if children is None:
      continue
    if id(node) in on_path:
      raise ValueError(
        f"{where}: {name} contains itself (a {type(node).__name__} that is its own "
        "descendant); a parameter tree must be finite."
      )
    if depth >= MAX_DEPTH:
      raise ValueError(
        f"{where}: {name} is nested more than {MAX_DEPTH} levels deep; no model's "
        "parameters are. Is it the tree you meant?"
      )
    on_path.add(id(node))
    stack.append((node, depth, True))
    stack.extend((c, depth + 1, False) for c in children)


def is_native(leaf: Any) -> bool:
  """NumPy arrays and scalars, JAX arrays and tracers, and ``ShapeDtypeStruct``s."""
  return isinstance(
    leaf, (np.ndarray, np.generic, jax.Array, jax.core.Tracer, jax.ShapeDtypeStruct)
  )


def is_foreign_array(leaf: Any) -> bool:
  """A tensor of another framework: has a shape and a dtype, and a way out to NumPy."""
  if is_native(leaf) or isinstance(leaf, type):
    return False
  return hasattr(leaf, "shape") and (hasattr(leaf, "__dlpack__") or hasattr(leaf, "__array__"))


def torch_to_numpy(t: Any) -> np.ndarray:
  """A dense torch tensor's data as NumPy, without a copy where torch allows.

  The dtypes NumPy lacks (bfloat16, float8_*) come as their ``ml_dtypes`` equal,
  bit for bit. A tensor that has no such form raises ``TypeError`` whose message
  says what it is (``"a sparse tensor (sparse_coo)"``), for the caller to name it.
  """
  import ml_dtypes
  import torch

  kind = str(t.dtype).removeprefix("torch.")
  if t.layout != torch.strided:
    raise TypeError(f"a sparse tensor ({str(t.layout).removeprefix('torch.')})")
  if t.is_quantized:
    raise TypeError(f"a quantized tensor ({kind})")
  try:
    t = t.detach().cpu().resolve_conj().resolve_neg()
    ml = getattr(ml_dtypes, kind, None)
    if ml is not None and np.dtype(ml).itemsize == t.element_size():
      # NumPy has no such dtype; reinterpret the bytes (same bits, same order).
      return t.contiguous().view(torch.uint8).numpy().view(ml).reshape(tuple(t.shape))
    return t.numpy()
  except Exception as e:  # no NumPy dtype (float4_e2m1fn_x2), a nested or meta tensor ...
    text = " ".join(str(e).split())[:200]
    raise TypeError(f"of dtype {kind} ({type(e).__name__}{': ' + text if text else ''})") from None


def host_array(leaf: Any, name: str, where: str) -> Any:
  """A foreign tensor as a NumPy array (a view where possible); other leaves as they are."""
  if not is_foreign_array(leaf):
    return leaf
  try:
    if type(leaf).__module__.split(".")[0] == "torch":
      return torch_to_numpy(leaf)
    return np.asarray(leaf)
  except Exception as e:  # a framework's own error: say which leaf, and what it was
    raise TypeError(
      f"{where}: cannot read {name} ({type(leaf).__name__} of dtype {leaf.dtype}) as a "
      f"NumPy array: {e}"
    ) from None


def host_leaves(tree: Any, where: str) -> Any:
  """``tree`` with every foreign tensor leaf replaced by a NumPy array."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
  if not any(is_foreign_array(leaf) for _, leaf in flat):
    return tree
  leaves = [host_array(leaf, jax.tree_util.keystr(kp), where) for kp, leaf in flat]
  return jax.tree_util.tree_unflatten(treedef, leaves)
