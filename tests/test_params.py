"""convert_params / plan_params: selection, containers, dtypes, shardings.

References are written out independently of flipconv: the axis permutations
come from the frameworks' documented kernel shapes (PyTorch ``(O, I, kh, kw)``,
Flax ``(kh, kw, I, O)``, Flax ConvTranspose ``(kh, kw, O_fwd, I_fwd)``,
Lasagne flipped), and layers' outputs are compared with the frameworks
themselves (flax.linen, torch where installed) or with
``lax.conv_general_dilated`` called directly.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import warnings

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import flipconv as fc
from flipconv import convert
from flipconv import params as fp
from flipconv.convert import KernelPlan

TORCH_TO_FLAX = (2, 3, 1, 0)  # (O, I, kh, kw) -> (kh, kw, I, O)
# PyTorch ConvTranspose2d weight (in_t, out_t, kh, kw) -> Flax ConvTranspose kernel
# (kh, kw, in_t, out_t) with transpose_kernel=False, spatially flipped (CONVENTIONS.md trap 2).
TORCH_TO_FLAX_T = (2, 3, 0, 1)


def rand(shape, seed=0, dtype=np.float32):
  return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def torch_like_state():
  """A small PyTorch state_dict (flat, dotted keys) as NumPy arrays."""
  return {
    "conv1.weight": rand((8, 3, 3, 3), 1),
    "conv1.bias": rand((8,), 2),
    "bn1.weight": rand((8,), 3),
    "bn1.num_batches_tracked": np.array(7, np.int64),
    "layer1.0.conv1.weight": rand((16, 8, 1, 1), 4),
    "up.deconv.weight": rand((16, 4, 2, 2), 5),
    "fc.weight": rand((10, 4), 6),
    "fc.bias": rand((10,), 7),
  }


# ---------------------------------------------------------------------------
# Values: against independent references


def test_torch_state_dict_to_flax_matches_written_out_permutations():
  sd = torch_like_state()
  out = fc.convert_params(sd, "pytorch", "flax")
  np.testing.assert_array_equal(out["conv1.weight"], sd["conv1.weight"].transpose(TORCH_TO_FLAX))
  np.testing.assert_array_equal(
    out["layer1.0.conv1.weight"], sd["layer1.0.conv1.weight"].transpose(TORCH_TO_FLAX)
  )
  np.testing.assert_array_equal(
    out["up.deconv.weight"], sd["up.deconv.weight"].transpose(TORCH_TO_FLAX_T)[::-1, ::-1]
  )
  np.testing.assert_array_equal(out["fc.weight"], sd["fc.weight"].T)
  for k in ("conv1.bias", "bn1.weight", "bn1.num_batches_tracked", "fc.bias"):
    assert out[k] is sd[k]
  assert list(out) == list(sd)  # the caller's key order is kept
  for k in ("conv1.weight", "fc.weight"):
    assert out[k].flags.c_contiguous and isinstance(out[k], np.ndarray)


def test_converted_flax_params_compute_what_torch_layers_computed():
  """conv, conv_transpose and dense layers, through flax.linen on converted weights."""
  import flax.linen as nn

  sd = torch_like_state()
  out = fc.convert_params(sd, "pytorch", "flax")
  x = rand((2, 3, 7, 7), 10)  # NCHW
  # Conv2d(3, 8, 3, padding=1): the reference is lax with PyTorch's dimension numbers.
  want = lax.conv_general_dilated(
    x, sd["conv1.weight"], (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NCHW", "OIHW", "NCHW")
  )
  want = np.asarray(want) + sd["conv1.bias"][:, None, None]
  got = nn.Conv(8, (3, 3), padding=1).apply(
    {"params": {"kernel": out["conv1.weight"], "bias": out["conv1.bias"]}}, x.transpose(0, 2, 3, 1)
  )
  np.testing.assert_allclose(np.asarray(got), want.transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)
  # ConvTranspose2d(16, 4, 2, stride=2): the adjoint of PyTorch's forward conv, by jax.
  y = rand((2, 16, 4, 4), 11)
  w = sd["up.deconv.weight"]
  fwd = lambda v: lax.conv_general_dilated(
    v, w, (2, 2), "VALID", dimension_numbers=("NCHW", "OIHW", "NCHW")
  )
  want_t = jax.linear_transpose(fwd, jnp.zeros((2, 4, 8, 8), jnp.float32))(jnp.asarray(y))[0]
  got_t = nn.ConvTranspose(4, (2, 2), strides=(2, 2), padding="VALID", use_bias=False).apply(
    {"params": {"kernel": out["up.deconv.weight"]}}, y.transpose(0, 2, 3, 1)
  )
  np.testing.assert_allclose(
    np.asarray(got_t), np.asarray(want_t).transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5
  )
  # Linear(4, 10) -> Dense(10)
  v = rand((3, 4), 12)
  got_d = nn.Dense(10).apply({"params": {"kernel": out["fc.weight"], "bias": out["fc.bias"]}}, v)
  np.testing.assert_allclose(
    np.asarray(got_d), v @ sd["fc.weight"].T + sd["fc.bias"], rtol=1e-5, atol=1e-5
  )


def test_converted_weights_match_torch_modules():
  torch = pytest.importorskip("torch")
  import flax.linen as nn

  torch.manual_seed(0)
  conv, deconv = torch.nn.Conv2d(3, 5, 3, padding=1), torch.nn.ConvTranspose2d(5, 2, 3, stride=2)
  sd = {f"enc.{k}": v.detach().numpy() for k, v in conv.state_dict().items()}
  sd |= {f"dec.{k}": v.detach().numpy() for k, v in deconv.state_dict().items()}
  out = fc.convert_params(
    sd, "pytorch", "flax", select={"dec.weight": "conv_transpose", "*": "auto"}
  )
  x = rand((1, 3, 6, 6), 3)
  h = conv(torch.from_numpy(x))
  z = deconv(h).detach().numpy()
  h_flax = nn.Conv(5, (3, 3), padding=1).apply(
    {"params": {"kernel": out["enc.weight"], "bias": out["enc.bias"]}}, x.transpose(0, 2, 3, 1)
  )
  np.testing.assert_allclose(
    np.asarray(h_flax), h.detach().numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5
  )
  z_flax = nn.ConvTranspose(2, (3, 3), strides=(2, 2), padding="VALID").apply(
    {"params": {"kernel": out["dec.weight"], "bias": out["dec.bias"]}}, h_flax
  )
  np.testing.assert_allclose(np.asarray(z_flax), z.transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-5)


def test_lasagne_to_flax_flips_true_convolution_kernels():
  import flax.linen as nn
  import scipy.signal

  w = rand((1, 1, 3, 2), 20)  # Lasagne Conv2DLayer: a true convolution
  out = fc.convert_params({"conv": {"W": w}}, "lasagne", "flax")
  img = rand((6, 5), 21)
  want = scipy.signal.convolve2d(img, w[0, 0], mode="valid")
  got = nn.Conv(1, (3, 2), padding="VALID", use_bias=False).apply(
    {"params": {"kernel": out["conv"]["W"]}}, img[None, :, :, None]
  )
  np.testing.assert_allclose(np.asarray(got)[0, :, :, 0], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
  "a,b", [("pytorch", "flax"), ("lasagne", "tensorflow"), ("flax", "tflite"), ("theano", "equinox")]
)
def test_round_trip_is_bit_identical(a, b):
  tree = {
    "c": {"kernel": rand((3, 3, 4, 5), 1)},
    "t": {"ConvTranspose": {"kernel": rand((3, 2, 4, 5), 2)}},
    "d": {"kernel": rand((4, 6), 3)},
  }
  back = fc.convert_params(fc.convert_params(tree, a, b), b, a)
  jax.tree_util.tree_map(np.testing.assert_array_equal, back, tree)


# ---------------------------------------------------------------------------
# Containers


Layer = collections.namedtuple("Layer", ["kernel", "bias"])


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Block:
  weight: jax.Array
  scale: jax.Array


def _containers():
  from flax.core import FrozenDict

  k = lambda s: rand((4, 3, 2, 2), s)
  return {
    "dict": {"a": {"weight": k(1)}, "b": np.ones(3)},
    "frozendict": FrozenDict({"a": {"weight": k(2)}, "b": np.ones(3)}),
    "list": [{"weight": k(3)}, np.ones(3)],
    "tuple": ({"weight": k(4)}, np.ones(3)),
    "namedtuple": Layer(kernel=k(5), bias=np.ones(3)),
    "dataclass": Block(weight=k(6), scale=np.ones(3)),
  }


@pytest.mark.parametrize("name", list(_containers()))
def test_every_container_type_is_kept(name):
  tree = _containers()[name]
  out = fc.convert_params(tree, "pytorch", "flax")
  assert type(out) is type(tree)
  assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(tree)
  before, after = jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(out)
  kernels = [(x, y) for x, y in zip(before, after, strict=True) if x.ndim == 4]
  assert len(kernels) == 1
  np.testing.assert_array_equal(kernels[0][1], kernels[0][0].transpose(TORCH_TO_FLAX))
  assert all(y is x for x, y in zip(before, after, strict=True) if x.ndim != 4)


def test_nnx_state_round_trips_through_pytorch_layout():
  from flax import nnx

  class Net(nnx.Module):
    def __init__(self, rngs):
      self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
      self.up_conv = nnx.ConvTranspose(4, 2, (2, 2), rngs=rngs)  # "auto" goes by the name
      self.head = nnx.Linear(4, 5, rngs=rngs)

  net = Net(nnx.Rngs(0))
  state = nnx.state(net, nnx.Param)
  plan = fc.plan_params(state, "flax", "pytorch")
  assert {c.path: c.kind for c in plan} == {
    "conv/kernel": "conv",
    "up_conv/kernel": "conv_transpose",
    "head/kernel": "linear",
  }
  torch_state = fc.convert_params(state, "flax", "pytorch")
  assert type(torch_state) is type(state)
  np.testing.assert_array_equal(
    np.asarray(torch_state["conv"]["kernel"][...]),
    np.asarray(state["conv"]["kernel"][...]).transpose(3, 2, 0, 1),
  )
  np.testing.assert_array_equal(
    np.asarray(torch_state["head"]["kernel"][...]), np.asarray(state["head"]["kernel"][...]).T
  )
  back = fc.convert_params(torch_state, "pytorch", "flax")
  nnx.update(net, back)  # loads into the module again
  jax.tree_util.tree_map(np.testing.assert_array_equal, nnx.state(net, nnx.Param), state)


def test_equinox_transposed_conv_found_by_its_class_name():
  eqx = pytest.importorskip("equinox")

  class Model(eqx.Module):
    down: eqx.nn.Conv2d
    up: eqx.nn.ConvTranspose2d  # the field's name says nothing; its class does

  key = jax.random.PRNGKey(0)
  model = Model(eqx.nn.Conv2d(3, 4, 3, key=key), eqx.nn.ConvTranspose2d(4, 3, 3, key=key))
  kinds = {c.path: c.kind for c in fc.plan_params(model, "equinox", "flax")}
  assert kinds == {"down/weight": "conv", "up/weight": "conv_transpose"}
  out = fc.convert_params(model, "equinox", "flax")
  assert type(out) is Model
  np.testing.assert_array_equal(
    np.asarray(out.down.weight), np.asarray(model.down.weight).transpose(TORCH_TO_FLAX)
  )
  assert out.down.bias is model.down.bias


# ---------------------------------------------------------------------------
# Selection


def test_auto_recognises_framework_names():
  tree = {
    "params": {
      "Conv_0": {"kernel": rand((3, 3, 2, 4))},  # Flax
      "ConvTranspose_0": {"kernel": rand((3, 3, 4, 2))},
      "Dense_0": {"kernel": rand((4, 5))},
    },
    "conv2_d": {"w": rand((3, 3, 2, 4))},  # Haiku
    "lasagne_conv": {"W": rand((3, 3, 2, 4))},  # Lasagne
    "tf1": {"filter": rand((3, 3, 2, 4))},  # TF1
    "upconv": {"weight": rand((3, 3, 2, 4))},
    "decoder": {
      "deconv1": {"weight": rand((3, 3, 2, 4))},
      "deconv2": {"0": {"weight": rand((3, 3, 2, 4))}},
    },  # a Sequential inside
    "transpose_stage": {"conv": {"weight": rand((3, 3, 2, 4))}},  # only the holder counts
    "bn": {"scale": rand((4,)), "weight": rand((4,))},
  }
  kinds = {c.path: c.kind for c in fc.plan_params(tree, "flax", "pytorch")}
  assert kinds == {
    "params/Conv_0/kernel": "conv",
    "params/ConvTranspose_0/kernel": "conv_transpose",
    "params/Dense_0/kernel": "linear",
    "conv2_d/w": "conv",
    "lasagne_conv/W": "conv",
    "tf1/filter": "conv",
    "upconv/weight": "conv_transpose",
    "decoder/deconv1/weight": "conv_transpose",
    "decoder/deconv2/0/weight": "conv_transpose",
    "transpose_stage/conv/weight": "conv",
  }


def test_auto_skips_dense_kernels_when_linear_layouts_agree():
  tree = {"fc": {"weight": rand((4, 5))}, "conv": {"weight": rand((4, 3, 3, 3))}}
  assert [c.path for c in fc.plan_params(tree, "pytorch", "tflite")] == ["conv/weight"]
  out = fc.convert_params(tree, "pytorch", "caffe")  # same layouts and flip: nothing moves
  assert (
    out["conv"]["weight"] is tree["conv"]["weight"] and out["fc"]["weight"] is tree["fc"]["weight"]
  )


def test_auto_reports_kernel_shaped_leaves_it_cannot_classify():
  tree = {
    "patch": {"weight": rand((8, 3, 4, 4))},
    "pos_embed": rand((1, 5, 8)),
    "dw": {"depthwise_kernel": rand((3, 3, 8, 1))},
    "tok_embed": {"weight": rand((100, 8))},
  }
  with pytest.warns(fp.UnselectedKernelWarning) as record:
    out = fc.convert_params(tree, "pytorch", "flax")
  message = str(record[0].message)
  for path in ("pos_embed", "dw/depthwise_kernel", "tok_embed/weight"):
    assert path in message
  assert "select=" in message  # says how to select explicitly
  assert out["pos_embed"] is tree["pos_embed"]
  assert out["tok_embed"]["weight"] is tree["tok_embed"]["weight"]
  assert out["patch"]["weight"].shape == (4, 4, 3, 8)
  # Saying what they are silences it.
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    out = fc.convert_params(
      tree,
      "pytorch",
      "flax",
      select={"pos_embed": None, "tok_embed/*": None, "*depthwise_kernel": None, "*": "auto"},
    )


def test_glob_mapping_first_match_wins_and_dots_equal_slashes():
  sd = torch_like_state()
  sel = {"up.deconv.*": "conv_transpose", "*conv1.weight": "conv", "fc/weight": "linear", "*": None}
  plan = fc.plan_params(sd, "pytorch", "flax", select=sel)
  assert {c.path: c.kind for c in plan} == {
    "conv1/weight": "conv",
    "layer1/0/conv1/weight": "conv",
    "up/deconv/weight": "conv_transpose",
    "fc/weight": "linear",
  }


def test_glob_that_matches_nothing_is_an_error_naming_it():
  with pytest.raises(ValueError, match=r"'encoder/\*'.*matches no array leaf"):
    fc.convert_params(torch_like_state(), "pytorch", "flax", select={"encoder/*": "conv"})


def test_callable_select_gets_paths_and_leaves():
  seen = []

  def select(path, leaf):
    seen.append((path, leaf.shape))
    return "conv" if path.endswith("weight") and leaf.ndim == 4 else None

  sd = torch_like_state()
  out = fc.convert_params(sd, "pytorch", "flax", select=select)
  assert ("layer1/0/conv1/weight", (16, 8, 1, 1)) in seen
  assert out["up.deconv.weight"].shape == (2, 2, 4, 16)  # as a forward conv, as asked
  assert out["fc.weight"] is sd["fc.weight"]


@pytest.mark.parametrize(
  "select,error,match",
  [
    (lambda p, x: "dense", ValueError, r"select\('[\w/]+', leaf\) gave kind 'dense'"),
    ({"conv1.bias": "conv"}, ValueError, r"'conv1/bias' of shape \(8,\).*rank >= 3"),
    ({"conv1.weight": "linear"}, ValueError, r"'conv1/weight'.*'linear'.*rank 2"),
    ({"*": "convolution"}, ValueError, r"gave kind 'convolution'; allowed"),
    ("everything", ValueError, r"select must be 'auto'"),
    (3, TypeError, r"select must be 'auto'"),
  ],
)
def test_bad_select_says_what_is_wrong(select, error, match):
  with pytest.raises(error, match=match):
    fc.convert_params(torch_like_state(), "pytorch", "flax", select=select)


def test_unknown_convention_lists_known_ones():
  with pytest.raises(ValueError, match=r"Known: .*pytorch"):
    fc.convert_params({}, "pytroch", "flax")


# ---------------------------------------------------------------------------
# Plans


def test_plan_matches_the_conversion_and_converts_nothing():
  sd = torch_like_state()
  copies = {k: v.copy() for k, v in sd.items()}
  plan = fc.plan_params(sd, "lasagne", "tflite")  # flips, OIHW -> OHWI, IO -> OI
  out = fc.convert_params(sd, "lasagne", "tflite")
  jax.tree_util.tree_map(np.testing.assert_array_equal, sd, copies)  # nothing touched
  by_path = {c.path: c for c in plan}
  assert set(by_path) == {"conv1/weight", "layer1/0/conv1/weight", "up/deconv/weight", "fc/weight"}
  for key, value in out.items():
    change = by_path.get(key.replace(".", "/"))
    if change is None:
      assert value is sd[key]
      continue
    assert change.old_shape == sd[key].shape and change.new_shape == value.shape
    assert change.dtype == "float32"
    expected = sd[key].transpose(change.permutation)
    if change.flip:
      expected = np.flip(expected, change.flip_axes)
    np.testing.assert_array_equal(value, expected)
  assert by_path["conv1/weight"].flip and not by_path["fc/weight"].flip
  text = str(plan)
  for c in plan:
    assert c.path in text
  assert re.search(r"layer1/0/conv1/weight\s+conv\s+\(16, 8, 1, 1\)\s+->\s+\(16, 1, 1, 8\)", text)
  assert "flip H W" in text and "4 selected: 4 converted (3 flipped)" in text


def test_plan_accepts_abstract_leaves():
  tree = {"w": jax.ShapeDtypeStruct((16, 8, 3, 3), jnp.bfloat16)}
  (change,) = fc.plan_params(tree, "pytorch", "flax")
  assert change.new_shape == (3, 3, 8, 16) and change.dtype == "bfloat16"
  assert fc.convert_params(tree, "pytorch", "flax")["w"].shape == (3, 3, 8, 16)


def test_unchanged_kernels_are_reported_and_returned_as_they_are():
  tree = {"conv": {"weight": rand((4, 3, 3, 3))}}
  (change,) = fc.plan_params(tree, "pytorch", "onnx")
  assert not change.changed and "unchanged" in str(change)
  assert fc.convert_params(tree, "pytorch", "onnx")["conv"]["weight"] is tree["conv"]["weight"]


# ---------------------------------------------------------------------------
# Dtypes and array types


@pytest.mark.parametrize(
  "dtype",
  [ml_dtypes.bfloat16, np.float16, np.float32, np.float64, np.int8, ml_dtypes.float8_e4m3fn],
)
def test_dtypes_are_kept_bit_for_bit(dtype):
  w = rand((5, 4, 3, 2), 30, np.float32).astype(dtype)
  out = fc.convert_params({"conv": {"weight": w}}, "lasagne", "flax")["conv"]["weight"]
  assert out.dtype == w.dtype and isinstance(out, np.ndarray)
  expected = w.view(np.uint8 if w.itemsize == 1 else f"u{w.itemsize}").transpose(TORCH_TO_FLAX)
  np.testing.assert_array_equal(out.view(expected.dtype), expected[::-1, ::-1])


def test_jax_arrays_stay_jax_arrays_and_work_under_jit():
  w = jnp.asarray(rand((6, 2, 3, 3), 31), jnp.bfloat16)
  out = fc.convert_params({"weight": w}, "pytorch", "flax")["weight"]
  assert isinstance(out, jax.Array) and out.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(out), np.asarray(w).transpose(TORCH_TO_FLAX))
  jitted = jax.jit(lambda t: fc.convert_params(t, "lasagne", "flax"))({"weight": w})["weight"]
  np.testing.assert_array_equal(
    np.asarray(jitted), np.asarray(w).transpose(TORCH_TO_FLAX)[::-1, ::-1]
  )


@given(
  shape=st.lists(st.integers(1, 24), min_size=3, max_size=4),  # up to 24**4 > tile threshold
  data=st.data(),
  order=st.sampled_from("CF"),
  dtype=st.sampled_from([np.float32, np.float16, np.float64, np.int8]),
)
def test_numpy_permutation_matches_np_transpose(shape, data, order, dtype):
  """The tiled copy against NumPy's own transpose, for any axes, flips, layouts, strides."""
  n = len(shape)
  perm = tuple(data.draw(st.permutations(range(n))))
  flips = tuple(data.draw(st.sets(st.sampled_from(range(n)))))
  a = (
    np.asfortranarray(rand(shape, 1).astype(dtype))
    if order == "F"
    else rand(shape, 1).astype(dtype)
  )
  if data.draw(st.booleans()):  # a non-contiguous view
    a = a[(slice(None, None, 2),) + (slice(None),) * (n - 1)]
  plan = KernelPlan("conv", "", "", perm, tuple(sorted(flips)))
  out = convert.permute_numpy(a, plan)
  expected = np.transpose(a, perm)
  if flips:
    expected = np.flip(expected, flips)
  np.testing.assert_array_equal(out, expected)
  assert out.flags.c_contiguous and out.dtype == a.dtype


