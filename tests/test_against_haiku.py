"""The "haiku" convention against hk.Conv2D, hk.Conv2DTranspose, DepthwiseConv2D, Linear.

Haiku's forward conv is Flax's (NHWC, HWIO), but its transposed conv stores
``w`` as ``kernel + (output_channels, input_channels)`` = forward HWIO with
transpose_flip=True, while Flax's ConvTranspose kernel is forward HWOI: so
"haiku" is its own convention, not an alias of "flax".
"""

import jax
import numpy as np
import pytest

import flipconv as fc

hk = pytest.importorskip("haiku")

RNG = np.random.default_rng(3)


def ints(shape):
  return RNG.integers(-3, 4, shape).astype(np.float32)


def run(make_module, x):
  """The module's output with integer parameters, and its ``w``."""
  f = hk.without_apply_rng(hk.transform(lambda x: make_module()(x)))
  shapes = jax.eval_shape(f.init, jax.random.key(0), x)
  params = jax.tree.map(lambda s: ints(s.shape), shapes)
  (w,) = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params) if path[-1].key == "w"]
  return np.asarray(f.apply(params, x)), w


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_conv_is_the_haiku_convention(rank, padding, stride):
  spatial = {1: (7,), 2: (7, 6), 3: (5, 6, 4)}[rank]
  kernel = {1: (4,), 2: (4, 3), 3: (2, 3, 2)}[rank]
  x = ints((2, *spatial, 4))
  y, w = run(lambda: hk.ConvND(rank, 6, kernel, stride=stride, padding=padding, with_bias=False), x)
  assert w.shape == (*kernel, 4, 6)
  got = fc.conv(x, w, convention="haiku", strides=stride, padding=padding)
  np.testing.assert_array_equal(np.asarray(got), y)


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize(("kernel", "stride"), [((4, 3), 1), ((4, 3), 2), ((2, 2), 3)])
def test_conv2d_transpose_is_hwio_with_transpose_flip(padding, kernel, stride):
  """w: kernel + (out_t, in_t) = forward HWIO, transpose_flip=True; TF default sizes."""
  x = ints((2, 5, 6, 3))
  y, w = run(
    lambda: hk.Conv2DTranspose(4, kernel, stride=stride, padding=padding, with_bias=False), x
  )
  assert w.shape == (*kernel, 4, 3)
  conv = fc.get_convention("haiku")
  assert (conv.transpose_kernel_layout, conv.transpose_flip) == ("HWIO", True)
  got = fc.conv_transpose(x, w, convention="haiku", strides=stride, padding=padding)
  assert got.shape == y.shape  # transpose_output_size "tensorflow"
  np.testing.assert_array_equal(np.asarray(got), y)
  # Not Flax's layout: Flax's ConvTranspose reads the same array as HWOI.
  assert conv != fc.get_convention("flax")
  flax_kernel = fc.convert_kernel(w, "haiku", "flax", transposed=True)
  assert flax_kernel.shape == (*kernel, 3, 4)
  got = fc.conv_transpose(x, flax_kernel, convention="flax", strides=stride, padding=padding)
  np.testing.assert_array_equal(np.asarray(got), y)


@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_conv2d_is_a_grouped_hwio_kernel(multiplier):
  c = 3
  x = ints((1, 6, 7, c))
  y, w = run(lambda: hk.DepthwiseConv2D(multiplier, (3, 2), stride=2, with_bias=False), x)
  assert w.shape == (3, 2, 1, c * multiplier)
  got = fc.conv(x, w, convention="haiku", groups=c, strides=2, padding="SAME")
  np.testing.assert_array_equal(np.asarray(got), y)
  keras_kernel = fc.convert_depthwise_kernel(w, "haiku", "keras", groups=c)
  assert keras_kernel.shape == (3, 2, c, multiplier)
  np.testing.assert_array_equal(keras_kernel.reshape(w.shape), w)  # channel c * mult + m


def test_linear_is_io():
  x = ints((3, 5))
  y, w = run(lambda: hk.Linear(4, with_bias=False), x)
  assert fc.get_convention("haiku").linear_layout == "IO"
  assert w.shape == (5, 4)
  np.testing.assert_array_equal(x @ w, y)
