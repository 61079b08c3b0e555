"""``method="fft"`` and ``method="auto"``: the direct method's convolution, through FFTs.

References, none of them flipconv's FFT path: ``lax.conv_general_dilated``
called directly (for the drop-in ``conv_general_dilated_fft``), ``fc.conv`` /
``fc.conv_transpose`` with ``method="direct"`` (one ``lax.conv_general_dilated``
call), ``scipy.signal.fftconvolve`` and ``scipy.signal.convolve`` for
single-channel true convolution, float64 results (x64) for the float32
error, and brute-force checks of the FFT length rule.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

import flipconv as fc
from flipconv import _auto, _fft

scipy_signal = pytest.importorskip("scipy.signal")

LAYOUTS = {
  1: [("NWC", "WIO"), ("NCW", "OIW"), ("CW", "WIO"), ("WNC", "IWO")],
  2: [("NHWC", "HWIO"), ("NCHW", "OIHW"), ("NWHC", "WHOI"), ("HWCN", "OHWI")],
  3: [("NDHWC", "DHWIO"), ("NCDHW", "OIDHW")],
}
MAX_SIZE = {1: 40, 2: 12, 3: 6}
PADDING_NAMES = ("VALID", "SAME", "SAME_LOWER", "FULL", "HALF", "CAUSAL")
PAD_MODES = ("reflect", "replicate", "circular", "symmetric")


def rel_err(got, ref, scale: float = 0.0) -> float:
  """``max|got - ref| / max|ref|``: FFT rounding is spread evenly over the output.

  ``scale`` (e.g. ``max|x| * max|k|``) stands in for ``max|ref|`` where the
  output is all (or almost all) zero padding.
  """
  got, ref = np.asarray(got, np.complex128), np.asarray(ref, np.complex128)
  assert got.shape == ref.shape, (got.shape, ref.shape)
  if got.size == 0:
    return 0.0
  return float(np.abs(got - ref).max() / max(np.abs(ref).max(), scale, 1e-30))


def tolerance(dtype, terms: int) -> float:
  """A few rounding errors of ``dtype`` per level of a sum of ``terms`` products."""
  eps = float(jnp.finfo(jnp.dtype(dtype)).eps)
  return 16 * eps * math.log2(2 + terms)


def random(rng: np.random.Generator, shape, dtype) -> np.ndarray:
  a = rng.standard_normal(shape)
  if jnp.issubdtype(dtype, jnp.complexfloating):
    a = a + 1j * rng.standard_normal(shape)
  return np.asarray(jnp.asarray(a, dtype))


def shape_of(layout: str, sizes: dict[str, int]) -> tuple[int, ...]:
  return tuple(sizes[c] for c in layout)


# --- the FFT length rule ----------------------------------------------------------------


def smooth7(m: int) -> bool:
  for p in (2, 3, 5, 7):
    while m % p == 0:
      m //= p
  return m == 1


def test_fast_length_is_the_smallest_7_smooth_length_at_least_n():
  for n in [*range(1, 2200), 65536 + 8191, 16384 + 1023, 1_000_003]:
    m = _fft.fast_length(n)
    assert m >= n and smooth7(m), n
    if n < 2200:
      assert not any(smooth7(v) for v in range(n, m)), n


def test_full_convolution_needs_no_fft_length_for_its_padding():
  # 65,536 samples * 8,192 taps "FULL": n >= 65536 + 8191, not 65536 + 2 * 8191.
  p = _fft.plan(
    (1, 1, 65536), (1, 1, 8192), window_strides=(1,), padding=[(8191, 8191)], block_lengths=(0,)
  )
  assert p.lengths == (73728,) and p.out == (65536 + 8191,)


# --- the drop-in: conv_general_dilated_fft == lax.conv_general_dilated -----------------------


@st.composite
def lax_args(draw):
  n = draw(st.integers(1, 3))
  lhs, rhs, out = (
    "".join(draw(st.permutations(letters + "DHW"[3 - n :]))) for letters in ("NC", "OI", "NC")
  )
  spatial = "".join(c for c in rhs if c not in "OI")  # lax's order for per-dimension arguments
  groups = draw(st.integers(1, 3))
  c_in, c_out = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 2))
  sizes, taps, strides, pads, in_dil, k_dil = {}, {}, [], [], [], []
  for c in spatial:
    sizes[c] = draw(st.integers(1, MAX_SIZE[n]))
    taps[c] = draw(st.integers(1, 6 if n == 1 else 3))
    in_dil.append(draw(st.integers(1, 3)))
    k_dil.append(draw(st.integers(1, 3)))
    strides.append(draw(st.integers(1, 3)))
    extent = (sizes[c] - 1) * in_dil[-1] + 1
    k_eff = (taps[c] - 1) * k_dil[-1] + 1
    lo = draw(st.integers(-(extent // 2), 2 * k_eff))  # negative: cropping (conv_transpose)
    hi = draw(st.integers(max(k_eff - extent - lo, -(extent // 2)), 2 * k_eff))
    pads.append((lo, hi))
  batch = draw(st.integers(1, 2))
  lhs_shape = shape_of(lhs, {"N": batch, "C": c_in, **sizes})
  rhs_shape = shape_of(rhs, {"O": c_out, "I": c_in // groups, **taps})
  blocks = draw(
    st.one_of(st.none(), st.lists(st.sampled_from([0, 1, 2, 5]), min_size=n, max_size=n))
  )
  kwargs = dict(
    window_strides=tuple(strides),
    padding=tuple(pads),
    lhs_dilation=tuple(in_dil),
    rhs_dilation=tuple(k_dil),
    dimension_numbers=(lhs, rhs, out),
    feature_group_count=groups,
  )
  return lhs_shape, rhs_shape, kwargs, blocks


@given(lax_args(), st.sampled_from([jnp.float32, jnp.complex64]), st.integers(0, 2**31))
def test_conv_general_dilated_fft_equals_lax_for_every_argument(args, dtype, seed):
  lhs_shape, rhs_shape, kwargs, blocks = args
  rng = np.random.default_rng(seed)
  x, k = random(rng, lhs_shape, dtype), random(rng, rhs_shape, dtype)
  ref = lax.conv_general_dilated(x, k, **kwargs)
  if blocks is not None:  # force overlap-save blocks of a few times the kernel's length
    p = _fft.plan(lhs_shape, rhs_shape, **kwargs)
    blocks = [
      b * a.kernel_blocks and _fft.fast_length(b * a.kernel_blocks + 1)
      for b, a in zip(blocks, p.axes, strict=True)
    ]
  got = jax.jit(lambda a, b: _fft.conv_general_dilated_fft(a, b, **kwargs, block_lengths=blocks))(
    x, k
  )
  assert got.dtype == ref.dtype and got.shape == ref.shape
  scale = np.abs(x).max() * np.abs(k).max()
  assert rel_err(got, ref, scale) <= tolerance(dtype, math.prod(rhs_shape))


# --- fc.conv(method="fft") == fc.conv(method="direct") ---------------------------------------


@st.composite
def conv_args(draw):
  n = draw(st.integers(1, 3))
  layout, kernel_layout = draw(st.sampled_from(LAYOUTS[n]))
  spatial = "".join(c for c in kernel_layout if c not in "OI")
  groups = draw(st.integers(1, 3))
  depthwise = draw(st.booleans())
  c_in = groups * (1 if depthwise else draw(st.integers(1, 3)))
  c_out = groups * draw(st.integers(1, 2))
  sizes = {c: draw(st.integers(3, MAX_SIZE[n])) for c in spatial}
  taps = {c: draw(st.integers(1, min(sizes[c], 7 if n == 1 else 3))) for c in spatial}
  padding = draw(
    st.one_of(
      st.sampled_from(PADDING_NAMES),
      st.integers(0, 3),
      st.lists(st.integers(0, 3), min_size=n, max_size=n),
      st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=n, max_size=n),
    )
  )
  input_dilation = draw(st.integers(1, 2))
  pad_mode = "zeros"
  if input_dilation == 1 and draw(st.booleans()):
    pad_mode = draw(st.sampled_from(PAD_MODES))
  kwargs = dict(
    flip=draw(st.booleans()),
    strides=draw(st.integers(1, 3)),
    padding=padding,
    dilation=draw(st.integers(1, 2)),
    input_dilation=input_dilation,
    groups=groups,
    layout=layout,
    kernel_layout=kernel_layout,
    pad_mode=pad_mode,
  )
  x_shape = shape_of(layout, {"N": draw(st.integers(1, 2)), "C": c_in, **sizes})
  k_shape = shape_of(kernel_layout, {"O": c_out, "I": c_in // groups, **taps})
  return x_shape, k_shape, kwargs


@given(
  conv_args(),
  st.sampled_from([jnp.float32, jnp.complex64]),
  st.sampled_from(["fft", "auto"]),
  st.integers(0, 2**31),
)
def test_conv_fft_equals_direct_for_every_argument(args, dtype, method, seed):
  x_shape, k_shape, kwargs = args
  rng = np.random.default_rng(seed)
  x, k = random(rng, x_shape, dtype), random(rng, k_shape, dtype)
  try:
    ref = fc.conv(x, k, **kwargs)  # method="direct"
  except ValueError:  # e.g. a kernel larger than the padded input: refused by both
    with pytest.raises(ValueError):
      fc.conv(x, k, method=method, **kwargs)
    return
  got = jax.jit(lambda a, b: fc.conv(a, b, method=method, **kwargs))(x, k)
  assert got.dtype == ref.dtype and got.shape == ref.shape
  scale = np.abs(x).max() * np.abs(k).max()
  assert rel_err(got, ref, scale) <= tolerance(dtype, math.prod(k_shape))


@pytest.mark.parametrize("layout,kernel_layout", [("NWC", "WIO"), ("NCHW", "OIHW")])
def test_conv_fft_flip_false_equals_lax_called_directly(layout, kernel_layout):
  n = len(layout) - 2
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 3) + (21,) * n if layout[1] == "C" else (2, 21, 3), dtype=np.float32)
  k = rng.standard_normal(
    (4, 3) + (5,) * n if kernel_layout[0] == "O" else (5, 3, 4), dtype=np.float32
  )
  pads = [(3, 1)] * n
  got = fc.conv(
    x,
    k,
    flip=False,
    padding=pads,
    strides=2,
    dilation=2,
    layout=layout,
    kernel_layout=kernel_layout,
    method="fft",
  )
  ref = lax.conv_general_dilated(
    x, k, (2,) * n, pads, rhs_dilation=(2,) * n, dimension_numbers=(layout, kernel_layout, layout)
  )
  assert rel_err(got, ref) <= tolerance(np.float32, 3 * 5**n)


# --- independent oracles: SciPy and float64 ------------------------------------------------


@pytest.mark.parametrize("n,size,taps", [(1, 300, 37), (2, 23, 6), (3, 9, 4)])
@pytest.mark.parametrize("mode,padding", [("full", "FULL"), ("valid", "VALID")])
def test_fft_convolve_matches_scipy_single_channel(n, size, taps, mode, padding):
  rng = np.random.default_rng(n)
  x = rng.standard_normal((size,) * n)
  k = rng.standard_normal((taps,) * n)
  got = fc.convolve(
    x[None, ..., None].astype(np.float32),
    k[..., None, None].astype(np.float32),
    padding=padding,
    method="fft",
  )[0, ..., 0]
  ref = scipy_signal.fftconvolve(x, k, mode=mode)
  assert rel_err(got, ref) <= tolerance(np.float32, taps**n)
  direct = scipy_signal.convolve(x, k, mode=mode, method="direct")  # a second, non-FFT oracle
  assert rel_err(got, direct) <= tolerance(np.float32, taps**n)


def test_fft_complex_convolve_matches_scipy():
  rng = np.random.default_rng(1)
  x = rng.standard_normal(200) + 1j * rng.standard_normal(200)
  k = rng.standard_normal(31) + 1j * rng.standard_normal(31)
  got = fc.convolve(
    x[None, :, None].astype(np.complex64),
    k[:, None, None].astype(np.complex64),
    padding="SAME",
    method="fft",
  )[0, :, 0]
  ref = scipy_signal.convolve(x, k, mode="same", method="direct")
  assert got.dtype == jnp.complex64
  assert rel_err(got, ref) <= tolerance(np.complex64, 31)


def test_float64_fft_is_exact_to_double_rounding():
  rng = np.random.default_rng(2)
  x = rng.standard_normal((2, 3, 500))
  k = rng.standard_normal((4, 3, 101))
  kw = dict(
    flip=True,
    layout="NCW",
    kernel_layout="OIW",
    padding="SAME",
    strides=3,
    precision=lax.Precision.HIGHEST,
  )
  with jax.enable_x64(True):
    got = fc.conv(x, k, method="fft", **kw)
    ref = fc.conv(x, k, **kw)
    assert got.dtype == jnp.float64
  assert rel_err(got, ref) <= 1e-13
  assert jnp.ones(1).dtype == jnp.float32  # x64 is off again


def test_float32_long_kernel_error_against_float64():
  # The accuracy stated in conv_general_dilated_fft's docstring.
  rng = np.random.default_rng(3)
  x = rng.standard_normal(65536)
  k = rng.standard_normal(8192)
  got = fc.convolve(
    x[None, :, None].astype(np.float32),
    k[:, None, None].astype(np.float32),
    padding="FULL",
    method="fft",
  )[0, :, 0]
  assert rel_err(got, scipy_signal.fftconvolve(x, k)) <= 1e-6


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_is_computed_in_float32_and_cast_back(dtype):
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.standard_normal((1, 120, 2)), dtype)
  k = jnp.asarray(rng.standard_normal((17, 2, 3)), dtype)
  exact = fc.convolve(x.astype(jnp.float32), k.astype(jnp.float32), padding="SAME")
  got = fc.convolve(x, k, padding="SAME", method="fft")
  wide = fc.convolve(x, k, padding="SAME", method="fft", preferred_element_type=jnp.float32)
  assert got.dtype == dtype and wide.dtype == jnp.float32
  assert rel_err(wide, exact) <= tolerance(np.float32, 34)
  assert rel_err(got, exact) <= float(jnp.finfo(dtype).eps)  # one rounding to dtype


# --- jit, grad, vmap, conv_transpose ---------------------------------------------------------


@pytest.mark.parametrize(
  "kwargs",
  [
    dict(flip=True, padding="SAME", strides=2, layout="NCW", kernel_layout="OIW"),
    dict(flip=False, padding="FULL", dilation=2, groups=2, input_dilation=2),
    dict(flip=True, padding=((1, 2), (2, 0)), strides=(2, 1), pad_mode="reflect"),
  ],
)
def test_gradients_equal_the_direct_methods(kwargs):
  n = 2 if isinstance(kwargs["padding"], tuple) else 1
  rng = np.random.default_rng(5)
  layout = kwargs.get("layout", "NWC" if n == 1 else "NHWC")
  x_shape = (2, 4, 30) if layout == "NCW" else (2, *(13,) * n, 4)
  k_shape = (
    (6, 4 // kwargs.get("groups", 1), 9)
    if layout == "NCW"
    else (*(5,) * n, 4 // kwargs.get("groups", 1), 6)
  )
  x = rng.standard_normal(x_shape).astype(np.float32)
  k = rng.standard_normal(k_shape).astype(np.float32)
  y = fc.conv(x, k, **kwargs)
  w = rng.standard_normal(y.shape).astype(np.float32)

  def loss(a, b, method):
    return jnp.sum(fc.conv(a, b, method=method, **kwargs) * w)

  ref = jax.grad(loss, argnums=(0, 1))(x, k, "direct")
  got = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)(x, k, "fft")
  for g, r in zip(got, ref, strict=True):
    assert rel_err(g, r) <= tolerance(np.float32, 4 * 5**n * 6)


def test_vmap_over_kernels_equals_the_direct_method():
  rng = np.random.default_rng(6)
  x = rng.standard_normal((2, 64, 3)).astype(np.float32)
  ks = rng.standard_normal((5, 11, 3, 2)).astype(np.float32)
  conv = lambda method: jax.vmap(lambda k: fc.convolve(x, k, padding="CAUSAL", method=method))
  assert rel_err(conv("fft")(ks), conv("direct")(ks)) <= tolerance(np.float32, 33)


@pytest.mark.parametrize(
  "kwargs",
  [
    dict(flip=False, strides=2, padding="SAME"),
    dict(flip=True, strides=3, padding=2, output_padding=1),
    dict(flip=False, strides=2, padding="VALID", dilation=2, groups=2),
    dict(flip=True, strides=(2, 3), padding=((3, 1), (0, 4)), layout="NCHW", kernel_layout="OIHW"),
  ],
)
def test_conv_transpose_fft_equals_direct(kwargs):
  rng = np.random.default_rng(7)
  n = 2 if kwargs.get("layout") == "NCHW" else 1
  x_shape = (2, 4, 9, 10) if n == 2 else (2, 17, 4)
  k_shape = (4, 3, 5, 4) if n == 2 else (6, 3 if kwargs.get("groups") else 6, 4)
  x = rng.standard_normal(x_shape).astype(np.float32)
  k = rng.standard_normal(k_shape).astype(np.float32)
  ref = fc.conv_transpose(x, k, **kwargs)
  got = fc.conv_transpose(x, k, method="fft", **kwargs)
  assert rel_err(got, ref) <= tolerance(np.float32, math.prod(k_shape))


@pytest.mark.parametrize("channels", [1, 5, 8, 19])
def test_channel_sum_is_the_same_einsum_on_every_platform(channels):
  # The CPU loop over channel chunks and the accelerators' einsum, against NumPy.
  rng = np.random.default_rng(8)
  xf = random(rng, (2, 3, channels, 4, 17), np.complex64)
  kf = random(rng, (3, 2, channels, 17), np.complex64)
  ref = np.einsum("bgctf,gocf->bgotf", xf.astype(np.complex128), kf.astype(np.complex128))
  for platform in ("cpu", "gpu"):
    got = _fft._contract(jnp.asarray(xf), jnp.asarray(kf), lax.Precision.HIGHEST, platform)
    assert rel_err(got, ref) <= tolerance(np.complex64, channels)


# --- method="auto" ---------------------------------------------------------------------------


def test_auto_picks_fft_for_long_kernels_and_direct_for_small_convnet_layers():
  one_d = dict(window_strides=(1,), padding=[(0, 0)])
  assert _auto.choose_method((1, 1, 65536), (1, 1, 8192), platform="cpu", **one_d) == "fft"
  assert _auto.choose_method((8, 16, 16384), (16, 16, 1024), platform="cpu", **one_d) == "fft"
  layer = dict(window_strides=(1, 1), padding=[(1, 1), (1, 1)])
  assert _auto.choose_method((8, 64, 56, 56), (64, 64, 3, 3), platform="cpu", **layer) == "direct"


def test_auto_is_direct_for_1x1_kernels_and_integers():
  kw = dict(window_strides=(1,), padding=[(0, 0)])
  assert _auto.choose_method((1, 1, 65536), (1, 1, 1), platform="cpu", **kw) == "direct"
  assert (
    _auto.choose_method((1, 1, 65536), (1, 1, 8192), dtype=jnp.int32, platform="cpu", **kw)
    == "direct"
  )
  x = np.arange(200, dtype=np.int32).reshape(1, 200, 1)
  k = np.ones((150, 1, 1), np.int32)
  got = fc.convolve(x, k, method="auto")
  np.testing.assert_array_equal(got[0, :, 0], np.convolve(x[0, :, 0], k[:, 0, 0], "valid"))


def test_auto_on_accelerators_is_direct_unless_the_kernel_is_very_long():
  kw = dict(window_strides=(1,), padding=[(0, 0)])
  assert _auto.choose_method((8, 16, 16384), (16, 16, 64), platform="cpu", **kw) == "fft"
  assert _auto.choose_method((8, 16, 16384), (16, 16, 64), platform="gpu", **kw) == "direct"
  assert _auto.choose_method((1, 1, 65536), (1, 1, 8192), platform="gpu", **kw) == "fft"


def test_auto_modelled_costs_rank_a_clear_case_right():
  # 65,536 samples x 8,192 taps: measured 200x apart on CPU; the models must agree on the order.
  shapes = ((1, 1, 65536), (1, 1, 8192))
  kw = dict(window_strides=(1,), padding=[(8191, 8191)])
  assert _fft.plan(*shapes, **kw).cost_ns() * 20 < _auto.direct_cost_ns(shapes, **kw)


# --- errors ----------------------------------------------------------------------------------


def test_unknown_method_is_a_value_error_naming_the_choices():
  with pytest.raises(ValueError, match=r"method 'fast'.*auto, direct, fft"):
    fc.convolve(np.ones((1, 8, 1)), np.ones((3, 1, 1)), method="fast")
  with pytest.raises(ValueError, match="method"):
    fc.conv_transpose(np.ones((1, 8, 1)), np.ones((3, 1, 1)), flip=True, method="FFT2")


def test_integer_inputs_with_fft_say_to_use_direct():
  with pytest.raises(ValueError, match=r"method='fft'.*int32.*method='direct'"):
    fc.convolve(np.ones((1, 8, 1), np.int32), np.ones((3, 1, 1), np.int32), method="fft")


def test_block_length_shorter_than_the_kernel_is_refused():
  with pytest.raises(ValueError, match="block length 8 is shorter than the kernel's 10"):
    _fft.conv_general_dilated_fft(
      np.ones((1, 1, 50)), np.ones((1, 1, 10)), (1,), [(0, 0)], block_lengths=(8,)
    )


@settings(max_examples=10)
@given(st.integers(1, 3), st.integers(1, 4))
def test_stride_larger_than_kernel_keeps_only_the_needed_outputs(taps, stride):
  x = np.arange(1, 31, dtype=np.float32).reshape(1, 1, 30)
  k = np.arange(1, taps + 1, dtype=np.float32).reshape(1, 1, taps)
  ref = lax.conv_general_dilated(x, k, (stride,), [(0, 0)])
  got = _fft.conv_general_dilated_fft(x, k, (stride,), [(0, 0)])
  assert rel_err(got, ref) <= tolerance(np.float32, taps)
