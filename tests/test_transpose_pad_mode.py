"""``fc.conv_transpose(..., pad_mode=...)``: the adjoint of the padded ``fc.conv``, and the
modules' ``padding="CIRCULAR"``.

References, none of them flipconv's transposed conv: ``jax.linear_transpose`` of the
forward ``fc.conv`` (JAX's transpose rules of ``jnp.pad`` and the conv), the
inner-product identity ``<conv(x), y> == <x, conv_transpose(y)>``,
``flax.linen.ConvTranspose`` / ``flax.nnx.ConvTranspose`` with ``padding="CIRCULAR"``,
``jax.linear_transpose`` of ``flax.linen.Conv(padding="CIRCULAR")`` and Equinox's
``ConvTranspose(padding_mode="CIRCULAR")``.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flipconv as fc
from _reference import NUMPY_PAD_MODE

MODES = ("reflect", "replicate", "circular", "symmetric")
ALIASES = {"edge": "replicate", "wrap": "circular"}
# (data layout, kernel layout) per rank: channels-last, channels-first, unbatched, odd orders.
LAYOUTS = {
  1: [("NWC", "WIO"), ("NCW", "OIW"), ("CW", "WIO"), ("WNC", "IWO")],
  2: [("NHWC", "HWIO"), ("NCHW", "OIHW"), ("NWHC", "WHOI"), ("HWCN", "OHWI")],
  3: [("NDHWC", "DHWIO"), ("NCDHW", "OIDHW")],
}
KEY = jax.random.key(0)
pytestmark = pytest.mark.usefixtures("cheap_compiles")  # tests/conftest.py


def normal(shape, seed=0, dtype=np.float64):
  return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def assert_same_inner_product(a, b, c, d, tol):
  """<a, b> == <c, d> up to tol relative to the norms (the sums cancel)."""
  a, b, c, d = (np.asarray(v, np.float64) for v in (a, b, c, d))
  scale = np.linalg.norm(a) * np.linalg.norm(b) + np.linalg.norm(c) * np.linalg.norm(d)
  assert abs(np.vdot(a, b) - np.vdot(c, d)) <= tol * scale, (np.vdot(a, b), np.vdot(c, d))


def linear_transpose(forward, x_like, y):
  (out,) = jax.linear_transpose(forward, jax.ShapeDtypeStruct(x_like.shape, x_like.dtype))(y)
  return out


# --- the fold: the linear transpose of the padding ----------------------------------------


@settings(max_examples=30)
@given(
  mode=st.sampled_from(MODES),
  sizes=st.lists(st.integers(1, 5), min_size=1, max_size=2),
  pads=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7)), min_size=2, max_size=2),
  integer=st.booleans(),
  seed=st.integers(0, 2**16),
)
def test_fold_is_the_linear_transpose_of_the_padding(mode, sizes, pads, integer, seed):
  """Also where jnp.pad wraps or reflects more than once (wider than the input), and for ints."""
  from flipconv import _padding

  pads = tuple(pads[: len(sizes)])
  axes = tuple(range(1, len(sizes) + 1))
  dtype = np.int32 if integer else np.float32
  shape = (2, *sizes, 3)
  pad = lambda x: _padding.apply_pad_mode(x, mode, pads, axes)
  padded = jax.eval_shape(pad, jax.ShapeDtypeStruct(shape, dtype))  # any width, any size
  z = np.random.default_rng(seed).integers(-9, 10, padded.shape).astype(dtype)
  (want,) = jax.linear_transpose(pad, jax.ShapeDtypeStruct(shape, dtype))(z)
  got = _padding.fold_pad_mode(jnp.asarray(z), mode=mode, pads=pads, axes=axes)
  assert got.dtype == want.dtype
  np.testing.assert_array_equal(got, want)


# --- the property: conv_transpose == linear_transpose(conv) -------------------------------


def per_dim(n, lo, hi):
  return st.one_of(st.integers(lo, hi), st.tuples(*[st.integers(lo, hi)] * n))


def as_tuple(value, n):
  return (value,) * n if isinstance(value, int) else tuple(value)


@st.composite
def cases(draw):
  n = draw(st.integers(1, 3))
  layout, kernel_layout = draw(st.sampled_from(LAYOUTS[n]))
  order = "".join(c for c in kernel_layout if c not in "OI")
  ks = draw(st.tuples(*[st.integers(1, 3 if n < 3 else 2)] * n))
  strides, dilation = draw(per_dim(n, 1, 3)), draw(per_dim(n, 1, 2))
  small = st.integers(0, 2)
  padding = draw(
    st.one_of(
      st.sampled_from(["VALID", "SAME", "SAME_LOWER", "FULL", "HALF", "CAUSAL"]),
      small,
      st.lists(small, min_size=n, max_size=n),
      st.lists(st.tuples(small, small), min_size=n, max_size=n),
    )
  )
  k_eff = [(k - 1) * d + 1 for k, d in zip(ks, as_tuple(dilation, n), strict=True)]
  # At least every pad + 1 (FULL pads k_eff - 1), so that every mode fits; some larger.
  sizes = tuple(
    max(k, 3) + draw(st.integers(0, 2 * s))
    for k, s in zip(k_eff, as_tuple(strides, n), strict=True)
  )
  groups = draw(st.sampled_from([1, 2]))
  out_layout = None
  if "N" in layout and draw(st.booleans()):  # the adjoint swaps layout and out_layout
    out_layout = "NC" + "".join(c for c in layout if c not in "NC")
  mode = draw(st.sampled_from([*MODES, *ALIASES, "zeros"]))
  return dict(
    kw=dict(
      flip=draw(st.booleans()),
      strides=strides,
      padding=padding,
      dilation=dilation,
      groups=groups,
      kernel_layout=kernel_layout,
      pad_mode=mode,
    ),
    layout=layout,
    out_layout=out_layout,
    order=order,
    ks=ks,
    sizes=sizes,
    i_per=draw(st.integers(1, 2)),
    o_per=draw(st.integers(1, 2)),
    batch=draw(st.integers(1, 2)),
    size_by=draw(st.sampled_from(["output_shape", "output_padding", "default"])),
    seed=draw(st.integers(0, 2**16)),
  )


def laid_out(layout, order, sizes, **named):
  dims = {**dict(zip(order, sizes, strict=True)), **named}
  return tuple(dims[c] for c in layout)


@settings(max_examples=40)
@given(cases())
def test_conv_transpose_is_the_linear_transpose_of_the_padded_conv(case):
  kw, layout, order = case["kw"], case["layout"], case["order"]
  out_layout = case["out_layout"] or layout
  n, groups = len(order), kw["groups"]
  strides = as_tuple(kw["strides"], n)
  # XLA:CPU aborts on some float64 grouped convs with lhs dilation (see test_transpose.py).
  wide = not (groups > 1 and any(s > 1 for s in strides))
  dtype, tol = (np.float64, 1e-10) if wide else (np.float32, 2e-5)
  c_in, c_out = case["i_per"] * groups, case["o_per"] * groups
  kernel = normal(
    laid_out(kw["kernel_layout"], order, case["ks"], O=c_out, I=case["i_per"]), case["seed"], dtype
  )
  fwd_kw = dict(kw, layout=layout, out_layout=case["out_layout"])
  t_kw = dict(kw, layout=out_layout, out_layout=layout)
  with jax.enable_x64(True):
    x = normal(laid_out(layout, order, case["sizes"], N=case["batch"], C=c_in), 1, dtype)
    y_shape = jax.eval_shape(lambda x: fc.conv(x, kernel, **fwd_kw), x).shape
    y = normal(y_shape, 2, dtype)
    m = [y_shape[out_layout.index(c)] for c in order]
    if case["size_by"] == "output_shape":
      size_kw = dict(output_shape=case["sizes"])
    elif case["size_by"] == "output_padding":  # over the size with no output_padding
      base = jax.eval_shape(lambda y: fc.conv_transpose(y, kernel, **t_kw, output_padding=0), y)
      smallest = [base.shape[layout.index(c)] for c in order]
      size_kw = dict(
        output_padding=tuple(a - b for a, b in zip(case["sizes"], smallest, strict=True))
      )
    else:  # the default size: any pad mode fits it (pads wider than the input wrap again)
      zeros = dict(t_kw, pad_mode="zeros")
      x = normal(jax.eval_shape(lambda y: fc.conv_transpose(y, kernel, **zeros), y).shape, 1, dtype)
      size_kw = {}

    @jax.jit
    def run(x, y):
      forward = lambda x: fc.conv(x, kernel, **fwd_kw)
      (lt,) = jax.linear_transpose(forward, x)(y)
      return forward(x), fc.conv_transpose(y, kernel, **t_kw, **size_kw), lt

    fwd, ct, lt = run(x, y)
  assert [fwd.shape[out_layout.index(c)] for c in order] == m
  assert ct.shape == x.shape and ct.dtype == dtype
  np.testing.assert_allclose(ct, lt, rtol=tol, atol=tol)
  assert_same_inner_product(fwd, y, x, ct, tol)


# --- the inner-product identity in float32 and float64, and gradients ----------------------

IDENTITY_CASES = {  # every dimension padded on both sides, with different amounts
  "2d-stride-dilation": dict(
    strides=(2, 1), dilation=(1, 2), padding=((2, 1), (1, 2)), groups=1, x=(2, 3, 9, 8), k=(4, 3)
  ),
  "2d-groups-same": dict(strides=1, dilation=1, padding="SAME", groups=2, x=(1, 4, 7, 6), k=(4, 4)),
  "1d-stride3": dict(strides=3, dilation=1, padding=2, groups=1, x=(2, 2, 11), k=(5,)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(IDENTITY_CASES))
def test_inner_product_identity(name, mode, dtype):
  case = IDENTITY_CASES[name]
  n = len(case["k"])
  layout, kernel_layout = ("NCHW", "OIHW") if n == 2 else ("NCW", "OIW")
  c_in = case["x"][1]
  kw = dict(
    flip=mode in ("reflect", "circular"),
    strides=case["strides"],
    dilation=case["dilation"],
    padding=case["padding"],
    groups=case["groups"],
    layout=layout,
    kernel_layout=kernel_layout,
    pad_mode=mode,
  )
  with jax.enable_x64(True):
    kernel = normal((6, c_in // case["groups"], *case["k"]), 3, dtype)
    x = normal(case["x"], 4, dtype)
    fwd = fc.conv(x, kernel, **kw)
    y = normal(fwd.shape, 5, dtype)
    ct = fc.conv_transpose(y, kernel, **kw, output_shape=case["x"][2:])
  assert ct.dtype == dtype and ct.shape == x.shape
  assert_same_inner_product(fwd, y, x, ct, 1e-6 if dtype == np.float32 else 1e-13)


@pytest.mark.parametrize("mode", ["zeros", *MODES])
def test_gradients_equal_those_of_the_linear_transpose(mode):
  kw = dict(flip=True, strides=(2, 1), padding=((2, 1), (1, 1)), dilation=(1, 2), pad_mode=mode)
  with jax.enable_x64(True):
    x_like = jnp.zeros((2, 7, 8, 3))
    kernel = jnp.asarray(normal((3, 2, 3, 4), 6))
    y = jnp.asarray(normal(jax.eval_shape(lambda x: fc.conv(x, kernel, **kw), x_like).shape, 7))
    w = jnp.asarray(normal(x_like.shape, 8))

    def ours(y, k):
      return jnp.sum(w * jnp.sin(fc.conv_transpose(y, k, **kw, output_shape=(7, 8))))

    def reference(y, k):
      return jnp.sum(w * jnp.sin(linear_transpose(lambda x: fc.conv(x, k, **kw), x_like, y)))

    got = jax.grad(ours, argnums=(0, 1))(y, kernel)
    want = jax.grad(reference, argnums=(0, 1))(y, kernel)
  for g, r in zip(got, want, strict=True):
    np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", ["fft", "auto"])
def test_fft_and_auto_equal_the_linear_transpose(method, mode):
  with jax.enable_x64(True):
    for kw, x_like, k in (
      (dict(strides=1, padding="SAME"), jnp.zeros((1, 40, 2)), normal((17, 2, 3), 9)),
      (dict(strides=2, padding=(2, 1)), jnp.zeros((2, 9, 8, 2)), normal((5, 4, 2, 3), 10)),
    ):
      kw = dict(kw, flip=False, pad_mode=mode)
      forward = functools.partial(fc.conv, kernel=k, **kw)
      y = normal(jax.eval_shape(forward, x_like).shape, 11)
      got = fc.conv_transpose(y, k, **kw, method=method, output_shape=x_like.shape[1:-1])
      want = linear_transpose(forward, x_like, y)
      np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_zeros_and_unpadded_modes_add_nothing_to_the_program():
  """pad_mode="zeros" (or an alias) is today's program; a mode without padding folds nothing."""
  y, k = jnp.ones((2, 4, 4, 3)), jnp.ones((3, 3, 2, 3))
  base = dict(flip=False, strides=2)

  def program(**kw):
    return str(jax.make_jaxpr(lambda y, k: fc.conv_transpose(y, k, **base, **kw))(y, k))

  same = program(padding="SAME")
  assert program(padding="SAME", pad_mode="zeros") == same
  assert program(padding="SAME", pad_mode="constant") == same
  assert program(padding="VALID", pad_mode="reflect") == program(padding="VALID")
  assert "pad" not in program(padding="VALID", pad_mode="circular").replace("padding", "")
  folded = program(padding="SAME", pad_mode="circular")
  assert folded.count("conv_general_dilated") == 1 and folded != same