def test_large_kernels_take_the_tiled_path_correctly():
  w = rand((512, 256, 3, 3), 40)  # above the small-array threshold
  for src, dst, perm, flip in [
    ("pytorch", "flax", TORCH_TO_FLAX, False),
    ("lasagne", "tflite", (0, 2, 3, 1), True),
  ]:
    out = fc.convert_params({"w": w}, src, dst)["w"]
    expected = w.transpose(perm)
    if flip:
      expected = expected[:, ::-1, ::-1] if dst == "tflite" else expected[::-1, ::-1]
    np.testing.assert_array_equal(out, expected)


# ---------------------------------------------------------------------------
# Shardings


COLLECTIVES = ("all-gather", "all-to-all", "collective-permute", "all-reduce", "reduce-scatter")


@pytest.fixture(scope="module")
def mesh():
  if len(jax.devices()) < 8:
    pytest.skip("needs 8 devices (XLA_FLAGS host device count, see conftest)")
  return Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("model", "data"))


@pytest.mark.parametrize("src", ["pytorch", "lasagne"])
def test_sharded_kernel_keeps_a_permuted_sharding_without_communication(mesh, src):
  w_np = rand((8, 4, 3, 3), 50)  # OIHW: O over "model", I over "data"
  w = jax.device_put(w_np, NamedSharding(mesh, P("model", "data")))
  bias = jax.device_put(rand((8,), 51), NamedSharding(mesh, P("model")))
  out = fc.convert_params({"conv": {"weight": w, "bias": bias}}, src, "flax")
  k = out["conv"]["weight"]
  assert out["conv"]["bias"] is bias
  assert isinstance(k.sharding, NamedSharding)
  assert k.sharding.spec == P(None, None, "data", "model")  # HWIO
  assert all(s.data.shape == (3, 3, 1, 4) for s in k.addressable_shards)  # nobody holds it all
  expected = w_np.transpose(TORCH_TO_FLAX)
  np.testing.assert_array_equal(
    np.asarray(k), expected[::-1, ::-1] if src == "lasagne" else expected
  )
  # The program that did it: the permuted out_shardings leave nothing to communicate.
  (change,) = fc.plan_params({"conv": {"weight": w}}, src, "flax")
  plan = KernelPlan(
    "conv", change.src_layout, change.dst_layout, change.permutation, change.flip_axes
  )
  hlo = fp.device_fn(plan, w.sharding, 4).lower(w).compile().as_text()
  assert [c for c in COLLECTIVES if c in hlo] == []


