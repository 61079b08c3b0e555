"""``method="fft"`` and the Flax modules under jax.sharding (issue 11).

Same setting as tests/test_sharding.py: a 4 x 2 mesh ("data", "model") of
host devices, a batch-sharded input and a kernel sharded on the axis that
becomes the output's channels. Values are compared with the same computation
unsharded (raw lax, or Flax's own layers), shardings with what the user named.

XLA's SPMD partitioner does not partition real FFTs (each ``rfft``/``irfft``
would get its operand all-gathered and run on the whole array on every device),
so on several devices the FFT method is a ``custom_partitioning`` op
(``flipconv._fft_spmd``): each device transforms its own batch x channel block.
These tests assert the compiled programs have no collective in the forward
pass and only the all-reduces a sharded conv's gradient needs in the backward.
"""

from __future__ import annotations

import math
import re
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import flipconv as fc

# Communication that a batch x output-channel sharded conv must not need.
GATHERS = ("all-gather", "all-to-all", "collective-permute")
COLLECTIVES = (*GATHERS, "all-reduce", "reduce-scatter")

pytestmark = pytest.mark.skipif(
  len(jax.devices()) < 8, reason="needs 8 devices (XLA_FLAGS host device count, see conftest)"
)


@pytest.fixture(scope="module")
def mesh():
  return Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))


def run_compiled(jitted, *args):
  """Compiles once; returns the output, the collectives found and the compiled HLO text."""
  compiled = jitted.lower(*args).compile()
  text = compiled.as_text()
  return compiled(*args), [c for c in COLLECTIVES if c in text], text


def spec_of(layout: str, **named: str) -> P:
  """A PartitionSpec naming mesh axes by layout letter, e.g. spec_of("NCHW", N="data")."""
  return P(*(named.get(c) for c in layout))


def place(mesh, array, layout, **named):
  return jax.device_put(array, NamedSharding(mesh, spec_of(layout, **named)))


def assert_sharded_like(out, mesh, spec):
  expected = NamedSharding(mesh, spec)
  assert out.sharding.is_equivalent_to(expected, out.ndim), (out.sharding, expected)


def shape_of(layout, **sizes):
  return tuple(sizes[c] for c in layout)


def rand(shape, seed):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def ramp(key, shape, dtype=jnp.float32):
  """A Flax-style initialiser without randomness: distinct values, so a misplaced one shows.

  These tests are about where values go; a random initialiser would add seconds of
  compilation per shape (partitionable threefry on XLA:CPU) and show nothing more.
  Flax's default random init is compared with Flax's own, sharded, once (linen Conv).
  """
  del key
  n = math.prod(shape)
  return ((jnp.arange(n) - n / 2) / n).astype(dtype).reshape(shape)


def lax_conv(x, k, *, flip, layout, kernel_layout, strides, padding):
  """The unsharded reference: one raw lax call (explicit pads or a lax padding string)."""
  sp = tuple(kernel_layout.index(c) for c in layout if c not in "NC")
  n = len(sp)
  s = (strides,) * n if isinstance(strides, int) else tuple(strides)
  return lax.conv_general_dilated(
    x, np.flip(k, sp) if flip else k, s, padding, dimension_numbers=(layout, kernel_layout, layout)
  )


# ----------------------------------------------------------------------------
# method="fft" under sharding
# ----------------------------------------------------------------------------

FFT_CASES = [
  # layout, kernel_layout, flip, fc padding, lax padding, strides, sizes (x spatial, k spatial)
  ("NCHW", "OIHW", True, "SAME", "SAME", 1, ((12, 10), (3, 3))),
  ("NHWC", "HWIO", False, "VALID", "VALID", 2, ((12, 10), (3, 2))),
  ("NCHW", "OIHW", False, "FULL", ((2, 2), (1, 1)), 1, ((9, 9), (3, 2))),
  # A long 1-D signal: the cost model picks overlap-save blocks here.
  ("NCW", "OIW", True, "SAME", "SAME", 1, ((2048,), (65,))),
]


