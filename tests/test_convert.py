"""convert_kernel, convert_depthwise_kernel, convert_linear_kernel.

The claim of a conversion is semantic: a kernel used with ``src`` computes what
its conversion computes with ``dst``. The pair tests check it for every pair
of registered conventions (and a user-made one) by running both convs;
the frameworks' own layers are the oracles in ``test_against_<framework>.py``.
Inputs and kernels hold small integers, so results compare exactly.
"""

import itertools

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import flipconv as fc
from flipconv._layouts import generalize
from flipconv.convert import KernelPlan, apply_plan, depthwise_plan, kernel_plan, linear_plan

RNG = np.random.default_rng(5)

# A user-made convention, with letters in orders no framework uses.
CUSTOM = fc.Convention(
  name="custom",
  layout="NCWH",
  kernel_layout="WHIO",
  flip=True,
  transpose_kernel_layout="OWHI",
  transpose_flip=False,
  linear_layout="IO",
  depthwise_kernel_layout="CWHM",
)
NAMES = sorted({c.name for c in fc.conventions.values()})
CONVENTIONS = [*NAMES, CUSTOM]
SPATIAL = (4, 6, 5)  # D, H, W sizes
KSIZE = (2, 3, 2)


def ints(shape, dtype=np.float32):
  return RNG.integers(-3, 4, shape).astype(dtype)


def data_layout(conv, n):
  """The convention's data layout for ``n`` dims, batched (N=1 is added where it has none)."""
  layout = generalize(fc.get_convention(conv).layout, n)
  return layout if "N" in layout else "N" + layout


def relayout(x, src, dst):
  """``x`` from data layout ``src`` to ``dst`` (both batched, same letters)."""
  return np.transpose(x, [src.index(c) for c in dst])


def run(op, x_canonical, kernel, conv, n, **kw):
  """``op`` with ``conv``, on the canonical NC<spatial> input; output back in canonical."""
  canonical = "NC" + generalize("HW", n)
  layout = data_layout(conv, n)
  x = relayout(x_canonical, canonical, layout)
  if "N" not in fc.get_convention(conv).layout:
    x = x[0]
  y = np.asarray(op(x, kernel, convention=conv, **kw))
  if "N" not in fc.get_convention(conv).layout:
    y = y[None]
  return relayout(y, layout, canonical)


def kernel_for(conv, n, c_out, c_in, transposed=False):
  c = fc.get_convention(conv)
  layout = generalize(c.transpose_kernel_layout if transposed else c.kernel_layout, n)
  spatial = dict(zip(generalize("HW", n), KSIZE[3 - n :], strict=True))
  return ints([c_out if a == "O" else c_in if a == "I" else spatial[a] for a in layout])


def label(c):
  return c if isinstance(c, str) else c.name


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("kind", ["conv", "conv_transpose"])
def test_every_pair_computes_the_same_after_conversion(rank, kind):
  """conv(x, k, convention=a) == conv(x', convert_kernel(k, a, b), convention=b), all a, b."""
  transposed = kind == "conv_transpose"
  groups = 2
  if transposed:
    op, kw = fc.conv_transpose, dict(strides=2, padding=1, output_padding=1, groups=groups)
    c_x, c_out, c_in = 4, 4, 3  # forward O = channels of x; I = out / groups
  else:
    op, kw = fc.conv, dict(strides=2, padding="SAME", groups=groups)
    c_x, c_out, c_in = 4, 6, 2
  x = ints((1, c_x, *SPATIAL[3 - rank :]))
  for src in CONVENTIONS:
    k = kernel_for(src, rank, c_out, c_in, transposed)
    y = run(op, x, k, src, rank, **kw)
    for dst in CONVENTIONS:
      k_dst = fc.convert_kernel(k, src, dst, transposed=transposed)
      got = run(op, x, k_dst, dst, rank, **kw)
      np.testing.assert_array_equal(got, y, err_msg=f"{label(src)} -> {label(dst)}")


