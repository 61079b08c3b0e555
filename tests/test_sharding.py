"""flipconv under jax.sharding: no gather, no host copy, shardings kept.

A batch-sharded input and a kernel sharded on the axis that becomes the
output's channels must give an output sharded (data, model) with no
collective in the compiled program, exactly as a raw lax conv does. The
reference for every value is the same computation unsharded, with lax
called directly where possible.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import flipconv as fc

COLLECTIVES = ("all-gather", "all-to-all", "collective-permute", "all-reduce", "reduce-scatter")

pytestmark = pytest.mark.skipif(
  len(jax.devices()) < 8, reason="needs 8 devices (XLA_FLAGS host device count, see conftest)"
)


@pytest.fixture(scope="module")
def mesh():
  return Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))


def collectives(jitted, *args) -> list[str]:
  text = jitted.lower(*args).compile().as_text()
  return [c for c in COLLECTIVES if c in text]


def spec_of(layout: str, **named: str) -> P:
  """A PartitionSpec naming mesh axes by layout letter, e.g. spec_of("NCHW", N="data")."""
  return P(*(named.get(c) for c in layout))


def place(mesh, array, layout, **named):
  return jax.device_put(array, NamedSharding(mesh, spec_of(layout, **named)))


def assert_sharded_like(out, mesh, layout, **named):
  expected = NamedSharding(mesh, spec_of(layout, **named))
  assert out.sharding.is_equivalent_to(expected, out.ndim), (out.sharding, expected)


def shape_of(layout, **sizes):
  return tuple(sizes[c] for c in layout)


def rand(shape, seed):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


CASES = [
  # layout, kernel_layout, flip, padding, strides, groups
  ("NCHW", "OIHW", False, "SAME", 1, 1),
  ("NCHW", "OIHW", True, "SAME", 1, 1),
  ("NHWC", "HWIO", True, "VALID", 2, 1),
  ("NHWC", "OHWI", False, "SAME_LOWER", 2, 1),
  ("NCHW", "OIHW", True, "FULL", 1, 2),
  ("NCHW", "OIHW", False, "HALF", (2, 1), 1),
  ("NCHW", "OIHW", True, ((1, 0), (2, 1)), 1, 1),
  ("NCHW", "OIHW", False, "CAUSAL", 1, 1),
]


def explicit(padding, k_sizes, in_sizes, strides):
  """Padding pairs written out from the API's definitions (independent of flipconv)."""
  if not isinstance(padding, str):
    return padding
  pads = []
  for k, n, s in zip(k_sizes, in_sizes, strides, strict=True):
    total = max((-(-n // s) - 1) * s + k - n, 0)
    pads.append(
      {
        "VALID": (0, 0),
        "SAME": (total // 2, total - total // 2),
        "SAME_LOWER": (total - total // 2, total // 2),
        "FULL": (k - 1, k - 1),
        "HALF": (k // 2, k // 2),
        "CAUSAL": (k - 1, 0),
      }[padding]
    )
  return pads


@pytest.mark.parametrize("layout,kernel_layout,flip,padding,strides,groups", CASES)
def test_conv_adds_no_collective_to_the_raw_lax_program(
  mesh, layout, kernel_layout, flip, padding, strides, groups
):
  x_np = rand(shape_of(layout, N=8, C=4, H=12, W=10), 0)
  k_np = rand(shape_of(kernel_layout, O=6, I=4 // groups, H=3, W=2), 1)
  x = place(mesh, x_np, layout, N="data")
  k = place(mesh, k_np, kernel_layout, O="model")
  kw = dict(
    flip=flip,
    padding=padding,
    strides=strides,
    groups=groups,
    layout=layout,
    kernel_layout=kernel_layout,
  )
  f = jax.jit(lambda x, k: fc.conv(x, k, **kw))
  out = f(x, k)

  s = (strides,) * 2 if isinstance(strides, int) else strides
  sp = tuple(kernel_layout.index(c) for c in "HW")
  pads = explicit(
    padding, [k_np.shape[a] for a in sp], [x_np.shape[layout.index(c)] for c in "HW"], s
  )
  raw = jax.jit(
    lambda x, k: lax.conv_general_dilated(
      x,
      lax.rev(k, sp) if flip else k,
      s,
      pads,
      feature_group_count=groups,
      dimension_numbers=(layout, kernel_layout, layout),
    )
  )
  # flipconv's program communicates exactly as much as raw lax's: nothing for
  # plain convs; XLA's SPMD partitioner itself gathers for grouped ones.
  assert collectives(f, x, k) == collectives(raw, x, k)
  if groups == 1:
    assert collectives(f, x, k) == []
  assert_sharded_like(out, mesh, layout, N="data", C="model")
  np.testing.assert_allclose(np.asarray(out), np.asarray(raw(x_np, k_np)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["convolve", "correlate"])
def test_convolve_and_correlate_sharded(mesh, op):
  x_np, k_np = rand((8, 4, 9, 9), 2), rand((6, 4, 3, 3), 3)
  x = place(mesh, x_np, "NCHW", N="data")
  k = place(mesh, k_np, "OIHW", O="model")
  f = jax.jit(
    lambda x, k: getattr(fc, op)(x, k, layout="NCHW", kernel_layout="OIHW", padding="SAME")
  )
  out = f(x, k)
  assert collectives(f, x, k) == []
  assert_sharded_like(out, mesh, "NCHW", N="data", C="model")
  k_ref = np.flip(k_np, (2, 3)) if op == "convolve" else k_np
  ref = lax.conv_general_dilated(
    x_np, k_ref, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW")
  )
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("convention", ["pytorch", "lasagne", "flax", "tensorflow", "tflite"])
def test_conv_with_conventions_sharded(mesh, convention):
  conv = fc.get_convention(convention)
  x_np = rand(shape_of(conv.layout, N=8, C=4, H=10, W=10), 4)
  k_np = rand(shape_of(conv.kernel_layout, O=6, I=4, H=3, W=3), 5)
  x = place(mesh, x_np, conv.layout, N="data")
  k = place(mesh, k_np, conv.kernel_layout, O="model")
  f = jax.jit(lambda x, k: fc.conv(x, k, convention=convention, padding="SAME", strides=2))
  out = f(x, k)
  assert collectives(f, x, k) == []
  assert_sharded_like(out, mesh, conv.layout, N="data", C="model")
  np.testing.assert_allclose(
    np.asarray(out),
    np.asarray(fc.conv(x_np, k_np, convention=convention, padding="SAME", strides=2)),
    rtol=1e-6,
    atol=1e-6,
  )


@pytest.mark.parametrize("pad_mode", ["reflect", "circular", "replicate", "symmetric"])
def test_pad_modes_sharded(mesh, pad_mode):
  x_np, k_np = rand((8, 4, 9, 9), 6), rand((6, 4, 3, 3), 7)
  x = place(mesh, x_np, "NCHW", N="data")
  k = place(mesh, k_np, "OIHW", O="model")
  f = jax.jit(lambda x, k: fc.conv(x, k, convention="pytorch", padding=1, pad_mode=pad_mode))
  out = f(x, k)
  assert collectives(f, x, k) == []
  assert_sharded_like(out, mesh, "NCHW", N="data", C="model")
  mode = {"replicate": "edge", "circular": "wrap"}.get(pad_mode, pad_mode)
  x_pad = np.pad(x_np, ((0, 0), (0, 0), (1, 1), (1, 1)), mode=mode)
  ref = lax.conv_general_dilated(
    x_pad, k_np, (1, 1), "VALID", dimension_numbers=("NCHW", "OIHW", "NCHW")
  )
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("padding,strides", [("SAME", 2), ("VALID", 2), (1, 1)])
def test_conv_transpose_sharded(mesh, flip, padding, strides):
  # The transposed conv's output channels are the kernel's forward I axis.
  y_np, k_np = rand((8, 6, 5, 5), 8), rand((6, 4, 3, 3), 9)
  y = place(mesh, y_np, "NCHW", N="data")
  k = place(mesh, k_np, "OIHW", I="model")
  kw = dict(flip=flip, padding=padding, strides=strides, layout="NCHW", kernel_layout="OIHW")
  f = jax.jit(lambda y, k: fc.conv_transpose(y, k, **kw))
  out = f(y, k)
  assert collectives(f, y, k) == []
  assert_sharded_like(out, mesh, "NCHW", N="data", C="model")
  x_shape = (8, 4, *out.shape[2:])
  ref = jax.linear_transpose(
    lambda x: fc.conv(x, k_np, **kw), jax.ShapeDtypeStruct(x_shape, jnp.float32)
  )(y_np)[0]
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-5)


def test_spatial_sharding_of_a_large_image(mesh):
  """H sharded over all 8 devices: correct, and XLA exchanges only halos."""
  devices = np.array(jax.devices()[:8])
  spatial = Mesh(devices.reshape(8), ("space",))
  x_np, k_np = rand((1, 3, 256, 64), 10), rand((4, 3, 5, 5), 11)
  x = jax.device_put(x_np, NamedSharding(spatial, P(None, None, "space", None)))
  k = jax.device_put(k_np, NamedSharding(spatial, P()))
  f = jax.jit(lambda x, k: fc.convolve(x, k, layout="NCHW", kernel_layout="OIHW", padding="SAME"))
  out = f(x, k)
  ref = lax.conv_general_dilated(
    x_np, np.flip(k_np, (2, 3)), (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW")
  )
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-5)
  found = collectives(f, x, k)
  # Halo exchange (collective-permute) is expected; a gather of the image is not.
  assert "all-gather" not in found and "all-to-all" not in found, found
  assert_sharded_like(out, spatial, "NCHW", H="space")


def test_convert_kernel_sharded_keeps_permuted_spec(mesh):
  k_np = rand((8, 4, 3, 3), 12)  # OIHW, O sharded on model
  k = place(mesh, k_np, "OIHW", O="model", I="data")
  f = jax.jit(lambda k: fc.convert_kernel(k, "lasagne", "flax"))
  out = f(k)
  assert collectives(f, k) == []
  assert isinstance(out, jax.Array)
  assert_sharded_like(out, mesh, "HWIO", O="model", I="data")
  np.testing.assert_array_equal(np.asarray(out), np.flip(k_np.transpose(2, 3, 1, 0), (0, 1)))
  # No device holds the whole kernel.
  assert all(s.data.size < k_np.size for s in out.addressable_shards)


def test_grad_step_sharded_has_no_gather(mesh):
  """Forward and backward of a flipped conv: gradients stay sharded like the inputs."""
  x_np, k_np = rand((8, 4, 10, 10), 13), rand((6, 4, 3, 3), 14)
  x = place(mesh, x_np, "NCHW", N="data")
  k = place(mesh, k_np, "OIHW", O="model")

  def loss(k, x):
    return jnp.sum(fc.conv(x, k, convention="lasagne", padding="HALF") ** 2)

  f = jax.jit(jax.grad(loss))
  g = f(k, x)
  found = collectives(f, k, x)
  # The kernel gradient sums over the batch, which lives on "data": one
  # all-reduce over data is the only communication a data-parallel step needs.
  assert [c for c in found if c != "all-reduce"] == []
  ref = jax.grad(
    lambda k: jnp.sum(
      lax.conv_general_dilated(
        x_np,
        jnp.flip(k, (2, 3)),
        (1, 1),
        ((1, 1), (1, 1)),
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
      )
      ** 2
    )
  )(k_np)
  np.testing.assert_allclose(np.asarray(g), np.asarray(ref), rtol=1e-4, atol=1e-4)