def _fft_case(mesh, layout, kernel_layout, sizes, seed):
  xs, ks = sizes
  spatial = [c for c in layout if c not in "NC"]
  x_np = rand(shape_of(layout, N=8, C=4, **dict(zip(spatial, xs, strict=True))), seed)
  k_np = rand(shape_of(kernel_layout, O=6, I=4, **dict(zip(spatial, ks, strict=True))), seed + 1)
  return (
    x_np,
    k_np,
    place(mesh, x_np, layout, N="data"),
    place(mesh, k_np, kernel_layout, O="model"),
  )


@pytest.mark.parametrize("layout,kernel_layout,flip,padding,lax_padding,strides,sizes", FFT_CASES)
def test_fft_conv_sharded_equals_unsharded_and_stays_sharded(
  mesh, layout, kernel_layout, flip, padding, lax_padding, strides, sizes
):
  x_np, k_np, x, k = _fft_case(mesh, layout, kernel_layout, sizes, 20)
  kw = dict(flip=flip, layout=layout, kernel_layout=kernel_layout, padding=padding, strides=strides)
  out, found, _ = run_compiled(jax.jit(lambda x, k: fc.conv(x, k, method="fft", **kw)), x, k)
  assert_sharded_like(out, mesh, spec_of(layout, N="data", C="model"))
  ref = lax_conv(
    x_np,
    k_np,
    flip=flip,
    layout=layout,
    kernel_layout=kernel_layout,
    strides=strides,
    padding=lax_padding,
  )
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-4, atol=1e-4)
  assert found == []


@pytest.mark.parametrize("op", ["convolve", "correlate"])
def test_fft_convolve_and_correlate_sharded(mesh, op):
  x_np, k_np = rand((8, 4, 9, 9), 22), rand((6, 4, 3, 3), 23)
  x = place(mesh, x_np, "NCHW", N="data")
  k = place(mesh, k_np, "OIHW", O="model")
  out = jax.jit(
    lambda x, k: getattr(fc, op)(
      x, k, layout="NCHW", kernel_layout="OIHW", padding="SAME", method="fft"
    )
  )(x, k)
  assert_sharded_like(out, mesh, P("data", "model"))
  ref = lax_conv(
    x_np,
    k_np,
    flip=op == "convolve",
    layout="NCHW",
    kernel_layout="OIHW",
    strides=1,
    padding="SAME",
  )
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-4, atol=1e-4)


def lax_conv_transpose(y, k, *, flip, strides, padding, x_spatial):
  """The adjoint of the raw lax conv (NCHW, OIHW, 3x3 kernel), by jax.linear_transpose."""
  lax_pad = ((padding, padding),) * 2 if isinstance(padding, int) else padding
  x_shape = (y.shape[0], k.shape[1], *x_spatial)
  return jax.linear_transpose(
    lambda x: lax_conv(
      x, k, flip=flip, layout="NCHW", kernel_layout="OIHW", strides=strides, padding=lax_pad
    ),
    jax.ShapeDtypeStruct(x_shape, jnp.float32),
  )(y)[0]


@pytest.mark.parametrize(
  "flip,padding,strides", [(False, "SAME", 2), (True, "VALID", 2), (True, 1, 1)]
)
def test_fft_conv_transpose_sharded_equals_unsharded(mesh, flip, padding, strides):
  # The transposed conv's output channels are the kernel's forward I axis.
  y_np, k_np = rand((8, 6, 5, 5), 24), rand((6, 4, 3, 3), 25)
  y = place(mesh, y_np, "NCHW", N="data")
  k = place(mesh, k_np, "OIHW", I="model")
  kw = dict(flip=flip, padding=padding, strides=strides, layout="NCHW", kernel_layout="OIHW")
  out, found, _ = run_compiled(
    jax.jit(lambda y, k: fc.conv_transpose(y, k, method="fft", **kw)), y, k
  )
  assert_sharded_like(out, mesh, P("data", "model"))
  ref = lax_conv_transpose(
    y_np, k_np, flip=flip, strides=strides, padding=padding, x_spatial=out.shape[2:]
  )
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-4, atol=1e-4)
  assert found == []


FFT_KW = dict(flip=True, layout="NCHW", kernel_layout="OIHW", padding="SAME", method="fft")
FFT_OPS = {
  # op: (function, the kernel's sharded letter)
  "conv": (lambda x, k: fc.conv(x, k, **FFT_KW), "O"),
  "conv_transpose": (lambda y, k: fc.conv_transpose(y, k, strides=2, **FFT_KW), "I"),
}