# --- errors, as in fc.conv -----------------------------------------------------------------


@pytest.mark.parametrize(
  ("mode", "size", "padding"),
  [("reflect", 4, 4), ("reflect", 3, (1, 3)), ("symmetric", 3, 4), ("circular", 2, (3, 0))],
)
def test_a_padding_as_wide_as_the_input_or_wider_is_the_adjoint_of_fc_conv(mode, size, padding):
  """fc.conv wraps or reflects again where the pad is wider than the input (as np.pad does);
  conv_transpose with the same arguments is its adjoint there too."""
  k = np.ones((5, 1, 1))
  pads = (padding,) if isinstance(padding, tuple) else padding
  x_like = jnp.zeros((1, size, 1))
  fwd = lambda x: fc.conv(x, k, flip=False, padding=pads, pad_mode=mode)
  x = normal((1, size, 1), 21, np.float32)
  padded = np.pad(x[0, :, 0], np.broadcast_to(padding, 2), mode=NUMPY_PAD_MODE[mode])
  np.testing.assert_allclose(fwd(x)[0, :, 0], np.convolve(padded, np.ones(5), "valid"), rtol=1e-5)
  y = normal(jax.eval_shape(fwd, x_like).shape, 12, np.float32)
  got = fc.conv_transpose(y, k, flip=False, padding=pads, pad_mode=mode, output_shape=size)
  np.testing.assert_allclose(got, linear_transpose(fwd, x_like, y), rtol=1e-5, atol=1e-5)