def test_sharded_dense_kernel(mesh):
  w_np = rand((8, 12), 52)
  w = jax.device_put(w_np, NamedSharding(mesh, P("model", "data")))
  out = fc.convert_params({"fc": {"weight": w}}, "pytorch", "flax")["fc"]["weight"]
  assert out.sharding.spec == P("data", "model")
  np.testing.assert_array_equal(np.asarray(out), w_np.T)


def test_a_shadowed_pattern_is_not_a_pattern_that_matches_nothing():
  """First match wins; a pattern an earlier one shadows still matches (README's own select)."""
  sd = {"up.weight": np.zeros((16, 8, 2, 2), np.float32)}
  select = {"up.weight": "conv_transpose", "*": "auto"}
  out = fc.convert_params(sd, "pytorch", "flax", select=select)
  assert out["up.weight"].shape == (2, 2, 16, 8)  # HWOI: taken as a transposed conv
  assert [c.kind for c in fc.plan_params(sd, "pytorch", "flax", select=select)] == [
    "conv_transpose"
  ]
  # A pattern that matches no leaf at all is still an error.
  with pytest.raises(ValueError, match=r"'down\.\*' matches no array leaf"):
    fc.convert_params(sd, "pytorch", "flax", select={"down.*": "conv", "*": "auto"})
