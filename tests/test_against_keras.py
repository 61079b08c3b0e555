"""The "tensorflow"/"keras" convention against Keras 3 layers on the jax backend.

Each test sets a Keras layer's weights and compares its output with flipconv
using the layer's kernel exactly as Keras stores it. Inputs and kernels hold
small integers, so every sum is exact in float32 and outputs compare exactly.
"""

import numpy as np
import pytest

import flipconv as fc

keras = pytest.importorskip("keras")
if keras.backend.backend() != "jax":  # conftest sets KERAS_BACKEND=jax before keras loads
  pytest.skip("these oracles run Keras on the jax backend", allow_module_level=True)

RNG = np.random.default_rng(0)
SPATIAL = {1: (7,), 2: (7, 6), 3: (5, 6, 4)}
KERNEL = {1: (4,), 2: (4, 3), 3: (2, 3, 2)}  # even sizes: SAME must put the odd extra somewhere


def ints(shape):
  return RNG.integers(-3, 4, shape).astype(np.float32)


def run_layer(layer, x):
  layer.build(x.shape)
  weights = [ints(w.shape) for w in layer.get_weights()]
  layer.set_weights(weights)
  return np.asarray(layer(x)), weights[0]


CONV = {1: "Conv1D", 2: "Conv2D", 3: "Conv3D"}
CONV_T = {1: "Conv1DTranspose", 2: "Conv2DTranspose", 3: "Conv3DTranspose"}


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("strides", [1, 2])
def test_conv_nd_is_the_keras_convention(rank, padding, strides):
  groups = 2 if rank == 2 else 1
  x = ints((2, *SPATIAL[rank], 4))
  layer = getattr(keras.layers, CONV[rank])(
    6, KERNEL[rank], strides=strides, padding=padding, groups=groups, use_bias=False
  )
  y, kernel = run_layer(layer, x)
  assert kernel.shape == (*KERNEL[rank], 4 // groups, 6)  # HWIO
  got = fc.conv(
    x, kernel, convention="keras", strides=strides, padding=padding.upper(), groups=groups
  )
  np.testing.assert_array_equal(np.asarray(got), y)


def test_conv2d_dilated_is_the_keras_convention():
  x = ints((1, 9, 8, 3))
  layer = keras.layers.Conv2D(2, (3, 2), dilation_rate=(2, 3), padding="same", use_bias=False)
  y, kernel = run_layer(layer, x)
  got = fc.conv(x, kernel, convention="keras", dilation=(2, 3), padding="SAME")
  np.testing.assert_array_equal(np.asarray(got), y)


def keras_same_pads(k_eff, output_padding):
  # Keras' "same" with an explicit output_padding pads k_eff // 2 on both sides of
  # the forward conv, less output_padding (keras.src.backend.common.backend_utils).
  total = 2 * (k_eff // 2) - output_padding
  return (total // 2, total - total // 2)


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize(
  ("strides", "output_padding"), [(1, None), (2, None), (3, None), (2, 1), (3, 2)]
)
def test_conv_nd_transpose_is_the_keras_convention(rank, padding, strides, output_padding):
  x = ints((2, *SPATIAL[rank], 3))
  layer = getattr(keras.layers, CONV_T[rank])(
    4, KERNEL[rank], strides=strides, padding=padding, output_padding=output_padding, use_bias=False
  )
  y, kernel = run_layer(layer, x)
  assert kernel.shape == (*KERNEL[rank], 4, 3)  # (k..., out_t, in_t): forward HWIO
  if output_padding is None:
    # The default size, by the convention's transpose_output_size ("tensorflow").
    got = fc.conv_transpose(x, kernel, convention="keras", strides=strides, padding=padding.upper())
  elif padding == "valid":
    got = fc.conv_transpose(
      x, kernel, convention="keras", strides=strides, padding="VALID", output_padding=output_padding
    )
  else:
    pads = [keras_same_pads(k, output_padding) for k in KERNEL[rank]]
    got = fc.conv_transpose(x, kernel, convention="keras", strides=strides, padding=pads)
  assert got.shape == y.shape
  np.testing.assert_array_equal(np.asarray(got), y)


def test_conv2d_transpose_same_even_kernel_output_padding_is_not_same():
  """Keras' "same" with output_padding=0 and an even kernel is no SAME conv's adjoint.

  Its output, (in - 1) * stride, is one short of every size a SAME forward conv
  maps to the input size, so flipconv's "SAME" cannot give it; explicit pads can.
  """
  x = ints((1, 5, 5, 2))
  layer = keras.layers.Conv2DTranspose(
    2, 4, strides=2, padding="same", output_padding=0, use_bias=False
  )
  y, kernel = run_layer(layer, x)
  assert y.shape[1:3] == (8, 8)
  with pytest.raises(ValueError, match="output_shape"):
    fc.conv_transpose(x, kernel, convention="keras", strides=2, padding="SAME", output_shape=(8, 8))
  got = fc.conv_transpose(x, kernel, convention="keras", strides=2, padding=2)
  np.testing.assert_array_equal(np.asarray(got), y)


def test_conv2d_transpose_dilated_is_the_keras_convention():
  x = ints((1, 5, 6, 2))
  layer = keras.layers.Conv2DTranspose(3, (3, 2), dilation_rate=2, padding="valid", use_bias=False)
  y, kernel = run_layer(layer, x)
  got = fc.conv_transpose(x, kernel, convention="keras", dilation=2)
  np.testing.assert_array_equal(np.asarray(got), y)


@pytest.mark.parametrize(("kernel_size", "strides"), [(2, 3), (3, 2), (4, 4), (5, 2)])
def test_default_transpose_size_is_the_tensorflow_rule(kernel_size, strides):
  x = ints((1, 5, 5, 1))
  for padding in ("valid", "same"):
    layer = keras.layers.Conv2DTranspose(
      1, kernel_size, strides=strides, padding=padding, use_bias=False
    )
    y, kernel = run_layer(layer, x)
    assert fc.get_convention("keras").transpose_output_size == "tensorflow"
    got = fc.conv_transpose(x, kernel, convention="keras", strides=strides, padding=padding.upper())
    assert got.shape == y.shape
    np.testing.assert_array_equal(np.asarray(got), y)
  if kernel_size < strides:  # here the PyTorch rule would give a smaller output
    pt = fc.conv_transpose(x, kernel, flip=False, strides=strides)
    assert pt.shape[1] < y.shape[1]


@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_conv2d_is_a_grouped_conv_with_channel_c_times_mult_plus_m(multiplier):
  c = 3
  x = ints((2, 7, 6, c))
  layer = keras.layers.DepthwiseConv2D(
    (3, 2), strides=2, padding="same", depth_multiplier=multiplier, use_bias=False
  )
  y, kernel = run_layer(layer, x)
  assert kernel.shape == (3, 2, c, multiplier)  # HWCM
  # The documented fact: a grouped HWIO kernel (kh, kw, 1, C * M), channel c * M + m.
  grouped = kernel.reshape(3, 2, 1, c * multiplier)
  got = fc.conv(x, grouped, convention="keras", groups=c, strides=2, padding="SAME")
  np.testing.assert_array_equal(np.asarray(got), y)
  for dst in ("flax", "pytorch", "tflite", "theano"):
    k = fc.convert_depthwise_kernel(kernel, "keras", dst)
    conv = fc.get_convention(dst)
    layout = conv.layout
    x_dst = x if layout == "NHWC" else x.transpose(0, 3, 1, 2)
    got = np.asarray(
      fc.conv(
        x_dst,
        k,
        convention=dst,
        groups=c,
        strides=2,
        padding="SAME",
        kernel_layout=conv.depthwise_kernel_layout or conv.kernel_layout,
      )
    )
    got = got if layout == "NHWC" else got.transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(got, y, err_msg=dst)
    back = fc.convert_depthwise_kernel(k, dst, "keras", groups=c)
    np.testing.assert_array_equal(back, kernel)


def test_depthwise_kernel_runs_in_torch_after_conversion():
  torch = pytest.importorskip("torch")
  c, mult = 4, 2
  x = ints((1, 6, 5, c))
  layer = keras.layers.DepthwiseConv2D(3, depth_multiplier=mult, padding="valid", use_bias=False)
  y, kernel = run_layer(layer, x)
  w = fc.convert_depthwise_kernel(kernel, "keras", "pytorch")
  assert w.shape == (c * mult, 1, 3, 3)
  got = torch.nn.functional.conv2d(
    torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(w), groups=c
  )
  np.testing.assert_array_equal(got.numpy().transpose(0, 2, 3, 1), y)


def test_dense_kernel_is_io_and_converts_to_torch_linear():
  x = ints((3, 5))
  layer = keras.layers.Dense(4, use_bias=False)
  y, kernel = run_layer(layer, x)
  assert fc.get_convention("keras").linear_layout == "IO"
  np.testing.assert_array_equal(x @ kernel, y)
  torch = pytest.importorskip("torch")
  w = fc.convert_linear_kernel(kernel, "keras", "pytorch")
  got = torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(w))
  np.testing.assert_array_equal(got.numpy(), y)
