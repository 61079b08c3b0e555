"""The "equinox" convention against eqx.nn.Conv, ConvTranspose and Linear.

Equinox layers take one unbatched example (layout "CHW"); flipconv takes it
as it is. Weights are replaced by small integers so that float32 sums are
exact and outputs compare exactly.
"""

import jax
import numpy as np
import pytest

import flipconv as fc

eqx = pytest.importorskip("equinox")

RNG = np.random.default_rng(2)
SPATIAL = {1: (7,), 2: (7, 6), 3: (5, 6, 4)}
KERNEL = {1: (4,), 2: (4, 3), 3: (2, 3, 2)}


def ints(shape):
  return RNG.integers(-3, 4, shape).astype(np.float32)


def make(cls, *args, **kwargs):
  """A layer with integer weights (built abstractly: no random init to compile)."""
  layer = eqx.filter_eval_shape(cls, *args, use_bias=False, key=jax.random.key(0), **kwargs)
  return eqx.tree_at(lambda m: m.weight, layer, ints(layer.weight.shape))


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize(
  ("padding", "strides"), [("SAME", 1), ("VALID", 2), (1, 2), (((1, 0), (0, 2), (2, 1)), 1)]
)
def test_conv_is_the_equinox_convention(rank, padding, strides):
  groups = 2 if rank == 2 else 1
  padding = padding[:rank] if isinstance(padding, tuple) else padding
  layer = make(
    eqx.nn.Conv, rank, 4, 6, KERNEL[rank], stride=strides, padding=padding, groups=groups
  )
  x = ints((4, *SPATIAL[rank]))
  y = np.asarray(layer(x))
  assert layer.weight.shape == (6, 4 // groups, *KERNEL[rank])  # OIHW
  got = fc.conv(
    x, layer.weight, convention="equinox", strides=strides, padding=padding, groups=groups
  )
  np.testing.assert_array_equal(np.asarray(got), y)


def test_conv_dilated_is_the_equinox_convention():
  layer = make(eqx.nn.Conv2d, 2, 3, (2, 3), dilation=(3, 2), padding="SAME")
  x = ints((2, 9, 8))
  got = fc.conv(x, layer.weight, convention="equinox", dilation=(3, 2), padding="SAME")
  np.testing.assert_array_equal(np.asarray(got), np.asarray(layer(x)))


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize(
  ("padding", "strides", "output_padding"),
  [
    ("VALID", 1, 0),
    ("VALID", 3, 0),
    ("VALID", 2, 1),
    (1, 2, 0),
    (1, 3, 2),
    (((2, 0), (1, 1), (0, 1)), 2, 1),
    ("SAME", 2, 0),
    ("SAME", 3, 1),
  ],
)
def test_conv_transpose_is_the_equinox_convention(rank, padding, strides, output_padding):
  """Weight (out_t, in_t, k...) = forward IOHW, transpose_flip=True; PyTorch's sizes."""
  padding = padding[:rank] if isinstance(padding, tuple) else padding
  layer = make(
    eqx.nn.ConvTranspose,
    rank,
    3,
    4,
    KERNEL[rank],
    stride=strides,
    padding=padding,
    output_padding=output_padding,
  )
  x = ints((3, *SPATIAL[rank]))
  y = np.asarray(layer(x))
  assert layer.weight.shape == (4, 3, *KERNEL[rank])
  if padding == "SAME":
    # Equinox's SAME output_padding a takes a away from in * stride: an output_shape here.
    size = tuple(m * strides - output_padding for m in SPATIAL[rank])
    got = fc.conv_transpose(
      x, layer.weight, convention="equinox", strides=strides, padding=padding, output_shape=size
    )
  else:
    got = fc.conv_transpose(
      x,
      layer.weight,
      convention="equinox",
      strides=strides,
      padding=padding,
      output_padding=output_padding,
    )
  if output_padding == 0:  # Equinox's default: the convention's transpose_output_size
    default = fc.conv_transpose(
      x, layer.weight, convention="equinox", strides=strides, padding=padding
    )
    assert default.shape == y.shape
    np.testing.assert_array_equal(np.asarray(default), y)
  assert got.shape == y.shape
  np.testing.assert_array_equal(np.asarray(got), y)


def test_conv_transpose_flip_is_true_as_its_docstring_builds_it():
  """The FAQ of eqx.nn.ConvTranspose: weight = flip(conv.weight).swapaxes(0, 1)."""
  conv = make(eqx.nn.Conv2d, 3, 4, (4, 3), stride=2)
  conv_t = make(eqx.nn.ConvTranspose2d, 4, 3, (4, 3), stride=2)
  conv_t = eqx.tree_at(lambda m: m.weight, conv_t, np.flip(conv.weight, (2, 3)).swapaxes(0, 1))
  y = ints((4, 3, 3))
  x = np.zeros((3, 8, 7), np.float32)
  adjoint = jax.linear_transpose(conv, x)(y)[0]
  np.testing.assert_array_equal(np.asarray(conv_t(y)), np.asarray(adjoint))
  assert fc.get_convention("equinox").transpose_flip is True
  got = fc.conv_transpose(y, conv_t.weight, convention="equinox", strides=2)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(adjoint))
  # flip=False (the value CONVENTIONS.md gave) computes something else.
  wrong = fc.conv_transpose(y, conv_t.weight, convention="equinox", flip=False, strides=2)
  assert not np.array_equal(np.asarray(wrong), np.asarray(adjoint))


def test_grouped_conv_transpose_weight_is_not_a_relabelled_forward_kernel():
  """eqx.nn.ConvTranspose(groups=g) stores (out_t, in_t / g, k...), not (out_t / g, in_t, k...).

  A grouped transposed kernel with O = in_t needs a regroup, which the registry's
  layout letters cannot say; flipconv refuses it with an error naming the channels.
  """
  layer = make(eqx.nn.ConvTranspose2d, 4, 6, 3, groups=2)
  assert layer.weight.shape == (6, 2, 3, 3)
  with pytest.raises(ValueError, match="channels"):
    fc.conv_transpose(ints((4, 5, 5)), layer.weight, convention="equinox", groups=2)


def test_linear_weight_is_oi():
  layer = make(eqx.nn.Linear, 5, 4)
  x = ints((5,))
  assert fc.get_convention("equinox").linear_layout == "OI"
  assert layer.weight.shape == (4, 5)
  np.testing.assert_array_equal(np.asarray(layer(x)), layer.weight @ x)
  w = fc.convert_linear_kernel(np.asarray(layer.weight), "equinox", "flax")
  np.testing.assert_array_equal(x @ w, np.asarray(layer(x)))