def test_conversion_is_not_the_identity_where_it_matters():
  """The pair test would pass for a no-op if the conventions agreed: they do not."""
  k = ints((4, 3, 2, 3))
  assert fc.convert_kernel(k, "pytorch", "flax").shape == (2, 3, 3, 4)
  np.testing.assert_array_equal(fc.convert_kernel(k, "lasagne", "lasagne-mm"), k[:, :, ::-1, ::-1])
  np.testing.assert_array_equal(
    fc.convert_kernel(k, "pytorch", "flax", transposed=True), k.transpose(2, 3, 0, 1)[::-1, ::-1]
  )
  np.testing.assert_array_equal(fc.convert_kernel(k, "onnx", "caffe"), k)


DTYPES = [np.float32, np.float16, ml_dtypes.bfloat16, np.int8, np.float64, np.uint8]


@given(
  shape=st.lists(st.integers(1, 4), min_size=3, max_size=5),
  dtype=st.sampled_from(DTYPES),
  pair=st.tuples(
    st.sampled_from([*sorted(fc.conventions), CUSTOM]),
    st.sampled_from([*sorted(fc.conventions), CUSTOM]),
  ),
  transposed=st.booleans(),
  as_jax=st.booleans(),
)
def test_round_trip_is_bit_identical(shape, dtype, pair, transposed, as_jax):
  a, b = pair
  k = (
    RNG.standard_normal(shape).astype(dtype)
    if dtype not in (np.int8, np.uint8)
    else (RNG.integers(0, 255, shape).astype(dtype))
  )
  if as_jax and dtype != np.float64:
    k = jnp.asarray(k)
  there = fc.convert_kernel(k, a, b, transposed=transposed)
  back = fc.convert_kernel(there, b, a, transposed=transposed)
  assert type(back) is type(k)
  assert back.dtype == k.dtype and back.shape == k.shape
  assert np.asarray(back).tobytes() == np.asarray(k).tobytes()


def test_numpy_stays_numpy_and_jax_stays_jax():
  k = ints((3, 2, 2, 2))
  out = fc.convert_kernel(k, "pytorch", "flax")
  assert type(out) is np.ndarray
  out = fc.convert_kernel(jnp.asarray(k), "pytorch", "flax")
  assert isinstance(out, jax.Array)
  assert type(fc.convert_depthwise_kernel(k, "keras", "pytorch")) is np.ndarray
  assert type(fc.convert_linear_kernel(k[0, 0], "pytorch", "flax")) is np.ndarray
  assert isinstance(fc.convert_linear_kernel(jnp.asarray(k[0, 0]), "pytorch", "flax"), jax.Array)


def test_numpy_input_never_touches_a_device(monkeypatch):
  def fail(*args, **kwargs):
    raise AssertionError("NumPy input was sent to a device")

  monkeypatch.setattr(jax, "device_put", fail)
  monkeypatch.setattr(jnp, "asarray", fail)
  monkeypatch.setattr(jnp, "transpose", fail)
  k = ints((2, 3, 4, 5))
  assert type(fc.convert_kernel(k, "theano", "tflite", transposed=True)) is np.ndarray
  assert type(fc.convert_depthwise_kernel(ints((3, 3, 2, 2)), "keras", "tflite")) is np.ndarray
  assert (
    type(fc.convert_linear_kernel(ints((4, 6)), "pytorch", "flax", feature_shape=(6,)))
    is np.ndarray
  )


def test_convert_kernel_under_jit_and_vmap():
  k = ints((5, 2, 3, 4))
  want = fc.convert_kernel(k, "lasagne", "tflite")
  got = jax.jit(lambda k: fc.convert_kernel(k, "lasagne", "tflite"))(k)
  np.testing.assert_array_equal(np.asarray(got), want)
  batched = jax.vmap(lambda k: fc.convert_kernel(k, "lasagne", "tflite"))(jnp.stack([k, k]))
  np.testing.assert_array_equal(np.asarray(batched[1]), want)
  dw = jax.jit(lambda k: fc.convert_depthwise_kernel(k, "keras", "theano"))(ints((3, 2, 4, 2)))
  assert dw.shape == (8, 1, 3, 2)


