"""``convert_params(..., like=)`` from Keras and Lasagne, and the port's contract.

Keras 3 (jax backend) is its own oracle; the Lasagne net's ground truth is
computed here from Lasagne's formulas in NumPy/SciPy (true convolution,
``(x - mean) * inv_std * gamma + beta``, ``DenseLayer`` flattening its input in
``(C, H, W)`` order). Then: strict errors naming both sides, ``strict=False``,
sharded ``like``, plan rows, cyclic trees, and ``convert_linear_kernel``'s
``feature_order`` against a NumPy flatten for any order of the letters.
"""

from __future__ import annotations

import itertools
import warnings

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from scipy import signal

import flipconv as fc
from _reference import assert_matches  # within _reference.PORT_TOL of the oracle

KEY = jax.random.key(0, impl="unsafe_rbg")  # like's values are overwritten: fast to compile


def rand(shape, seed, scale=1.0):
  return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


# ---------------------------------------------------------------------------
# Keras 3: Conv2D, BatchNormalization, DepthwiseConv2D, Flatten, Dense

K_IN = (10, 8, 3)  # H, W, C
K_FEAT = {"H": 8, "W": 6, "C": 12}  # after the VALID depthwise conv


def keras_model():
  keras = pytest.importorskip("keras")
  if keras.backend.backend() != "jax":  # conftest sets KERAS_BACKEND=jax before keras loads
    pytest.skip("these oracles run Keras on the jax backend")
  layers = keras.layers
  inputs = keras.Input(K_IN)
  x = layers.Conv2D(6, 3, padding="same")(inputs)
  x = layers.ReLU()(layers.BatchNormalization()(x))
  x = layers.DepthwiseConv2D(3, padding="valid", depth_multiplier=2)(x)
  x = layers.BatchNormalization()(x)
  x = layers.Dense(5)(layers.Flatten()(x))
  model = keras.Model(inputs, x)
  # Random weights, and moving statistics far from (0, 1).
  rng = np.random.default_rng(0)
  weights = []
  for w in model.weights:
    shape = tuple(w.shape)
    if w.path.endswith("moving_variance"):
      weights.append(rng.uniform(0.5, 2.0, shape).astype(np.float32))
    else:
      weights.append((rng.standard_normal(shape) * 0.5).astype(np.float32))
  model.set_weights(weights)
  return model


class KerasNet(nn.Module):
  @nn.compact
  def __call__(self, x):
    bn = lambda: nn.BatchNorm(use_running_average=True, epsilon=1e-3)  # Keras' epsilon
    x = nn.relu(bn()(nn.Conv(6, (3, 3), padding="SAME")(x)))
    x = bn()(nn.Conv(12, (3, 3), padding="VALID", feature_group_count=6)(x))
    return nn.Dense(5)(x.reshape(x.shape[0], -1))


@pytest.fixture(scope="module")
def keras_case():
  model = keras_model()
  x = rand((2, *K_IN), 1)
  return model, x, np.asarray(model(x, training=False))


@pytest.mark.parametrize("source", ["get_weights", "names"])
def test_keras_model(keras_case, source):
  model, x, want = keras_case
  net = KerasNet()
  like = net.init(KEY, x)
  if source == "get_weights":
    params = model.get_weights()  # a list: matched by order, in Keras' order per layer
  else:
    params = {w.path: np.asarray(w) for w in model.weights}
  # Keras and Flax both flatten NHWC in (H, W, C) order: no flatten= needed, no warning.
  with warnings.catch_warnings():
    warnings.simplefilter("error", fc.FlattenWarning)
    variables = fc.convert_params(params, "keras", "flax", like=like)
  assert variables["params"]["Conv_1"]["kernel"].shape == (3, 3, 1, 12)
  assert_matches(jax.jit(net.apply)(variables, x), want)
  # An explicit identity rule gives the same.
  flatten = {"Dense_0": ("HWC", "HWC", K_FEAT)}
  same = fc.convert_params(params, "keras", "flax", like=like, flatten=flatten)
  chex.assert_trees_all_equal(same, variables)