def test_bad_pad_mode_names_the_argument():
  y, k = np.ones((1, 4, 1)), np.ones((3, 1, 1))
  with pytest.raises(ValueError, match=r"pad_mode 'mirror'.*reflect"):
    fc.conv_transpose(y, k, flip=False, padding=1, pad_mode="mirror")
  with pytest.raises(TypeError, match="pad_mode must be a string"):
    fc.conv_transpose(y, k, flip=False, padding=1, pad_mode=None)


# --- the modules against Flax ---------------------------------------------------------------

FLAX_CASES = [  # input spatial, kernel_size, strides, kernel_dilation
  pytest.param((5,), (4,), 1, 1, id="1d-even-s1"),
  pytest.param((5,), (3,), 2, 1, id="1d-odd-s2"),
  pytest.param((4,), (2,), 3, 1, id="1d-kernel-below-stride"),
  pytest.param((4, 3), (4, 3), (2, 1), 1, id="2d-even-strides"),
  pytest.param((4, 5), (2, 3), (1, 3), (2, 1), id="2d-dilated"),
  pytest.param((3, 2, 3), (2, 3, 2), 2, 1, id="3d"),
  pytest.param((2,), (6,), 1, 1, id="1d-kernel-wider-than-the-output"),
]


def check(got, want):
  """Flax's output; also where the circular pad is wider than the input (it wraps again)."""
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("transpose_kernel", [False, True], ids=["flax-kernel", "transposed"])
@pytest.mark.parametrize(("spatial", "kernel_size", "strides", "dilation"), FLAX_CASES)
def test_linen_circular_is_flax_linens(spatial, kernel_size, strides, dilation, transpose_kernel):
  flax_nn = pytest.importorskip("flax.linen")
  kw = dict(
    features=3,
    kernel_size=kernel_size,
    strides=strides,
    kernel_dilation=dilation,
    padding="CIRCULAR",
    transpose_kernel=transpose_kernel,
  )
  x = jnp.asarray(normal((2, *spatial, 2), 13, np.float32))
  ref = flax_nn.ConvTranspose(**kw)
  params = ref.init(KEY, x)
  params = jax.tree.map(lambda p: jnp.asarray(normal(p.shape, 14, np.float32)), params)
  want = ref.apply(params, x)
  ours = fc.linen.ConvTranspose(**kw)
  check(ours.apply(params, x), want)