def test_plans_say_what_apply_plan_does():
  for plan, shape in [
    (kernel_plan(4, "pytorch", "flax"), (4, 3, 2, 5)),
    (kernel_plan(5, "theano", "tflite", kind="conv_transpose"), (4, 3, 2, 5, 6)),
    (kernel_plan(2, "pytorch", "keras", kind="linear"), (4, 3)),
    (depthwise_plan((3, 2, 4, 2), "keras", "pytorch"), (3, 2, 4, 2)),
    (depthwise_plan((8, 1, 3, 2), "pytorch", "keras", groups=4), (8, 1, 3, 2)),
    (linear_plan((4, 12), "pytorch", "flax", feature_shape=(3, 2, 2)), (4, 12)),
  ]:
    assert isinstance(plan, KernelPlan)
    out = apply_plan(np.arange(np.prod(shape)).reshape(shape), plan)
    assert out.shape == plan.new_shape(shape), plan


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_torch_weights_run_in_flax_after_conversion(rank):
  """Two real frameworks: torch convNd(x, w) == flax.linen.Conv with convert_kernel(w)."""
  torch = pytest.importorskip("torch")
  nn = pytest.importorskip("flax.linen")
  x = ints((2, 4, *SPATIAL[3 - rank :]))  # NCHW
  w = ints((6, 2, *KSIZE[3 - rank :]))  # OIHW, groups=2
  conv = getattr(torch.nn.functional, f"conv{rank}d")
  y = conv(torch.from_numpy(x), torch.from_numpy(w), stride=2, padding=1, groups=2).numpy()
  layer = nn.Conv(6, KSIZE[3 - rank :], strides=2, padding=1, feature_group_count=2, use_bias=False)
  got = layer.apply(
    {"params": {"kernel": fc.convert_kernel(w, "pytorch", "flax")}}, np.moveaxis(x, 1, -1)
  )
  np.testing.assert_array_equal(np.moveaxis(np.asarray(got), -1, 1), y)
  np.testing.assert_array_equal(
    np.asarray(fc.conv(x, w, convention="pytorch", strides=2, padding=1, groups=2)), y
  )


def test_onnx_gemm_with_trans_b_takes_an_oi_weight():
  onnx = pytest.importorskip("onnx")
  ort = pytest.importorskip("onnxruntime")
  from onnx import TensorProto, helper

  x, w = ints((3, 5)), ints((4, 5))  # w: (out, in), as torch.onnx exports nn.Linear
  io = lambda name, shape: helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
  node = helper.make_node("Gemm", ["X", "W"], ["Y"], transB=1)
  graph = helper.make_graph([node], "gemm", [io("X", x.shape), io("W", w.shape)], [io("Y", [3, 4])])
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
  onnx.checker.check_model(model)
  session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
  y = session.run(None, {"X": x, "W": w})[0]
  assert fc.get_convention("onnx").linear_layout == "OI"
  np.testing.assert_array_equal(y, x @ fc.convert_linear_kernel(w, "onnx", "flax"))


# ---------------------------------------------------------------------------
# Depthwise


def grouped(kernel, conv, n):
  """A depthwise kernel in ``conv``'s own form as a grouped kernel, and its layout."""
  c = fc.get_convention(conv)
  layout = generalize(
    (c.depthwise_kernel_layout or c.kernel_layout).translate(str.maketrans("CM", "OI")), n
  )
  if "C" not in (c.depthwise_kernel_layout or ""):
    return kernel, layout
  # Move C and M last, merge them into O = C * M (channel c * M + m), add I = 1.
  dw = layout.translate(str.maketrans("OI", "CM"))
  order = [a for a in dw if a not in "CM"] + ["C", "M"]
  k = np.transpose(kernel, [dw.index(a) for a in order])
  return k.reshape(*k.shape[:-2], -1, 1), "".join(order[:-2]) + "OI"


