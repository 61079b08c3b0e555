"""``detect_convention`` and ``flipconv detect``, on outputs made by the real frameworks.

Every output here comes from the framework itself (PyTorch, Flax, Keras on
JAX, Equinox, ONNX Runtime, SciPy's true convolution, committed Theano
fixtures); the test checks the convention named and that the returned
``kwargs`` make ``fc.conv`` / ``fc.conv_transpose`` give the framework's output.
"""

import ast
import glob
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import flipconv as fc
from flipconv import demo

UNDETERMINED = "flip undetermined: the kernel is symmetric under flipping"
FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "theano")


def _rng(seed=0):
  return np.random.default_rng(seed)


def _f32(rng, *shape):
  return rng.standard_normal(shape).astype(np.float32)


def _reproduce(match, x, kernel, bias=None, transposed=False):
  """What the match's kwargs compute: fc.conv (or conv_transpose) plus bias."""
  f = fc.conv_transpose if transposed else fc.conv
  out = np.asarray(f(x, kernel, **match.kwargs))
  if bias is not None:
    shape = [1] * out.ndim
    shape[match.layout.index("C")] = -1
    out = out + np.asarray(bias).reshape(shape)
  return out


def _assert_reproduces(match, x, kernel, y, bias=None, transposed=False):
  got = _reproduce(match, x, kernel, bias, transposed)
  assert got.shape == y.shape
  np.testing.assert_allclose(got, y, rtol=0, atol=1e-5 * float(np.abs(y).max()))


# ---------------------------------------------------------------------------
# PyTorch


@pytest.mark.parametrize(
  "kernel_size, stride, padding, groups",
  [
    ((3, 3), 1, 1, 1),
    ((3, 3), 2, 0, 2),
    ((4, 4), 1, "same", 1),  # even kernel: the odd extra row/column at the end
    ((3, 2), (2, 1), (1, 0), 1),
  ],
)
def test_pytorch_conv2d_is_detected_as_pytorch(kernel_size, stride, padding, groups):
  torch = pytest.importorskip("torch")
  torch.manual_seed(0)
  layer = torch.nn.Conv2d(4, 6, kernel_size, stride=stride, padding=padding, groups=groups)
  x = _f32(_rng(), 2, 4, 10, 9)
  with torch.no_grad():
    y = layer(torch.from_numpy(x)).numpy()
  w, b = layer.weight.detach().numpy(), layer.bias.detach().numpy()

  matches = fc.detect_convention(x, w, y, bias=b)

  best = matches[0]
  assert "pytorch" in best.names and "onnx" in best.names
  assert (best.flip, best.layout, best.kernel_layout) == (False, "NCHW", "OIHW")
  assert best.kwargs["groups"] == groups
  want_strides = stride if isinstance(stride, int) else tuple(stride)
  assert best.kwargs["strides"] == want_strides
  assert best.error <= 1e-5
  _assert_reproduces(best, x, w, y, b)
  # No flipped convention computes this asymmetric kernel's output.
  assert all(not m.flip for m in matches)


def test_pytorch_conv1d_dilation_is_found():
  torch = pytest.importorskip("torch")
  torch.manual_seed(1)
  layer = torch.nn.Conv1d(3, 5, 3, dilation=2, padding=2, bias=False)
  x = _f32(_rng(1), 2, 3, 17)
  with torch.no_grad():
    y = layer(torch.from_numpy(x)).numpy()
  w = layer.weight.detach().numpy()

  best = fc.detect_convention(x, w, y)[0]

  assert "pytorch" in best.names
  assert (best.layout, best.kernel_layout, best.kwargs["dilation"]) == ("NCW", "OIW", 2)
  _assert_reproduces(best, x, w, y)


def test_pytorch_conv_transpose2d_is_detected_with_transposed_true():
  torch = pytest.importorskip("torch")
  torch.manual_seed(2)
  layer = torch.nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1, groups=2)
  x = _f32(_rng(2), 2, 6, 5, 4)
  with torch.no_grad():
    y = layer(torch.from_numpy(x)).numpy()
  w, b = layer.weight.detach().numpy(), layer.bias.detach().numpy()

  matches = fc.detect_convention(x, w, y, bias=b, transposed=True)

  best = matches[0]
  assert "pytorch" in best.names and "onnx" in best.names
  assert (best.flip, best.layout, best.kernel_layout) == (False, "NCHW", "OIHW")
  assert (best.kwargs["strides"], best.kwargs["groups"]) == (2, 2)
  _assert_reproduces(best, x, w, y, b, transposed=True)
  # Theano's transposed conv (the adjoint of a flipped conv) is not this one.
  assert "theano" not in {n for m in matches for n in m.names}


