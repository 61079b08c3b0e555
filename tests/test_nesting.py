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


class _TorchNamedNet(nn.Module):
  """A linen net whose module names are a PyTorch model's: conv, bn, ln, emb, act, fc."""

  @nn.compact
  def __call__(self, tokens, x):
    e = nn.Embed(11, 4, name="emb")(tokens)  # (B, L, 4)
    y = nn.Conv(4, (3,), padding="SAME", name="conv")(x)  # (B, L, 4)
    y = nn.BatchNorm(use_running_average=True, epsilon=1e-5, name="bn")(y)
    y = nn.PReLU(name="act")(y + e)
    y = nn.LayerNorm(epsilon=1e-5, name="ln")(y)
    return nn.Dense(3, name="fc")(y)


def test_collections_drive_a_model_with_batchnorm_layernorm_embed_prelu():
  # The names a PyTorch state_dict has, already converted to Flax layouts
  # (what `flipconv convert --nest` writes after converting the kernels).
  sd = {
    "emb.weight": rand((11, 4), 1),
    "conv.weight": rand((3, 2, 4), 2),
    "conv.bias": rand((4,), 3),
    "bn.weight": rand((4,), 4),
    "bn.bias": rand((4,), 5),
    "bn.running_mean": rand((4,), 6),
    "bn.running_var": np.abs(rand((4,), 7)) + 0.5,
    "bn.num_batches_tracked": np.array(7, np.int64),
    "act.weight": np.array([0.25], np.float32),
    "ln.weight": rand((4,), 8),
    "ln.bias": rand((4,), 9),
    "fc.weight": rand((4, 3), 10),
    "fc.bias": rand((3,), 11),
  }
  variables = fc.nest_params(sd, collections=True)
  assert set(variables) == {"params", "batch_stats"}
  assert set(variables["batch_stats"]) == {"bn"}
  assert variables["params"]["emb"]["embedding"] is sd["emb.weight"]
  assert variables["params"]["bn"]["scale"] is sd["bn.weight"]
  assert variables["batch_stats"]["bn"]["var"] is sd["bn.running_var"]
  assert variables["params"]["ln"]["scale"] is sd["ln.weight"]
  assert variables["params"]["fc"]["kernel"] is sd["fc.weight"]
  model = _TorchNamedNet()
  tokens = jnp.array([[1, 2, 3, 4, 5]])
  x = jnp.asarray(rand((1, 5, 2), 12))
  init = model.init(jax.random.key(0), tokens, x)
  # PReLU's slope is a scalar in Flax: the one-element tensor has to be reshaped
  # (convert_params(..., like=) does that; nest only renames).
  variables["params"]["act"]["negative_slope"] = variables["params"]["act"][
    "negative_slope"
  ].reshape(())
  assert jax.tree.structure(variables) == jax.tree.structure(dict(init))
  out = model.apply(variables, tokens, x)
  # The same network written out by hand.
  p, s = variables["params"], variables["batch_stats"]
  y = (
    np.stack(
      [
        sum(np.pad(x[0], ((1, 1), (0, 0)))[t + i] @ p["conv"]["kernel"][i] for i in range(3))
        for t in range(5)
      ]
    )
    + p["conv"]["bias"]
  )
  y = (y - s["bn"]["mean"]) / np.sqrt(s["bn"]["var"] + 1e-5) * p["bn"]["scale"] + p["bn"]["bias"]
  y = y + p["emb"]["embedding"][np.asarray(tokens[0])]
  y = np.where(y >= 0, y, 0.25 * y)
  y = (y - y.mean(-1, keepdims=True)) / np.sqrt(y.var(-1, keepdims=True) + 1e-5)
  y = y * p["ln"]["scale"] + p["ln"]["bias"]
  want = y @ p["fc"]["kernel"] + p["fc"]["bias"]
  np.testing.assert_allclose(np.asarray(out[0]), want, rtol=2e-5, atol=2e-5)


def test_collections_keras_names_and_lasagne_inv_std():
  keras = {
    "bn/gamma": rand((4,), 1),
    "bn/beta": rand((4,), 2),
    "bn/moving_mean": rand((4,), 3),
    "bn/moving_variance": rand((4,), 4),
    "dw/depthwise_kernel": rand((3, 3, 4, 1), 5),
  }
  v = fc.nest_params(keras, sep="/", collections=True)
  assert sorted(v["params"]["bn"]) == ["bias", "scale"]
  assert v["batch_stats"]["bn"]["var"] is keras["bn/moving_variance"]
  assert v["params"]["dw"]["kernel"] is keras["dw/depthwise_kernel"]
  lasagne = {
    "bn.beta": rand((4,)),
    "bn.gamma": rand((4,)),
    "bn.mean": rand((4,)),
    "bn.inv_std": rand((4,)),
  }
  with pytest.raises(ValueError, match=r"inv_std.*epsilon"):
    fc.nest_params(lasagne, collections=True)
  with pytest.raises(TypeError, match="collections"):
    fc.nest_params(keras, collections="yes")


def test_torch_tensors_become_numpy_views():
  torch = pytest.importorskip("torch")
  with torch.random.fork_rng():  # its values seeded, the global RNG left as it was
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 2)  # parameters that require grad
  params = fc.nest_params(dict(lin.state_dict(keep_vars=True)))
  w = params["kernel"]
  assert isinstance(w, np.ndarray)
  np.testing.assert_array_equal(w, lin.weight.detach().numpy())
  with torch.no_grad():
    lin.weight[0, 0] = 42.0
  assert w[0, 0] == 42.0  # a view, not a copy
  out = jax.jit(lambda p: p["kernel"] @ jnp.ones(3))(params)
  np.testing.assert_allclose(out, lin.weight.detach().numpy().sum(1), rtol=1e-6)