def test_keras_names_are_kept_in_the_plan(keras_case):
  model, x, _ = keras_case
  like = KerasNet().init(KEY, x)
  params = {w.path: np.asarray(w) for w in model.weights}
  plan = fc.plan_params(
    params, "keras", "flax", like=like, flatten={"Dense_0": ("HWC", "HWC", K_FEAT)}
  )
  rows = {r.target: r.source for r in plan}
  # Keras numbers its auto-names per process (depthwise_conv2d_3 when other
  # tests built three before), so the expected names come from the model.
  bn0, bn1 = (la.name for la in model.layers if type(la).__name__ == "BatchNormalization")
  (dw,) = (la.name for la in model.layers if type(la).__name__ == "DepthwiseConv2D")
  assert rows["batch_stats/BatchNorm_1/var"] == f"{bn1}/moving_variance"
  assert rows["params/Conv_1/kernel"] == f"{dw}/kernel"
  assert rows["params/BatchNorm_0/scale"] == f"{bn0}/gamma"


# ---------------------------------------------------------------------------
# Lasagne: np.savez(*get_all_param_values(net)) of Conv2DLayer + BatchNormLayer + DenseLayer

L_CIN, L_COUT, L_K, L_HW, L_OUT = 2, 3, 3, (7, 6), 4
L_H, L_W = L_HW[0] - L_K + 1, L_HW[1] - L_K + 1  # VALID
L_EPS = 1e-4  # BatchNormLayer's default epsilon


def lasagne_params():
  """get_all_param_values order: conv W, b; BN beta, gamma, mean, inv_std; dense W, b."""
  rng = np.random.default_rng(3)
  f32 = lambda a: np.asarray(a, np.float32)
  return [
    f32(rng.standard_normal((L_COUT, L_CIN, L_K, L_K))),  # W: (O, I, kh, kw)
    f32(rng.standard_normal(L_COUT)),
    f32(rng.standard_normal(L_COUT) * 0.3),  # beta
    f32(rng.uniform(0.5, 1.5, L_COUT)),  # gamma
    f32(rng.standard_normal(L_COUT)),  # mean
    f32(rng.uniform(0.3, 0.9, L_COUT)),  # inv_std = 1 / sqrt(var + epsilon)
    f32(rng.standard_normal((L_COUT * L_H * L_W, L_OUT)) * 0.2),  # dense W: (in, out)
    f32(rng.standard_normal(L_OUT)),
  ]


def lasagne_forward(x, params):
  """Lasagne's formulas in NumPy: flip_filters=True is a true convolution."""
  w, b, beta, gamma, mean, inv_std, dw, db = (np.asarray(p, np.float64) for p in params)
  n = x.shape[0]
  conv = np.zeros((n, L_COUT, L_H, L_W))
  for i, o, c in itertools.product(range(n), range(L_COUT), range(L_CIN)):
    conv[i, o] += signal.convolve2d(x[i, c], w[o, c], mode="valid")
  conv += b[:, None, None]
  bn = (conv - mean[:, None, None]) * (inv_std * gamma)[:, None, None] + beta[:, None, None]
  h = np.maximum(bn, 0).reshape(n, -1)  # DenseLayer flattens (C, H, W)
  return h @ dw + db


class LasagneNet(nn.Module):
  nchw: bool = False  # fc.linen's lasagne layer: NCHW, W as Lasagne holds it

  @nn.compact
  def __call__(self, x):  # NHWC, or NCHW
    if self.nchw:
      x = fc.linen.Conv(L_COUT, (L_K, L_K), padding="VALID", convention="lasagne")(x)
    else:
      x = nn.Conv(L_COUT, (L_K, L_K), padding="VALID")(x)
    bn = nn.BatchNorm(use_running_average=True, epsilon=L_EPS, axis=1 if self.nchw else -1)
    x = nn.relu(bn(x))
    return nn.Dense(L_OUT)(x.reshape(x.shape[0], -1))


