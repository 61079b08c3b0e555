"""The "flax" convention against flax.linen Conv, ConvTranspose and Dense.

Each test builds a linen layer, replaces its parameters with small integers
(so float32 sums are exact) and compares its output with flipconv using the
kernel exactly as Flax stores it.
"""

import jax
import numpy as np
import pytest

import flipconv as fc

nn = pytest.importorskip("flax.linen")

RNG = np.random.default_rng(1)
SPATIAL = {1: (7,), 2: (7, 6), 3: (5, 6, 4)}
KERNEL = {1: (4,), 2: (4, 3), 3: (2, 3, 2)}  # even sizes: SAME must put the odd extra somewhere


def ints(shape):
  return RNG.integers(-3, 4, shape).astype(np.float32)


def run(module, x):
  """The module's output with integer parameters, and its kernel."""
  shapes = jax.eval_shape(module.init, jax.random.key(0), x)
  params = jax.tree.map(lambda s: ints(s.shape), shapes)
  return np.asarray(module.apply(params, x)), params["params"]["kernel"]


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("padding", ["SAME", "VALID", ((1, 0), (0, 2), (2, 1))])
@pytest.mark.parametrize("strides", [1, 2])
def test_conv_is_the_flax_convention(rank, padding, strides):
  groups = 2 if rank == 2 else 1
  padding = padding[:rank] if isinstance(padding, tuple) else padding
  x = ints((2, *SPATIAL[rank], 4))
  layer = nn.Conv(
    6, KERNEL[rank], strides=strides, padding=padding, feature_group_count=groups, use_bias=False
  )
  y, kernel = run(layer, x)
  assert kernel.shape == (*KERNEL[rank], 4 // groups, 6)  # HWIO
  got = fc.conv(x, kernel, convention="flax", strides=strides, padding=padding, groups=groups)
  np.testing.assert_array_equal(np.asarray(got), y)


def test_conv_dilated_is_the_flax_convention():
  x = ints((1, 9, 8, 2))
  pads = ((2, 1), (0, 3))
  layer = nn.Conv(
    3, (2, 3), kernel_dilation=(3, 2), input_dilation=(1, 2), padding=pads, use_bias=False
  )
  y, kernel = run(layer, x)
  got = fc.conv(x, kernel, convention="flax", dilation=(3, 2), input_dilation=(1, 2), padding=pads)
  np.testing.assert_array_equal(np.asarray(got), y)


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("strides", [1, 2, 3])
def test_conv_transpose_is_the_flax_convention(rank, padding, strides):
  """transpose_kernel=False: the stored kernel is forward HWOI with transpose_flip=True.

  The default output size is the convention's "tensorflow" rule (kernel 2 with
  stride 3 is where it differs from PyTorch's).
  """
  x = ints((2, *SPATIAL[rank], 3))
  layer = nn.ConvTranspose(
    4, KERNEL[rank], strides=(strides,) * rank, padding=padding, use_bias=False
  )
  y, kernel = run(layer, x)
  assert kernel.shape == (*KERNEL[rank], 3, 4)  # (k..., in_t, out_t): forward HWOI
  got = fc.conv_transpose(x, kernel, convention="flax", strides=strides, padding=padding)
  assert got.shape == y.shape
  np.testing.assert_array_equal(np.asarray(got), y)


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("strides", [1, 2])
def test_conv_transpose_with_transpose_kernel_is_the_tensorflow_convention(padding, strides):
  """transpose_kernel=True stores (k..., out_t, in_t) = forward HWIO, transpose_flip=False."""
  x = ints((2, 7, 6, 3))
  layer = nn.ConvTranspose(
    4, (4, 3), strides=(strides, strides), padding=padding, transpose_kernel=True, use_bias=False
  )
  y, kernel = run(layer, x)
  assert kernel.shape == (4, 3, 4, 3)
  got = fc.conv_transpose(
    x,
    kernel,
    flip=False,
    layout="NHWC",
    kernel_layout="HWIO",
    strides=strides,
    padding=padding,
    output_shape=y.shape[1:3],
  )
  np.testing.assert_array_equal(np.asarray(got), y)
  # So a kernel stored for transpose_kernel=True converts from "tensorflow" to "flax".
  plain = nn.ConvTranspose(4, (4, 3), strides=(strides, strides), padding=padding, use_bias=False)
  flax_kernel = fc.convert_kernel(kernel, "tensorflow", "flax", transposed=True)
  y_plain = plain.apply({"params": {"kernel": flax_kernel}}, x)
  np.testing.assert_array_equal(np.asarray(y_plain), y)


def test_torch_conv_transpose_weight_runs_in_flax_after_conversion():
  torch = pytest.importorskip("torch")
  x = ints((1, 3, 5, 4))  # NCHW
  w = ints((3, 2, 4, 3))  # ConvTranspose2d(3, 2, (4, 3)).weight: (in_t, out_t, kh, kw)
  y = torch.nn.functional.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), stride=2)
  kernel = fc.convert_kernel(w, "pytorch", "flax", transposed=True)
  layer = nn.ConvTranspose(2, (4, 3), strides=(2, 2), padding="VALID", use_bias=False)
  got = layer.apply({"params": {"kernel": kernel}}, x.transpose(0, 2, 3, 1))
  np.testing.assert_array_equal(np.asarray(got), y.numpy().transpose(0, 2, 3, 1))


def test_dense_kernel_is_io():
  x = ints((3, 5))
  y, kernel = run(nn.Dense(4, use_bias=False), x)
  assert fc.get_convention("flax").linear_layout == "IO"
  assert kernel.shape == (5, 4)
  np.testing.assert_array_equal(x @ kernel, y)