@pytest.mark.parametrize("rank", [1, 2])
def test_depthwise_every_pair_computes_the_same(rank):
  c, mult = 3, 2
  x = ints((1, c, *SPATIAL[3 - rank :]))
  canonical = "NC" + generalize("HW", rank)
  sizes = dict(zip(generalize("HW", rank), KSIZE[3 - rank :], strict=True))

  def conv_with(kernel, conv):
    k, k_layout = grouped(kernel, conv, rank)
    layout = data_layout(conv, rank)
    xx = relayout(x, canonical, layout)
    batched = "N" in fc.get_convention(conv).layout
    y = fc.conv(
      xx if batched else xx[0], k, convention=conv, kernel_layout=k_layout, groups=c, padding="SAME"
    )
    y = np.asarray(y if batched else y[None])
    return relayout(y, layout, canonical)

  for src in CONVENTIONS:
    s = fc.get_convention(src)
    layout = generalize(
      (s.depthwise_kernel_layout or s.kernel_layout).translate(str.maketrans("CM", "OI")), rank
    )
    if "C" in (s.depthwise_kernel_layout or ""):
      shape = [c if a == "O" else mult if a == "I" else sizes[a] for a in layout]
    else:
      shape = [c * mult if a == "O" else 1 if a == "I" else sizes[a] for a in layout]
    k = ints(shape)
    y = conv_with(k, src)
    for dst in CONVENTIONS:
      k_dst = fc.convert_depthwise_kernel(k, src, dst, groups=c)
      np.testing.assert_array_equal(
        conv_with(k_dst, dst), y, err_msg=f"{label(src)} -> {label(dst)}"
      )
      back = fc.convert_depthwise_kernel(k_dst, dst, src, groups=c)
      assert back.tobytes() == k.tobytes()


def test_depthwise_channel_order_is_c_times_multiplier_plus_m():
  k = np.arange(1 * 1 * 2 * 3).reshape(1, 1, 2, 3)  # Keras (kh, kw, C=2, M=3)
  w = fc.convert_depthwise_kernel(k, "keras", "pytorch")
  assert w.shape == (6, 1, 1, 1)
  assert w[:, 0, 0, 0].tolist() == [k[0, 0, c, m] for c in range(2) for m in range(3)]


def test_depthwise_errors_say_what_to_pass():
  with pytest.raises(ValueError, match="pass groups=C"):
    fc.convert_depthwise_kernel(ints((6, 1, 3, 3)), "pytorch", "keras")
  with pytest.raises(ValueError, match="I = 1"):
    fc.convert_depthwise_kernel(ints((6, 2, 3, 3)), "pytorch", "flax")
  with pytest.raises(ValueError, match="does not divide"):
    fc.convert_depthwise_kernel(ints((6, 1, 3, 3)), "pytorch", "keras", groups=4)
  with pytest.raises(ValueError, match="has C = 4"):
    fc.convert_depthwise_kernel(ints((3, 3, 4, 2)), "keras", "pytorch", groups=3)
  with pytest.raises(ValueError, match="rank >= 3"):
    fc.convert_depthwise_kernel(ints((3, 3)), "keras", "pytorch")
  with pytest.raises(ValueError, match="groups must be a positive int"):
    fc.convert_depthwise_kernel(ints((6, 1, 3, 3)), "pytorch", "keras", groups=0)


# ---------------------------------------------------------------------------
# Dense kernels and the flatten-order trap


def test_torch_linear_weight_is_oi():
  torch = pytest.importorskip("torch")
  layer = torch.nn.Linear(5, 4, bias=False)
  assert tuple(layer.weight.shape) == (4, 5)
  assert fc.get_convention("pytorch").linear_layout == "OI"
  x = ints((3, 5))
  with torch.no_grad():
    layer.weight.copy_(torch.from_numpy(ints((4, 5))))
    y = layer(torch.from_numpy(x)).numpy()
  w = fc.convert_linear_kernel(layer.weight.detach().numpy(), "pytorch", "flax")
  np.testing.assert_array_equal(x @ w, y)