@pytest.mark.parametrize("transpose_kernel", [False, True], ids=["flax-kernel", "transposed"])
@pytest.mark.parametrize(("spatial", "kernel_size", "strides", "dilation"), FLAX_CASES[::2])
def test_nnx_circular_is_flax_nnxs(spatial, kernel_size, strides, dilation, transpose_kernel):
  nnx = pytest.importorskip("flax.nnx")
  kw = dict(
    kernel_size=kernel_size,
    strides=strides,
    kernel_dilation=dilation,
    padding="CIRCULAR",
    transpose_kernel=transpose_kernel,
  )
  ref = nnx.ConvTranspose(2, 3, **kw, rngs=nnx.Rngs(0))
  ref.bias[...] = jnp.asarray(normal(ref.bias[...].shape, 15, np.float32))
  ours = fc.nnx.ConvTranspose(2, 3, **kw, rngs=nnx.Rngs(1))
  ours.kernel[...], ours.bias[...] = ref.kernel[...], ref.bias[...]
  x = jnp.asarray(normal((2, *spatial, 2), 16, np.float32))
  check(ours(x), ref(x))


ROLL_CASES = [  # kernel size, stride: Flax's CIRCULAR vs the adjoint of Flax's circular Conv
  (4, 1),  # rolled by -1
  (3, 1),
  (4, 2),
  (5, 2),
  (5, 3),  # rolled by 1
  (2, 3),
]


