"""nest_params: flat dotted names -> nested dicts, leaf names renamed, ambiguity refused."""

from __future__ import annotations

import doctest

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.core import FrozenDict

import flipconv as fc
from flipconv import nesting


def rand(shape, seed=0):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_exported():
  assert fc.nest_params is nesting.nest_params
  assert "nest_params" in fc.__all__


def test_docstring_examples():
  result = doctest.testmod(nesting, raise_on_error=False, verbose=False)
  assert result.attempted > 0
  assert result.failed == 0


def test_state_dict_to_linen_params():
  sd = {
    "conv1.weight": rand((3, 3, 2, 4), 1),
    "conv1.bias": rand((4,), 2),
    "block.0.conv.weight": rand((1, 1, 4, 4), 3),
    "head.weight": rand((4, 5), 4),
    "head.bias": rand((5,), 5),
  }
  out = fc.nest_params(sd)
  expected = {
    "conv1": {"kernel": "conv1.weight", "bias": "conv1.bias"},
    "block": {"0": {"conv": {"kernel": "block.0.conv.weight"}}},
    "head": {"kernel": "head.weight", "bias": "head.bias"},
  }
  # Same structure, and every leaf is the very object of its flat key.
  assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(expected)
  for got, key in zip(
    jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(expected), strict=True
  ):
    assert got is sd[key]
  assert set(out) == {"conv1", "block", "head"}
  assert set(out["head"]) == {"kernel", "bias"}
  # Plain dicts all the way down, in the order of the keys.
  assert type(out) is dict and type(out["block"]["0"]) is dict
  assert list(out) == ["conv1", "block", "head"]
  assert list(out["conv1"]) == ["kernel", "bias"]


def test_loads_into_flax_linen():
  class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.Conv(4, (3, 3), name="conv1")(x)
      return nn.Dense(5, name="head")(x.reshape(x.shape[0], -1))

  x = jax.ShapeDtypeStruct((2, 4, 4, 2), jnp.float32)
  # Shapes only (eval_shape): nothing is initialised or compiled.
  init = jax.eval_shape(Net().init, jax.random.key(0), x)["params"]
  flat = {
    f"{m}.{'weight' if p == 'kernel' else p}": rand(v.shape, i)
    for i, (m, ps) in enumerate(init.items())
    for p, v in ps.items()
  }
  params = fc.nest_params(flat)
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(dict(init))
  assert jax.tree_util.tree_map(np.shape, params) == jax.tree_util.tree_map(
    lambda v: v.shape, dict(init)
  )
  # linen takes the nested plain dicts as its params.
  y = jax.eval_shape(Net().apply, {"params": params}, x)
  assert y.shape == (2, 5)


def test_sep_and_rename():
  assert fc.nest_params({"a/b/W": 1, "a/b/b": 2}, sep="/", rename={"W": "kernel"}) == {
    "a": {"b": {"kernel": 1, "b": 2}}
  }
  assert fc.nest_params({"a.weight": 1}, rename={}) == {"a": {"weight": 1}}
  # Only the last part is renamed: a module called "weight" keeps its name.
  assert fc.nest_params({"weight.weight": 1}) == {"weight": {"kernel": 1}}
  # A key without a separator is a top-level leaf (renamed too).
  assert fc.nest_params({"weight": 1, "scale": 2}) == {"kernel": 1, "scale": 2}
  assert fc.nest_params({}) == {}


def test_accepts_any_mapping_returns_plain_dicts():
  out = fc.nest_params(FrozenDict({"a.weight": 1, "a.bias": 2}))
  assert out == {"a": {"kernel": 1, "bias": 2}}
  assert type(out) is dict and type(out["a"]) is dict


def test_values_untouched():
  leaf = {"not": "an array"}
  out = fc.nest_params({"m.extra": leaf})
  assert out["m"]["extra"] is leaf


@pytest.mark.parametrize(
  "flat, needle",
  [
    ({"conv.weight": 1, "conv.kernel": 2}, "'conv.weight' and 'conv.kernel' both become"),
    ({"conv": 1, "conv.weight": 2}, "'conv' is a leaf"),
    ({"conv.bias.x": 1, "conv.bias": 2}, "'conv.bias' is a leaf"),
    ({"a.weight": 1, "a.kernel.x": 2}, "at 'a/kernel'"),
    ({"conv..weight": 1}, "empty name"),
    ({".weight": 1}, "empty name"),
    ({"conv.": 1}, "empty name"),
  ],
)
def test_ambiguous_keys_refused(flat, needle):
  with pytest.raises(ValueError, match="nest_params") as e:
    fc.nest_params(flat)
  assert needle in str(e.value)


def test_bad_arguments():
  with pytest.raises(TypeError, match="mapping"):
    fc.nest_params([("a.weight", 1)])
  with pytest.raises(TypeError, match="keys must be strings"):
    fc.nest_params({("a", "weight"): 1})
  with pytest.raises(TypeError, match="sep"):
    fc.nest_params({"a.weight": 1}, sep="")
  with pytest.raises(TypeError, match="rename"):
    fc.nest_params({"a.weight": 1}, rename={"weight": 3})
  with pytest.raises(TypeError, match="rename"):
    fc.nest_params({"a.weight": 1}, rename=[("weight", "kernel")])