@pytest.mark.parametrize("dst", ["flax", "keras", "tflite", "haiku"])
def test_dense_after_flatten_of_nchw_moves_to_nhwc(dst):
  """torch: Linear(flatten(NCHW)); dst: dense(flatten(NHWC)) with the converted kernel."""
  torch = pytest.importorskip("torch")
  c, h, w = 3, 4, 2
  feats = ints((2, c, h, w))
  weight = ints((5, c * h * w))
  y = torch.nn.functional.linear(
    torch.flatten(torch.from_numpy(feats), 1), torch.from_numpy(weight)
  ).numpy()
  k = fc.convert_linear_kernel(weight, "pytorch", dst, feature_shape=(c, h, w))
  flat = feats.transpose(0, 2, 3, 1).reshape(2, -1)  # NHWC flatten
  got = flat @ (k if fc.get_convention(dst).linear_layout == "IO" else k.T)
  np.testing.assert_array_equal(got, y)
  # Without feature_shape the rows stay in NCHW order: wrong after an NHWC flatten.
  plain = fc.convert_linear_kernel(weight, "pytorch", dst)
  wrong = flat @ (plain if fc.get_convention(dst).linear_layout == "IO" else plain.T)
  assert not np.array_equal(wrong, y)
  back = fc.convert_linear_kernel(k, dst, "pytorch", feature_shape=(h, w, c))
  assert back.tobytes() == weight.tobytes()


@pytest.mark.parametrize(
  ("a", "b"), list(itertools.product(["pytorch", "flax", "equinox", CUSTOM], repeat=2))
)
def test_dense_after_flatten_every_pair_1d_and_3d(a, b):
  for feature in [(3, 5), (3, 2, 4), (2, 3, 2, 2)]:
    n = len(feature) - 1
    canonical = "C" + generalize("HW", n)
    feats = ints((2, *feature))  # canonical C<spatial>, per example

    def dense(kernel, conv, feats=feats, n=n, canonical=canonical):
      c = fc.get_convention(conv)
      layout = generalize(c.layout, n).replace("N", "")
      flat = np.stack([relayout(f, canonical, layout).reshape(-1) for f in feats])
      return flat @ (kernel if c.linear_layout == "IO" else kernel.T)

    a_layout = generalize(fc.get_convention(a).layout, n).replace("N", "")
    shape_a = tuple(feature[canonical.index(ch)] for ch in a_layout)
    i = int(np.prod(feature))
    k = ints((i, 4) if fc.get_convention(a).linear_layout == "IO" else (4, i))
    k_b = fc.convert_linear_kernel(k, a, b, feature_shape=shape_a)
    np.testing.assert_array_equal(dense(k_b, b), dense(k, a))


def test_linear_errors_name_the_argument():
  with pytest.raises(ValueError, match="rank 2"):
    fc.convert_linear_kernel(ints((4, 3, 2)), "pytorch", "flax")
  with pytest.raises(ValueError, match=r"feature_shape \(3, 2, 2\) has 12 elements"):
    fc.convert_linear_kernel(ints((4, 10)), "pytorch", "flax", feature_shape=(3, 2, 2))
  with pytest.raises(TypeError, match="feature_shape must be a sequence"):
    fc.convert_linear_kernel(ints((4, 10)), "pytorch", "flax", feature_shape=10)


# ---------------------------------------------------------------------------
# Errors of convert_kernel


def test_convert_kernel_errors_name_the_argument():
  with pytest.raises(ValueError, match="rank >= 3"):
    fc.convert_kernel(ints((3, 3)), "pytorch", "flax")
  with pytest.raises(TypeError, match="transposed must be True or False"):
    fc.convert_kernel(ints((3, 3, 3)), "pytorch", "flax", transposed="yes")
  with pytest.raises(ValueError, match="did you mean 'pytorch'"):
    fc.convert_kernel(ints((3, 3, 3)), "pytroch", "flax")
  with pytest.raises(ValueError, match="kind must be one of"):
    kernel_plan(4, "pytorch", "flax", kind="dense")
