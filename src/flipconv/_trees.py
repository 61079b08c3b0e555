"""Parameter trees as users hand them to us: foreign array leaves, and trees that are not trees.

Two jobs, both done before ``jax.tree_util`` sees a tree:

* :func:`check_tree` refuses a container that contains itself (JAX's C++
  flattener recurses into it until the interpreter's stack is exhausted, and
  every later JAX call then fails) or that is nested absurdly deep.
* :func:`host_array` turns a ``torch.Tensor`` (``requires_grad`` ones too), or
  anything else with ``__dlpack__`` or ``__array__``, into a NumPy array
  without copying where the framework allows it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

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


def _torch_to_numpy(t: Any) -> np.ndarray:
  import torch

  t = t.detach()
  if t.layout != torch.strided:
    raise TypeError(f"a sparse torch.Tensor ({t.layout}); call .to_dense() first")
  t = t.cpu().resolve_conj().resolve_neg()
  if t.dtype == torch.bfloat16:  # NumPy has no bfloat16; ml_dtypes does, bit for bit
    import ml_dtypes

    return t.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
  return t.numpy()


def host_array(leaf: Any, name: str, where: str) -> Any:
  """A foreign tensor as a NumPy array (a view where possible); other leaves as they are."""
  if not is_foreign_array(leaf):
    return leaf
  try:
    if type(leaf).__module__.split(".")[0] == "torch":
      return _torch_to_numpy(leaf)
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