L_FLATTEN = {"Dense_0": ("CHW", "HWC", {"C": L_COUT, "H": L_H, "W": L_W})}


@pytest.mark.parametrize("from_file", [False, True])
def test_lasagne_npz_list(tmp_path, from_file):
  params = lasagne_params()
  x = rand((2, L_CIN, *L_HW), 4)
  want = lasagne_forward(x, params)
  source = {f"arr_{i}": p for i, p in enumerate(params)}
  if from_file:
    np.savez(tmp_path / "net.npz", *params)
    source = np.load(tmp_path / "net.npz")
  net, xh = LasagneNet(), np.moveaxis(x, 1, -1)
  like = net.init(KEY, xh)
  variables = fc.convert_params(source, "lasagne", "flax", like=like, flatten=L_FLATTEN)
  var = variables["batch_stats"]["BatchNorm_0"]["var"]
  np.testing.assert_allclose(var, 1 / params[5].astype(np.float64) ** 2 - L_EPS, rtol=1e-6)
  assert_matches(jax.jit(net.apply)(variables, xh), want)
  plan = fc.plan_params(source, "lasagne", "flax", like=like, flatten=L_FLATTEN)
  assert [r.source for r in plan] == [f"arr_{i}" for i in (0, 1, 3, 2, 4, 5, 6, 7)]
  assert [r.target for r in plan][2:6] == [
    "params/BatchNorm_0/scale",
    "params/BatchNorm_0/bias",
    "batch_stats/BatchNorm_0/mean",
    "batch_stats/BatchNorm_0/var",
  ]


def test_lasagne_onto_fc_linen_lasagne_layers():
  params = lasagne_params()
  x = rand((2, L_CIN, *L_HW), 4)
  net = LasagneNet(nchw=True)
  like = net.init(KEY, x)
  # Both flatten NCHW: the identity rule says so (and silences the FlattenWarning).
  flatten = {"Dense_0": ("CHW", "CHW", {"C": L_COUT, "H": L_H, "W": L_W})}
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    variables = fc.convert_params(params, "lasagne", "lasagne", like=like, flatten=flatten)
  np.testing.assert_array_equal(variables["params"]["Conv_0"]["kernel"], params[0])
  np.testing.assert_array_equal(variables["params"]["Dense_0"]["kernel"], params[6])
  assert_matches(jax.jit(net.apply)(variables, x), lasagne_forward(x, params))


def test_lasagne_list_needs_an_ordered_like():
  params = lasagne_params()
  like = jax.eval_shape(LasagneNet().init, KEY, jnp.zeros((1, *L_HW, L_CIN)))
  with pytest.raises(ValueError, match="order"):
    fc.convert_params(params, "lasagne", "flax", like=like, flatten=L_FLATTEN)
  # order= gives it back.
  order = ["Conv_0", "BatchNorm_0", "Dense_0"]
  variables = fc.convert_params(
    params, "lasagne", "flax", like=like, flatten=L_FLATTEN, order=order
  )
  x = rand((2, L_CIN, *L_HW), 4)
  got = LasagneNet().apply(variables, np.moveaxis(x, 1, -1))
  assert_matches(got, lasagne_forward(x, params))


def test_lasagne_epsilon_keyword():
  params = lasagne_params()
  like = LasagneNet().init(KEY, jnp.zeros((1, *L_HW, L_CIN)))
  out = fc.convert_params(params, "lasagne", "flax", like=like, flatten=L_FLATTEN, epsilon=1e-3)
  var = out["batch_stats"]["BatchNorm_0"]["var"]
  np.testing.assert_allclose(var, 1 / params[5].astype(np.float64) ** 2 - 1e-3, rtol=1e-6)