@pytest.mark.parametrize(("k", "s"), ROLL_CASES)
def test_flax_circular_is_the_adjoint_of_flax_conv_rolled_as_documented(k, s):
  """The docstring's claim, with flax.linen.Conv(padding="CIRCULAR") and Flax's ConvTranspose."""
  flax_nn = pytest.importorskip("flax.linen")
  m = 4
  x = jnp.asarray(normal((1, m, 2), 17, np.float32))
  kernel = jnp.asarray(normal((k, 3, 2), 18, np.float32))  # the forward conv's WIO, 3 -> 2
  params = {"params": {"kernel": kernel}}
  conv = flax_nn.Conv(2, (k,), strides=s, padding="CIRCULAR", use_bias=False)
  adjoint = linear_transpose(lambda z: conv.apply(params, z), jnp.zeros((1, m * s, 3)), x)
  kw = dict(features=3, kernel_size=(k,), strides=s, use_bias=False, transpose_kernel=True)
  flax_t = flax_nn.ConvTranspose(padding="CIRCULAR", **kw).apply(params, x)
  shift = (k - 1) // 2 - math.ceil(max(k - s, 0) / 2)
  np.testing.assert_allclose(flax_t, jnp.roll(adjoint, shift, axis=1), rtol=1e-5, atol=1e-5)
  assert (shift == 0) == np.allclose(flax_t, adjoint, atol=1e-5)
  ours = fc.linen.ConvTranspose(padding="CIRCULAR", **kw).apply(params, x)
  np.testing.assert_allclose(ours, flax_t, rtol=1e-5, atol=1e-5)
  # Both are available: pad_mode="circular" asks for the exact adjoint of that Conv.
  exact = fc.linen.ConvTranspose(padding="CIRCULAR", pad_mode="circular", **kw).apply(params, x)
  np.testing.assert_allclose(exact, adjoint, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("padding", ["CIRCULAR", "REFLECT"])
@pytest.mark.parametrize("convention", ["pytorch", "lasagne"])
def test_other_conventions_are_the_adjoint_of_their_conv(convention, padding):
  """fc.linen.ConvTranspose(padding=P) is the adjoint of fc.linen.Conv(padding=P), same kernel."""
  conv_kw = dict(features=2, kernel_size=(4, 3), strides=(2, 1), padding=padding, use_bias=False)
  x_like = jnp.zeros((1, 3, 8, 5))
  conv = fc.linen.Conv(convention=convention, **conv_kw)
  params = conv.init(KEY, x_like)
  y = jnp.asarray(normal((1, 2, 4, 5), 19, np.float32))
  adjoint = linear_transpose(lambda z: conv.apply(params, z), x_like, y)
  t_kw = dict(conv_kw, features=3)
  got = fc.linen.ConvTranspose(convention=convention, **t_kw).apply(params, y)
  np.testing.assert_allclose(got, adjoint, rtol=1e-5, atol=1e-5)
  mode = padding.lower()  # and the numeric padding with pad_mode: the same layer
  pads = ((1, 2), (1, 1))
  conv = fc.linen.Conv(convention=convention, **dict(conv_kw, padding=pads), pad_mode=mode)
  adjoint = linear_transpose(lambda z: conv.apply(params, z), x_like, y)
  layer = fc.linen.ConvTranspose(
    convention=convention, **dict(t_kw, padding=pads), pad_mode=mode, output_padding=(1, 0)
  )
  np.testing.assert_allclose(layer.apply(params, y), adjoint, rtol=1e-5, atol=1e-5)


# --- Equinox --------------------------------------------------------------------------------


@pytest.mark.parametrize("padding", ["SAME", "SAME_LOWER"])
@pytest.mark.parametrize(
  ("spatial", "kernel_size", "stride", "dilation"),
  [((7,), (4,), 1, 1), ((5,), (3,), 2, 1), ((4, 3), (4, 3), (2, 1), (1, 2)), ((3, 2, 2), 2, 2, 1)],
)
def test_equinox_circular_conv_transpose(spatial, kernel_size, stride, dilation, padding):
  """eqx.nn.ConvTranspose(padding_mode="CIRCULAR"): the same adjoint.

  Equinox 0.13.8 takes CIRCULAR only with padding SAME or SAME_LOWER and
  output_padding 0; it pads its input periodically (by the transposed padding over
  the stride) before the stride-dilated conv, which is the adjoint of the circular
  conv with that padding on an input of size in * stride.
  """
  eqx = pytest.importorskip("equinox")
  n = len(spatial)
  layer = eqx.nn.ConvTranspose(
    n,
    2,
    3,
    kernel_size,
    stride=stride,
    padding=padding,
    dilation=dilation,
    padding_mode="CIRCULAR",
    use_bias=False,
    key=KEY,
  )
  x = jnp.asarray(normal((2, *spatial), 20, np.float32))
  got = fc.conv_transpose(
    x,
    layer.weight,
    convention="equinox",
    strides=stride,
    padding=padding,
    dilation=dilation,
    pad_mode="circular",
  )
  np.testing.assert_allclose(got, layer(x), rtol=1e-5, atol=1e-5)