def test_symmetric_kernel_is_reported_as_ambiguous():
  torch = pytest.importorskip("torch")
  rng = _rng(3)
  w = _f32(rng, 4, 3, 3, 3)
  w = w + np.flip(w, (2, 3))  # symmetric under flipping both spatial axes
  x = _f32(rng, 1, 3, 7, 7)
  y = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w.copy())).numpy()

  matches = fc.detect_convention(x, w, y)

  by_flip = {m.flip: m for m in matches}
  assert set(by_flip) == {False, True}
  assert "pytorch" in by_flip[False].names and "lasagne" in by_flip[True].names
  assert by_flip[False].error == pytest.approx(by_flip[True].error, abs=1e-6)
  for m in matches:
    assert m.note.startswith(UNDETERMINED)
    _assert_reproduces(m, x, w, y)


def test_one_by_one_kernel_cannot_tell_the_flip():
  torch = pytest.importorskip("torch")
  layer = torch.nn.Conv2d(5, 3, 1)
  x = _f32(_rng(4), 2, 5, 6, 6)
  with torch.no_grad():
    y = layer(torch.from_numpy(x)).numpy()
  w, b = layer.weight.detach().numpy(), layer.bias.detach().numpy()

  matches = fc.detect_convention(x, w, y, bias=b)

  assert {m.flip for m in matches} == {False, True}
  assert all(UNDETERMINED in m.note for m in matches)


def test_corrupted_output_gives_no_match():
  torch = pytest.importorskip("torch")
  torch.manual_seed(5)
  layer = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
  x = _f32(_rng(5), 1, 3, 8, 8)
  with torch.no_grad():
    y = layer(torch.from_numpy(x)).numpy()
  w = layer.weight.detach().numpy()
  assert fc.detect_convention(x, w, y)  # the clean output matches ...

  bad = y.copy()
  bad[0, 1, 4, 4] += 0.05 * np.abs(y).max()  # ... one value off by 5% does not
  assert fc.detect_convention(x, w, bad) == []
  # Nor does the output of another kernel of the same shape.
  assert fc.detect_convention(x, _f32(_rng(6), *w.shape), y) == []


def test_fixed_arguments_are_kept_and_restrict_the_search():
  torch = pytest.importorskip("torch")
  torch.manual_seed(6)
  layer = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
  x = _f32(_rng(6), 1, 3, 8, 8)
  with torch.no_grad():
    y = layer(torch.from_numpy(x)).numpy()
  w = layer.weight.detach().numpy()

  best = fc.detect_convention(x, w, y, padding=1, strides=1, layout="NCHW")[0]
  assert best.kwargs["padding"] == 1 and "pytorch" in best.names
  _assert_reproduces(best, x, w, y)
  # Fixing the flip to a true convolution leaves nothing that matches.
  assert fc.detect_convention(x, w, y, flip=True) == []
  # A padding that cannot give y's size is an error, not an empty answer.
  with pytest.raises(ValueError, match=r"no padding, stride or dilation.*padding='VALID'"):
    fc.detect_convention(x, w, y, padding="VALID", strides=1)


def test_a_fixed_pad_mode_is_used_for_every_candidate():
  torch = pytest.importorskip("torch")
  torch.manual_seed(8)
  layer = torch.nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular", bias=False)
  x = _f32(_rng(19), 1, 2, 6, 7)
  with torch.no_grad():
    y = layer(torch.from_numpy(x)).numpy()
  w = layer.weight.detach().numpy()

  best = fc.detect_convention(x, w, y, pad_mode="circular")[0]

  assert "pytorch" in best.names and best.kwargs["pad_mode"] == "circular"
  _assert_reproduces(best, x, w, y)
  assert fc.detect_convention(x, w, y) == []  # zero padding does not give these borders