# ---------------------------------------------------------------------------
# strict, plan rows, shardings: a small PyTorch-named state_dict


class Small(nn.Module):
  extra_norm: bool = False

  @nn.compact
  def __call__(self, x):
    x = nn.BatchNorm(use_running_average=True)(nn.Conv(8, (3, 3))(x))
    if self.extra_norm:
      x = nn.LayerNorm()(x)
    return nn.Dense(4)(x.mean((1, 2)))


def small_state():
  return {
    "features.0.weight": rand((8, 3, 3, 3), 10),
    "features.0.bias": rand((8,), 11),
    "features.1.weight": rand((8,), 12),
    "features.1.bias": rand((8,), 13),
    "features.1.running_mean": rand((8,), 14),
    "features.1.running_var": np.abs(rand((8,), 15)) + 0.5,
    "features.1.num_batches_tracked": np.array(3, np.int64),
    "fc.weight": rand((4, 8), 16),
    "fc.bias": rand((4,), 17),
  }


SMALL_X = jnp.zeros((1, 6, 6, 3))


def test_strict_error_lists_both_sides():
  sd = small_state() | {"aux.weight": rand((2, 7), 18), "fc.scale": rand((4,), 19)}
  like = Small(extra_norm=True).init(KEY, SMALL_X)
  with pytest.raises(ValueError) as err:
    fc.convert_params(sd, "pytorch", "flax", like=like)
  text = str(err.value)
  # Target side: the layer no source has; source side: the tensors no target takes.
  assert "params/LayerNorm_0/scale" in text and "params/LayerNorm_0/bias" in text
  assert "aux.weight" in text and "fc.scale" in text
  assert "features.0.weight" not in text


def test_strict_false_warns_and_keeps_likes_values():
  sd = small_state() | {"aux.weight": rand((2, 7), 18)}
  like = Small(extra_norm=True).init(KEY, SMALL_X)
  with pytest.warns(fc.UnmatchedWarning, match="LayerNorm_0") as record:
    out = fc.convert_params(sd, "pytorch", "flax", like=like, strict=False)
  assert "aux.weight" in str(record[0].message)
  np.testing.assert_array_equal(
    out["params"]["LayerNorm_0"]["scale"], like["params"]["LayerNorm_0"]["scale"]
  )
  np.testing.assert_array_equal(out["params"]["Dense_0"]["kernel"], sd["fc.weight"].T)
  with pytest.warns(fc.UnmatchedWarning):
    plan = fc.plan_params(sd, "pytorch", "flax", like=like, strict=False)
  unmatched = [r for r in plan if r.source is None]
  assert [r.target for r in unmatched] == ["params/LayerNorm_0/scale", "params/LayerNorm_0/bias"]
  assert all(r.matched_by == "" for r in unmatched)
  assert "(unmatched" in str(plan)


def test_plan_rows_one_per_target_leaf_in_target_order_with_source_names():
  sd = small_state()
  like = Small().init(KEY, SMALL_X)
  plan = fc.plan_params(sd, "pytorch", "flax", like=like)
  assert [(r.target, r.source) for r in plan] == [
    ("params/Conv_0/kernel", "features.0.weight"),
    ("params/Conv_0/bias", "features.0.bias"),
    ("params/BatchNorm_0/scale", "features.1.weight"),
    ("params/BatchNorm_0/bias", "features.1.bias"),
    ("batch_stats/BatchNorm_0/mean", "features.1.running_mean"),
    ("batch_stats/BatchNorm_0/var", "features.1.running_var"),
    ("params/Dense_0/kernel", "fc.weight"),
    ("params/Dense_0/bias", "fc.bias"),
  ]
  assert plan[0].old_shape == (8, 3, 3, 3) and plan[0].new_shape == (3, 3, 3, 8)
  text = str(plan)
  for row in plan:
    assert row.target in text and row.source in text
  assert "num_batches_tracked" not in text