@pytest.fixture(scope="module")
def fft_programs(mesh):
  """Per op: the sharded arguments, the compiled jit program's output, collectives and HLO,
  and the unsharded reference."""
  k_np = rand((6, 4, 3, 3), 27)
  x_np, y_np = rand((8, 4, 12, 10), 26), rand((8, 6, 6, 5), 28)
  refs = {
    "conv": (
      x_np,
      lax_conv(
        x_np, k_np, flip=True, layout="NCHW", kernel_layout="OIHW", strides=1, padding="SAME"
      ),
    ),
    "conv_transpose": (
      y_np,
      lax_conv_transpose(y_np, k_np, flip=True, strides=2, padding="SAME", x_spatial=(12, 10)),
    ),
  }
  programs = {}
  for op, (fn, letter) in FFT_OPS.items():
    a_np, ref = refs[op]
    args = (place(mesh, a_np, "NCHW", N="data"), place(mesh, k_np, "OIHW", **{letter: "model"}))
    programs[op] = (args, *run_compiled(jax.jit(fn), *args), np.asarray(ref))
  return programs


@pytest.mark.parametrize("op", list(FFT_OPS))
def test_fft_jit_program_equals_unsharded(mesh, fft_programs, op):
  _, out, _, _, ref = fft_programs[op]
  assert_sharded_like(out, mesh, P("data", "model"))
  np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("op", list(FFT_OPS))
def test_fft_sharded_program_has_no_collective(fft_programs, op):
  _, _, found, text, _ = fft_programs[op]
  assert {t for t in re.findall(r" fft\(\S+\), fft_type=(\w+)", text)} == {"RFFT", "IRFFT"}
  assert found == []


def _padded(spec: P, ndim: int) -> tuple:
  return tuple(spec) + (None,) * (ndim - len(spec))


@pytest.mark.parametrize("op", list(FFT_OPS))
def test_fft_gradient_sharded_needs_only_the_all_reduces(fft_programs, op):
  """d/dx sums over the kernel's channel shards, d/dk over the batch shards: all-reduces."""
  args, _, _, _, _ = fft_programs[op]
  if op == "conv":

    def apply(a, k, method):
      return fc.conv(a, k, **{**FFT_KW, "method": method})
  else:

    def apply(a, k, method):
      return fc.conv_transpose(a, k, strides=2, **{**FFT_KW, "method": method})

  def grad(method):
    return jax.grad(lambda a, k: jnp.sum(jnp.sin(apply(a, k, method))), argnums=(0, 1))

  grads, found, _ = run_compiled(jax.jit(grad("fft")), *args)
  assert [c for c in found if c in GATHERS] == []
  assert "all-reduce" in found
  ref = grad("direct")(*(np.asarray(a) for a in args))
  for got, want, arg in zip(grads, ref, args, strict=True):
    assert _padded(got.sharding.spec, got.ndim) == _padded(arg.sharding.spec, arg.ndim)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-3, atol=1e-3)


def test_fft_under_vmap_of_sharded_arrays_is_correct(mesh):
  """vmap takes the unpartitioned FFT conv (custom_partitioning has no batching rule)."""
  x_np, k_np = rand((8, 4, 9, 9), 29), rand((3, 6, 4, 3, 3), 30)
  x = place(mesh, x_np, "NCHW", N="data")

  def batched(method):
    return jax.jit(
      jax.vmap(
        lambda k: fc.convolve(
          x, k, layout="NCHW", kernel_layout="OIHW", padding="SAME", method=method
        )
      )
    )

  np.testing.assert_allclose(
    np.asarray(batched("fft")(k_np)), np.asarray(batched("direct")(k_np)), rtol=1e-4, atol=1e-4
  )


@pytest.mark.parametrize("op", list(FFT_OPS))
def test_fft_per_shard_under_shard_map_needs_no_collective(mesh, fft_programs, op):
  """The fix's program: each device transforms its own batch x channel block."""
  args, _, _, _, ref = fft_programs[op]
  fn, letter = FFT_OPS[op]
  g = jax.jit(
    jax.shard_map(
      fn,
      mesh=mesh,
      in_specs=(P("data"), spec_of("OIHW", **{letter: "model"})),
      out_specs=P("data", "model"),
    )
  )
  out, found, _ = run_compiled(g, *args)
  assert found == []
  assert_sharded_like(out, mesh, P("data", "model"))
  np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------