def test_candidates_restrict_the_conventions():
  torch = pytest.importorskip("torch")
  x = _f32(_rng(7), 1, 2, 6, 6)
  w = _f32(_rng(8), 3, 2, 3, 3)
  y = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w)).numpy()

  assert fc.detect_convention(x, w, y, candidates=["theano", "lasagne"]) == []
  (only,) = fc.detect_convention(x, w, y, candidates=["caffe"])
  assert only.names == ("caffe",)
  with pytest.raises(ValueError, match=r"candidates.*'pytroch'.*did you mean 'pytorch'"):
    fc.detect_convention(x, w, y, candidates=["pytroch"])


def test_layouts_no_convention_has_are_found_as_bare_combinations():
  torch = pytest.importorskip("torch")
  x_nchw = _f32(_rng(9), 2, 3, 7, 6)
  w = _f32(_rng(10), 5, 3, 3, 3)  # OIHW
  y_nchw = torch.nn.functional.conv2d(torch.from_numpy(x_nchw), torch.from_numpy(w)).numpy()
  x, y = x_nchw.transpose(0, 2, 3, 1), y_nchw.transpose(0, 2, 3, 1)  # NHWC data, OIHW kernel

  (match,) = fc.detect_convention(x, w, y)

  assert match.convention is None and match.names == ()
  assert (match.flip, match.layout, match.kernel_layout) == (False, "NHWC", "OIHW")
  assert "no registry convention" in match.note
  _assert_reproduces(match, x, w, y)


# ---------------------------------------------------------------------------
# ONNX Runtime: SAME_LOWER puts the odd padding at the start


def test_onnx_same_lower_is_detected():
  onnx = pytest.importorskip("onnx")
  ort = pytest.importorskip("onnxruntime")
  from onnx import TensorProto, helper

  x = _f32(_rng(11), 1, 2, 7, 8)
  w = _f32(_rng(12), 3, 2, 2, 2)
  node = helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_LOWER")
  graph = helper.make_graph(
    [node],
    "g",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    [onnx.numpy_helper.from_array(w, "w")],
  )
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
  model.ir_version = 8
  sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
  (y,) = sess.run(None, {"x": x})

  best = fc.detect_convention(x, w, y)[0]

  assert "onnx" in best.names and not best.flip
  assert best.kwargs["padding"] == "SAME_LOWER"
  _assert_reproduces(best, x, w, y)


# ---------------------------------------------------------------------------
# Flax, Keras (jax backend), Equinox


@pytest.mark.parametrize("kernel_size, strides", [((3, 3), 2), ((2, 2), 1)])
def test_flax_conv_is_detected_as_flax(kernel_size, strides):
  jax = pytest.importorskip("jax")
  nn = pytest.importorskip("flax.linen")
  module = nn.Conv(features=5, kernel_size=kernel_size, strides=strides, padding="SAME")
  x = _f32(_rng(13), 2, 9, 8, 3)
  params = module.init(jax.random.key(0), x)["params"]
  y = np.asarray(module.apply({"params": params}, x))
  w, b = np.asarray(params["kernel"]), np.asarray(params["bias"])

  best = fc.detect_convention(x, w, y, bias=b)[0]

  assert best.names[0] == "flax" and "tensorflow" in best.names
  assert (best.flip, best.layout, best.kernel_layout) == (False, "NHWC", "HWIO")
  assert best.kwargs["strides"] == strides
  _assert_reproduces(best, x, w, y, b)


def test_keras_conv2d_is_detected_as_tensorflow():
  keras = pytest.importorskip("keras")
  if keras.backend.backend() != "jax":
    pytest.skip(f"keras uses the {keras.backend.backend()} backend, not jax")
  keras.utils.set_random_seed(0)
  layer = keras.layers.Conv2D(6, 3, strides=2, padding="same")
  x = _f32(_rng(14), 2, 9, 10, 4)
  y = np.asarray(layer(x))
  w, b = (np.asarray(v) for v in layer.get_weights())

  best = fc.detect_convention(x, w, y, bias=b)[0]

  assert "tensorflow" in best.names and "keras" not in best.names  # aliases are not listed
  assert (best.flip, best.layout, best.kernel_layout) == (False, "NHWC", "HWIO")
  assert (best.kwargs["strides"], best.kwargs["padding"]) == (2, "SAME")
  _assert_reproduces(best, x, w, y, b)