@pytest.fixture(scope="module")
def mesh():
  if len(jax.devices()) < 8:
    pytest.skip("needs 8 devices (XLA_FLAGS host device count, see conftest)")
  return Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))


SPECS = {  # each like leaf's PartitionSpec (Flax layouts)
  "kernel": P(None, None, None, "data"),  # Conv HWIO: sharded on O
  "dense": P("data", "model"),
  "vector": P("data"),
}


def spec_for(path, leaf):
  if leaf.ndim == 4:
    return SPECS["kernel"]
  return SPECS["dense"] if leaf.ndim == 2 else SPECS["vector"]


@pytest.mark.parametrize("abstract", [False, True])
def test_sharded_like_places_every_leaf_with_its_sharding(mesh, abstract):
  sd = small_state()
  like = Small().init(KEY, SMALL_X)
  shardings = jax.tree.map_with_path(lambda p, leaf: NamedSharding(mesh, spec_for(p, leaf)), like)
  if abstract:
    like_s = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), like, shardings
    )
  else:
    like_s = jax.tree.map(jax.device_put, like, shardings)
  out = fc.convert_params(sd, "pytorch", "flax", like=like_s)
  plain = fc.convert_params(sd, "pytorch", "flax", like=like)
  for got, want, s in zip(
    jax.tree.leaves(out), jax.tree.leaves(plain), jax.tree.leaves(shardings), strict=True
  ):
    assert isinstance(got, jax.Array)
    assert got.sharding.is_equivalent_to(s, got.ndim), (got.sharding, s)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  kernel = out["params"]["Conv_0"]["kernel"]
  # Each device holds a quarter of the output channels, not the whole kernel.
  assert {shard.data.shape for shard in kernel.addressable_shards} == {(3, 3, 3, 2)}


# ---------------------------------------------------------------------------
# Cyclic trees


def cyclic_dict():
  d = {"conv": {"weight": np.zeros((2, 2, 3, 3), np.float32)}}
  d["conv"]["self"] = d
  return d


def cyclic_list():
  a = [np.zeros((2, 2, 3, 3), np.float32)]
  a.append(a)
  return a


@pytest.mark.parametrize("make", [cyclic_dict, cyclic_list])
@pytest.mark.parametrize("fn", [fc.convert_params, fc.plan_params])
def test_cyclic_tree_is_refused_and_jax_still_works(make, fn):
  with pytest.raises(ValueError, match="contains itself"):
    fn(make(), "pytorch", "flax")
  like = Small().init(KEY, SMALL_X)
  with pytest.raises(ValueError, match="contains itself"):
    fn(make(), "pytorch", "flax", like=like)
  cyclic_like = {"params": {"Conv_0": {}}}
  cyclic_like["params"]["Conv_0"]["loop"] = cyclic_like
  with pytest.raises(ValueError, match="like contains itself"):
    fn(small_state(), "pytorch", "flax", like=cyclic_like)
  # JAX is unharmed: trees flatten and programs compile.
  assert jax.tree.leaves({"a": [1, 2]}) == [1, 2]
  assert float(jax.jit(lambda v: (v * 2).sum())(jnp.ones(3))) == 6.0
  out = fc.convert_params(small_state(), "pytorch", "flax", like=like)
  assert out["params"]["Conv_0"]["kernel"].shape == (3, 3, 3, 8)


# ---------------------------------------------------------------------------
# convert_linear_kernel(feature_order=...) against a NumPy flatten

LETTERS = "CHWD"


@st.composite
def flatten_cases(draw):
  n = draw(st.integers(1, 4))
  letters = "".join(draw(st.permutations(LETTERS))[:n])
  src_order = "".join(draw(st.permutations(letters)))
  dst_order = "".join(draw(st.permutations(letters)))
  sizes = {c: draw(st.integers(1, 4)) for c in letters}
  out = draw(st.integers(1, 3))
  convs = draw(st.sampled_from([("pytorch", "flax"), ("flax", "pytorch"), ("flax", "keras")]))
  as_tuple = draw(st.booleans())
  return src_order, dst_order, sizes, out, convs, as_tuple