# flipconv.linen: nn.with_partitioning, names in the module's own kernel layout
# ----------------------------------------------------------------------------

LINEN_CASES = [
  # module, kwargs, kernel names (own layout), x layout, expected kernel shape
  ("Conv", dict(convention="pytorch"), ("model", None, None, None), "NCHW", (6, 4, 3, 3)),
  ("Conv", dict(convention="lasagne"), ("model", None, None, None), "NCHW", (6, 4, 3, 3)),
  ("Conv", dict(convention="tflite"), ("model", None, None, None), "NHWC", (6, 3, 3, 4)),
  (
    "ConvTranspose",
    dict(convention="pytorch", strides=2),
    (None, "model", None, None),
    "NCHW",
    (4, 6, 3, 3),
  ),
]


def _linen_sharded_init(mesh, model, x):
  """Flax's documented linen pattern: shardings from the abstract init, then a jitted init."""
  key = jax.random.key(0)
  abstract = jax.eval_shape(model.init, key, x)
  return abstract, jax.jit(model.init, out_shardings=nn.get_sharding(abstract, mesh))(key, x)


def flax_init_in_own_layout(kwargs, cls):
  """What ``ramp`` gives at Flax's kernel shape, converted to the module's convention."""
  flax_kernel = np.asarray(ramp(None, (3, 3, 4, 6)))  # (in 4, features 6): the same both ways
  return fc.convert_kernel(
    flax_kernel, "flax", kwargs["convention"], transposed=cls == "ConvTranspose"
  )


def reference(kwargs, transposed, x, kernel, bias):
  """A module's output from its weights, unsharded: a raw lax conv, or flipconv's adjoint
  (checked against lax and PyTorch in test_transpose.py / test_against_torch_transpose.py)."""
  conv = fc.get_convention(kwargs["convention"])
  k, strides = np.asarray(kernel), kwargs.get("strides", 1)
  if transposed:
    y = fc.conv_transpose(x, k, convention=conv, padding="SAME", strides=strides)
  else:
    y = lax_conv(
      x,
      k,
      flip=conv.flip,
      layout=conv.layout,
      kernel_layout=conv.kernel_layout,
      strides=strides,
      padding="SAME",
    )
  return np.asarray(y) + np.asarray(bias).reshape([-1 if c == "C" else 1 for c in conv.layout])


@pytest.mark.parametrize("cls,kwargs,names,layout,kernel_shape", LINEN_CASES)
def test_linen_with_partitioning_shards_the_kernel_as_named(
  mesh, cls, kwargs, names, layout, kernel_shape
):
  model = getattr(fc.linen, cls)(6, (3, 3), kernel_init=nn.with_partitioning(ramp, names), **kwargs)
  x_np = rand(shape_of(layout, N=8, C=4, H=10, W=10), 30)
  abstract, variables = _linen_sharded_init(mesh, model, x_np)
  assert nn.get_partition_spec(abstract)["params"]["kernel"] == P(*names)
  box = variables["params"]["kernel"]
  assert isinstance(box, nn.Partitioned) and box.names == names
  kernel = box.value
  assert kernel.shape == kernel_shape
  np.testing.assert_array_equal(np.asarray(kernel), flax_init_in_own_layout(kwargs, cls))
  assert_sharded_like(kernel, mesh, P(*names))
  assert all(s.data.size * 2 == kernel.size for s in kernel.addressable_shards)

  # Forward: batch-sharded x, kernel sharded on the output channels -> no collective.
  x = place(mesh, x_np, layout, N="data")
  out, found, _ = run_compiled(jax.jit(model.apply), variables, x)
  assert found == []
  assert_sharded_like(out, mesh, spec_of(layout, N="data", C="model"))
  ref = reference(kwargs, cls == "ConvTranspose", x_np, kernel, variables["params"]["bias"])
  np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5, atol=1e-5)


# Flax's default kernel init once (a random init compiles for seconds per model on CPU).
EQUAL_CASES = [("Conv", nn.initializers.lecun_normal()), ("ConvTranspose", ramp)]