def test_equinox_unbatched_conv_is_detected_as_equinox():
  jax = pytest.importorskip("jax")
  eqx = pytest.importorskip("equinox")
  layer = eqx.nn.Conv2d(3, 4, 3, padding=1, key=jax.random.key(1))
  x = _f32(_rng(15), 3, 8, 7)  # CHW, unbatched
  y = np.asarray(layer(x))
  w, b = np.asarray(layer.weight), np.asarray(layer.bias)

  best = fc.detect_convention(x, w, y, bias=b)[0]

  assert best.names == ("equinox",)
  assert (best.flip, best.layout, best.kernel_layout) == (False, "CHW", "OIHW")
  _assert_reproduces(best, x, w, y, b)


def test_flax_conv_transpose_is_detected_as_flax_with_transposed_true():
  jax = pytest.importorskip("jax")
  nn = pytest.importorskip("flax.linen")
  module = nn.ConvTranspose(features=4, kernel_size=(3, 3), strides=(2, 2), padding="SAME")
  x = _f32(_rng(20), 2, 5, 4, 3)
  params = module.init(jax.random.key(2), x)["params"]
  y = np.asarray(module.apply({"params": params}, x))
  w, b = np.asarray(params["kernel"]), np.asarray(params["bias"])

  matches = fc.detect_convention(x, w, y, bias=b, transposed=True)

  best = matches[0]
  # transpose_kernel=False: the adjoint of a flipped conv with the kernel read as HWOI.
  assert best.names[0] == "flax" and (best.flip, best.kernel_layout) == (True, "HWOI")
  assert "tensorflow" not in {n for m in matches for n in m.names}
  _assert_reproduces(best, x, w, y, b, transposed=True)


def test_keras_conv2d_transpose_is_detected_as_tensorflow():
  keras = pytest.importorskip("keras")
  if keras.backend.backend() != "jax":
    pytest.skip(f"keras uses the {keras.backend.backend()} backend, not jax")
  keras.utils.set_random_seed(1)
  layer = keras.layers.Conv2DTranspose(3, 3, strides=2, padding="valid")
  x = _f32(_rng(21), 1, 4, 5, 2)
  y = np.asarray(layer(x))
  w, b = (np.asarray(v) for v in layer.get_weights())

  best = fc.detect_convention(x, w, y, bias=b, transposed=True)[0]

  assert "tensorflow" in best.names
  assert (best.flip, best.layout, best.kernel_layout) == (False, "NHWC", "HWIO")
  _assert_reproduces(best, x, w, y, b, transposed=True)


# ---------------------------------------------------------------------------
# True convolution: SciPy per channel, Theano fixtures


def _scipy_conv(x, w, mode):
  """A flipped-kernel (true) convolution layer, NCHW/OIHW, from scipy.signal.convolve."""
  signal = pytest.importorskip("scipy.signal")
  return np.stack(
    [
      np.stack(
        [
          sum(signal.convolve(x[n, i], w[o, i], mode=mode) for i in range(x.shape[1]))
          for o in range(w.shape[0])
        ]
      )
      for n in range(x.shape[0])
    ]
  ).astype(np.float32)


@pytest.mark.parametrize("mode, padding", [("valid", "VALID"), ("full", "FULL")])
def test_scipy_true_convolution_is_detected_as_theano_lasagne(mode, padding):
  rng = _rng(16)
  x, w = _f32(rng, 2, 3, 8, 9), _f32(rng, 4, 3, 3, 2)
  y = _scipy_conv(x, w, mode)

  best = fc.detect_convention(x, w, y)[0]

  assert best.names == ("theano", "lasagne")
  assert (best.flip, best.layout, best.kernel_layout) == (True, "NCHW", "OIHW")
  assert best.kwargs["padding"] == padding
  _assert_reproduces(best, x, w, y)