def dense(features, kernel, layout):
  return kernel @ features if layout == "OI" else features @ kernel


@given(flatten_cases(), st.integers(0, 2**16))
def test_convert_linear_kernel_feature_order_flattens_alike(case, seed):
  src_order, dst_order, sizes, out, (src, dst), as_tuple = case
  rng = np.random.default_rng(seed)
  # One example's feature map, axes in alphabetical letter order; small ints: exact sums.
  canon = "".join(sorted(sizes))
  x = rng.integers(-3, 4, tuple(sizes[c] for c in canon)).astype(np.float32)
  flat_src = np.transpose(x, [canon.index(c) for c in src_order]).reshape(-1)
  flat_dst = np.transpose(x, [canon.index(c) for c in dst_order]).reshape(-1)
  s_layout = fc.get_convention(src).linear_layout
  d_layout = fc.get_convention(dst).linear_layout
  n_in = flat_src.size
  w = rng.integers(-3, 4, (out, n_in) if s_layout == "OI" else (n_in, out)).astype(np.float32)
  feature_shape = tuple(sizes[c] for c in src_order) if as_tuple else sizes
  got = fc.convert_linear_kernel(
    w, src, dst, feature_shape=feature_shape, feature_order=(src_order, dst_order)
  )
  assert isinstance(got, np.ndarray) and got.dtype == w.dtype
  np.testing.assert_array_equal(dense(flat_dst, got, d_layout), dense(flat_src, w, s_layout))
  # And back: bit for bit.
  back = fc.convert_linear_kernel(
    got,
    dst,
    src,
    feature_shape={c: sizes[c] for c in dst_order},
    feature_order=(dst_order, src_order),
  )
  np.testing.assert_array_equal(back, w)


def test_convert_linear_kernel_feature_order_jax_array_and_errors():
  w = jnp.arange(2 * 24, dtype=jnp.float32).reshape(2, 24)
  sizes = {"C": 2, "H": 3, "W": 4}
  got = fc.convert_linear_kernel(
    w, "pytorch", "flax", feature_shape=sizes, feature_order=("WHC", "HWC")
  )
  assert isinstance(got, jax.Array) and got.shape == (24, 2)
  # NumPy: the inputs flattened (W, H, C) re-ordered (H, W, C); Flax's (in, out).
  want = np.asarray(w).reshape(2, 4, 3, 2).transpose(0, 2, 1, 3).reshape(2, 24).T
  np.testing.assert_array_equal(got, want)
  with pytest.raises(ValueError, match="same letters"):
    fc.convert_linear_kernel(
      w, "pytorch", "flax", feature_shape=sizes, feature_order=("CHW", "HWD")
    )
  with pytest.raises(ValueError, match="24"):
    fc.convert_linear_kernel(
      w, "pytorch", "flax", feature_shape={"C": 2, "H": 3, "W": 5}, feature_order=("CHW", "HWC")
    )
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    got = fc.convert_linear_kernel(np.asarray(w), "pytorch", "flax", feature_shape=(2, 3, 4))
  # Without feature_order: torch's C, H, W flatten to Flax's H, W, C.
  want = np.asarray(w).reshape(2, 2, 3, 4).transpose(0, 2, 3, 1).reshape(2, 24).T
  np.testing.assert_array_equal(got, want)


def test_flatten_glob_that_matches_no_dense_layer_is_an_error():
  like = LasagneNet().init(KEY, jnp.zeros((1, *L_HW, L_CIN)))
  rule = L_FLATTEN["Dense_0"]
  for pattern in ("dense_0", "Conv_0"):
    with pytest.raises(ValueError, match=rf"{pattern}.*'Dense_0'"):
      fc.plan_params(lasagne_params(), "lasagne", "flax", like=like, flatten={pattern: rule})