@pytest.mark.parametrize("cls,init", EQUAL_CASES, ids=[c[0] for c in EQUAL_CASES])
def test_linen_flax_convention_equals_flax_linen_under_the_same_sharding(mesh, cls, init):
  names = (None, None, None, "model")
  kw = dict(
    kernel_init=nn.with_partitioning(init, names),
    bias_init=nn.with_partitioning(nn.initializers.zeros_init(), ("model",)),
  )
  if cls == "ConvTranspose":
    kw["strides"] = 2
  ours, theirs = getattr(fc.linen, cls)(6, (3, 3), **kw), getattr(nn, cls)(6, (3, 3), **kw)
  x_np = rand((8, 10, 10, 4), 31)
  abstract_a, var_a = _linen_sharded_init(mesh, ours, x_np)
  abstract_b, var_b = _linen_sharded_init(mesh, theirs, x_np)
  assert jax.tree.structure(abstract_a) == jax.tree.structure(abstract_b)
  assert nn.get_partition_spec(abstract_a) == nn.get_partition_spec(abstract_b)
  for name in ("kernel", "bias"):
    a, b = var_a["params"][name].value, var_b["params"][name].value
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert a.sharding.is_equivalent_to(b.sharding, a.ndim), (name, a.sharding, b.sharding)
  x = place(mesh, x_np, "NHWC", N="data")
  out_a, found_a, _ = run_compiled(jax.jit(ours.apply), var_a, x)
  out_b, found_b, _ = run_compiled(jax.jit(theirs.apply), var_b, x)
  assert found_a == found_b == []
  assert out_a.sharding.is_equivalent_to(out_b.sharding, out_a.ndim)
  assert_sharded_like(out_a, mesh, P("data", None, None, "model"))
  np.testing.assert_allclose(np.asarray(out_a), np.asarray(out_b), rtol=1e-6, atol=1e-6)


def test_linen_logical_partitioning_names_the_own_layout(mesh):
  rules = (("out_channels", "model"), ("in_channels", None))
  model = fc.linen.Conv(
    6,
    (3, 3),
    convention="pytorch",
    kernel_init=nn.with_logical_partitioning(ramp, ("out_channels", "in_channels", None, None)),
  )
  x_np = rand((8, 4, 10, 10), 32)
  abstract = jax.eval_shape(model.init, jax.random.key(0), x_np)
  shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh, rules)
  variables = jax.jit(model.init, out_shardings=shardings)(jax.random.key(0), x_np)
  assert_sharded_like(variables["params"]["kernel"].value, mesh, P("model", None, None, None))


# ----------------------------------------------------------------------------
# flipconv.nnx: nnx.with_partitioning and kernel_metadata
# ----------------------------------------------------------------------------

NNX_CASES = [
  # id, module, kwargs (no sharding), how the sharding is given, names, x layout
  (
    "conv-pytorch-with_partitioning",
    "Conv",
    dict(convention="pytorch"),
    "init",
    ("model", None, None, None),
    "NCHW",
  ),
  (
    "conv-lasagne-out_sharding",
    "Conv",
    dict(convention="lasagne"),
    "out_sharding",
    ("model", None, None, None),
    "NCHW",
  ),
  # Flax 0.12 still takes the old key, remapped to out_sharding with a DeprecationWarning.
  (
    "conv-pytorch-sharding",
    "Conv",
    dict(convention="pytorch"),
    "sharding",
    ("model", None, None, None),
    "NCHW",
  ),
  (
    "convT-pytorch-partitionspec",
    "ConvTranspose",
    dict(convention="pytorch", strides=2),
    "pspec",
    (None, "model", None, None),
    "NCHW",
  ),
]


def _nnx_sharding_kwargs(how, names):
  """The ways Flax 0.12's nnx.Conv takes a kernel's sharding."""
  if how == "init":
    return dict(kernel_init=nnx.with_partitioning(ramp, names))
  if how == "pspec":
    return dict(kernel_init=nnx.with_partitioning(ramp, P(*names)))
  return dict(kernel_init=ramp, kernel_metadata={how: names})