def test_lasagne_same_with_an_even_kernel_is_half_padding():
  # Lasagne's pad='same' is k // 2 on both sides: an even kernel gives one more.
  rng = _rng(17)
  x, w = _f32(rng, 1, 2, 7, 7), _f32(rng, 3, 2, 4, 4)
  y = _scipy_conv(x, w, "full")[:, :, 1:-1, 1:-1]  # full pads 3, HALF pads 2

  best = fc.detect_convention(x, w, y)[0]

  assert "lasagne" in best.names and best.flip
  assert best.kwargs["padding"] == "HALF"
  _assert_reproduces(best, x, w, y)


def _theano_fixtures():
  return sorted(glob.glob(os.path.join(FIXTURES, "**", "*.npz"), recursive=True))


def _first(data, names):
  return next((data[k] for k in names if k in data), None)


@pytest.mark.skipif(not _theano_fixtures(), reason=f"no Theano fixtures in {FIXTURES}")
@pytest.mark.parametrize("path", _theano_fixtures(), ids=os.path.basename)
def test_theano_fixtures_are_detected_as_theano(path):
  with np.load(path, allow_pickle=False) as f:
    data = {k: f[k] for k in f.files}
  x = _first(data, ("x", "input", "inputs"))
  kernel = _first(data, ("kernel", "W", "w", "filters", "weight"))
  y = _first(data, ("y", "output", "out"))
  if x is None or kernel is None or y is None:
    pytest.skip(f"{path}: no x/kernel/y arrays (has {sorted(data)})")
  name = os.path.basename(path).lower()
  transposed = bool(_first(data, ("transposed",))) or any(
    w in name for w in ("grad_wrt_inputs", "transpose", "deconv")
  )
  strides = _first(data, ("strides", "subsample"))
  fixed = {} if strides is None else {"strides": tuple(int(s) for s in np.ravel(strides))}
  # The search tries one dilation for all axes and pads up to k_eff - 1: give the
  # fixture's own dilation and explicit (numeric) border_mode, which a user would know.
  dilation = _first(data, ("dilation", "filter_dilation"))
  if dilation is not None:
    fixed["dilation"] = tuple(int(d) for d in np.ravel(dilation))
  border_mode = str(data.get("border_mode", "valid"))
  if border_mode not in ("valid", "full", "half"):
    fixed["padding"] = ast.literal_eval(border_mode)
  # filter_flip=False fixtures (Theano with the flip off, Lasagne's Conv2DMMLayer) are
  # cross-correlations: a non-flipping convention must be found, not theano.
  flip = bool(data["filter_flip"]) if "filter_flip" in data else fc.get_convention("theano").flip

  matches = fc.detect_convention(
    x, kernel, y, bias=_first(data, ("bias", "b")), transposed=transposed, **fixed
  )

  assert matches, f"{path}: nothing matched"
  best = matches[0]
  assert best.flip == flip or UNDETERMINED in best.note
  if flip:
    assert "theano" in best.names or UNDETERMINED in best.note
  assert any(m.flip == flip and (not flip or "theano" in m.names) for m in matches)


# ---------------------------------------------------------------------------
# Bad input


def test_shapes_that_fit_no_convention_raise_and_say_why():
  x = np.ones((2, 3, 8, 8), np.float32)
  w = np.ones((4, 5, 3, 3), np.float32)
  y = np.ones((2, 7, 6, 6), np.float32)
  with pytest.raises(ValueError, match=r"fits the shapes x \(2, 3, 8, 8\).*pytorch: .*channels"):
    fc.detect_convention(x, w, y)


@pytest.mark.parametrize(
  "kwargs, error, pattern",
  [
    ({"x": np.ones((1, 2, 5, 5), bool)}, TypeError, "x has dtype bool"),
    ({"y": np.full((1, 3, 3, 3), "a")}, TypeError, "y has dtype <U1"),
    ({"kernel": None}, TypeError, "kernel must be an array, got None"),
    ({"kernel": np.ones((3, 2), np.float32)}, ValueError, "kernel must have rank >= 3"),
    ({"y": np.ones((1, 3, 3), np.float32)}, ValueError, "ranks"),
    ({"y": np.full((1, 3, 3, 3), np.nan, np.float32)}, ValueError, "y contains NaN"),
    ({"y": np.zeros((1, 3, 3, 3), np.float32)}, ValueError, "y is all zeros"),
    ({"stride": 2}, TypeError, "unexpected keyword argument 'stride'.*'strides'"),
    ({"transposed": True, "pad_mode": "reflect"}, TypeError, "pad_mode is an argument"),
    ({"rtol": -1.0}, ValueError, "rtol must be a positive number"),
    ({"bias": np.ones((3, 2), np.float32)}, ValueError, "bias must hold one value"),
  ],
)
def test_bad_inputs_raise_clear_errors(kwargs, error, pattern):
  args = {
    "x": np.ones((1, 2, 5, 5), np.float32),
    "kernel": np.ones((3, 2, 3, 3), np.float32),
    "y": np.ones((1, 3, 3, 3), np.float32),
  }
  args.update(kwargs)
  with pytest.raises(error, match=pattern):
    fc.detect_convention(args.pop("x"), args.pop("kernel"), args.pop("y"), **args)


# ---------------------------------------------------------------------------
# Command line and demo


def _cli(*args):
  exe = shutil.which("flipconv")
  cmd = [exe] if exe else [sys.executable, "-m", "flipconv.cli"]
  return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def torch_layer_file(tmp_path_factory):
  torch = pytest.importorskip("torch")
  torch.manual_seed(7)
  layer = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
  x = _f32(_rng(18), 1, 3, 9, 9)
  with torch.no_grad():
    y = layer(torch.from_numpy(x)).numpy()
  w, b = layer.weight.detach().numpy(), layer.bias.detach().numpy()
  path = tmp_path_factory.mktemp("detect") / "layer.npz"
  np.savez(path, x=x, kernel=w, y=y, bias=b, strides=np.array(2), padding=np.array(1))
  return path, x, w, y, b


def test_cli_detect_prints_the_matches_and_exits_0(torch_layer_file):
  path, *_ = torch_layer_file
  result = _cli("detect", str(path))
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert "conv, x (1, 3, 9, 9), kernel (4, 3, 3, 3)" in lines[0]
  assert "fixed strides=2 padding=1" in lines[0]
  header, first = lines[1].split(), lines[2]
  assert header[:6] == ["#", "convention", "flip", "layout", "kernel", "error"]
  assert "pytorch = onnx" in first and "False" in first and "NCHW" in first
  assert "strides=2 padding=1" in first


def test_cli_detect_exits_1_and_says_what_was_tried(tmp_path, torch_layer_file):
  _, x, w, y, b = torch_layer_file
  path = tmp_path / "wrong.npz"
  np.savez(path, x=x, kernel=w, y=-y, bias=b)
  result = _cli("detect", str(path))
  assert result.returncode == 1, result.stdout + result.stderr
  assert "no convention reproduces y" in result.stdout
  assert "tried: pytorch, onnx" in result.stdout and "closest: error" in result.stdout


@pytest.mark.parametrize(
  "content, pattern",
  [
    (None, "no such file"),
    (b"not an npz", "not a readable .npz"),
    ({"x": np.ones((1, 2, 5, 5)), "kernel": np.ones((3, 2, 3, 3))}, "lacks the array 'y'"),
    (
      {
        "x": np.ones((1, 2, 5, 5)),
        "kernel": np.ones((3, 2, 3, 3)),
        "y": np.ones((1, 3, 3)),
        "stride": np.array(1),
      },
      "unknown entry 'stride'",
    ),
    (
      {"x": np.ones((1, 2, 5, 5)), "kernel": np.ones((3, 2, 3, 3)), "y": np.ones((1, 9, 3, 3))},
      "no convention or flip/layout combination fits",
    ),
  ],
)
def test_cli_detect_exits_2_on_a_bad_file(tmp_path, content, pattern):
  path = tmp_path / "bad.npz"
  if isinstance(content, bytes):
    path.write_bytes(content)
  elif content is not None:
    np.savez(path, **content)
  result = _cli("detect", str(path))
  assert result.returncode == 2, result.stdout + result.stderr
  assert "Traceback" not in result.stderr
  (line,) = result.stderr.strip().splitlines()
  assert line.startswith("flipconv detect: error:")
  assert pattern in line


def test_demo_section_names_the_lasagne_convention():
  lines = []
  assert demo.detect_section(lines.append)
  text = "\n".join(lines)
  assert "lasagne" in text and "[FAILED]" not in text