def _nnx_sharded_create(mesh, build):
  """Flax's documented nnx pattern: build under jit and a mesh, constrain the state to its specs."""

  @nnx.jit
  def create():
    model = build()
    state = nnx.state(model)
    nnx.update(model, lax.with_sharding_constraint(state, nnx.get_partition_spec(state)))
    return model

  with jax.set_mesh(mesh):
    return create()


def _nnx_forward(model, x):
  graphdef, state = nnx.split(model)
  return run_compiled(jax.jit(lambda state, x: nnx.merge(graphdef, state)(x)), state, x)


@pytest.mark.parametrize(
  "cls,kwargs,how,names,layout", [c[1:] for c in NNX_CASES], ids=[c[0] for c in NNX_CASES]
)
def test_nnx_sharded_init_shards_the_kernel_as_named(mesh, cls, kwargs, how, names, layout):
  def build():
    return getattr(fc.nnx, cls)(
      4, 6, (3, 3), rngs=nnx.Rngs(0), **kwargs, **_nnx_sharding_kwargs(how, names)
    )

  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", DeprecationWarning)
    model = _nnx_sharded_create(mesh, build)
  if how == "sharding":
    assert any("out_sharding" in str(w.message) for w in caught)
  specs = nnx.get_partition_spec(nnx.state(model))
  assert specs["kernel"].get_value() == P(*names)
  assert specs["bias"].get_value() == P()
  kernel = model.kernel.get_value()
  np.testing.assert_array_equal(np.asarray(kernel), flax_init_in_own_layout(kwargs, cls))
  assert_sharded_like(kernel, mesh, P(*names))
  assert all(s.data.size * 2 == kernel.size for s in kernel.addressable_shards)

  # Forward: batch-sharded x -> no collective, output sharded (data, model).
  x_np = rand(shape_of(layout, N=8, C=4, H=10, W=10), 33)
  out, found, _ = _nnx_forward(model, place(mesh, x_np, layout, N="data"))
  assert found == []
  assert_sharded_like(out, mesh, spec_of(layout, N="data", C="model"))
  ref = reference(kwargs, cls == "ConvTranspose", x_np, kernel, model.bias.get_value())
  np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5, atol=1e-5)


def test_nnx_abstract_model_carries_the_named_sharding(mesh):
  names = ("model", None, None, None)
  _, abstract = nnx.get_abstract_model(
    lambda: fc.nnx.Conv(
      4, 6, (3, 3), convention="pytorch", rngs=nnx.Rngs(0), kernel_metadata={"out_sharding": names}
    ),
    mesh,
  )
  kernel = abstract["kernel"].get_value()
  assert kernel.shape == (6, 4, 3, 3)
  assert kernel.sharding.is_equivalent_to(NamedSharding(mesh, P(*names)), 4)


@pytest.mark.parametrize("cls", ["Conv", "ConvTranspose"])
def test_nnx_flax_convention_equals_flax_nnx_under_the_same_sharding(mesh, cls):
  names = (None, None, None, "model")
  kw = dict(
    kernel_init=nnx.with_partitioning(ramp, names),
    bias_metadata={"out_sharding": ("model",)},
    strides=2 if cls == "ConvTranspose" else 1,
  )
  ours = _nnx_sharded_create(
    mesh, lambda: getattr(fc.nnx, cls)(4, 6, (3, 3), rngs=nnx.Rngs(0), **kw)
  )
  theirs = _nnx_sharded_create(
    mesh, lambda: getattr(nnx, cls)(4, 6, (3, 3), rngs=nnx.Rngs(0), **kw)
  )
  for name in ("kernel", "bias"):
    a, b = getattr(ours, name), getattr(theirs, name)
    assert nnx.get_partition_spec(a).get_value() == nnx.get_partition_spec(b).get_value()
    a, b = a.get_value(), b.get_value()
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert a.sharding.is_equivalent_to(b.sharding, a.ndim), (name, a.sharding, b.sharding)
  x = place(mesh, rand((8, 10, 10, 4), 34), "NHWC", N="data")
  out_a, found_a, _ = _nnx_forward(ours, x)
  out_b, found_b, _ = _nnx_forward(theirs, x)
  assert found_a == found_b == []
  assert_sharded_like(out_a, mesh, P("data", None, None, "model"))
  np.testing.assert_allclose(np.asarray(out_a), np.asarray(out_b), rtol=1e-6, atol=1e-6)
