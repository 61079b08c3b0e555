"""``fc.conv``, ``fc.convolve`` and ``fc.correlate`` against independent references.

References, none of them flipconv: the NumPy loops of ``tests/_reference.py`` (with
the explicit pads of every padding form computed here from the definitions in
shared/API.md, not by ``flipconv._padding``), ``np.pad`` for the pad modes,
``scipy.signal.convolve`` / ``correlate``, and ``lax.conv_general_dilated`` called
directly. Layouts are exercised by transposing the arrays with ``np.transpose``.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from jax import lax

import flipconv as fc
from _reference import np_conv, np_pad

PADDING_NAMES = ("VALID", "SAME", "SAME_LOWER", "FULL", "HALF", "CAUSAL")
LETTERS = {1: "W", 2: "HW", 3: "DHW"}
# NumPy's mode names, which flipconv accepts as aliases of its own.
NUMPY_ALIASES = {"constant": "zeros", "edge": "replicate", "wrap": "circular"}


# --- helpers -----------------------------------------------------------------------------


def _static(value):
  """Lists and plain tuples as nested tuples, so that a value can be a static jit argument."""
  if type(value) in (list, tuple):
    return tuple(_static(v) for v in value)
  return value


# LLVM's optimisations do not change what a conv computes, only how fast; at level 0 the
# many one-off programs of these tests compile about a third faster.
@functools.partial(
  jax.jit, static_argnums=(0, 3), compiler_options={"xla_backend_optimization_level": 0}
)
def _jitted(name, x, k, kwargs):
  return getattr(fc, name)(x, k, **dict(kwargs))


def jitted(name: str):
  """``fc.<name>`` under one cached ``jax.jit``: one compile per case instead of one per op.

  (The eager path is checked against the same reference in test_op_properties.py.)
  """

  def call(x, k, **kw):
    return _jitted(name, x, k, tuple(sorted((a, _static(v)) for a, v in kw.items())))

  return call


jconv, jconvolve, jcorrelate = jitted("conv"), jitted("convolve"), jitted("correlate")


def expected_pads(padding, in_sizes, k_sizes, strides, dilation, input_dilation):
  """Explicit ``(low, high)`` pads from the definitions in shared/API.md."""
  n = len(in_sizes)
  sizes = [(i - 1) * d + 1 for i, d in zip(in_sizes, input_dilation, strict=True)]
  k_eff = [(k - 1) * d + 1 for k, d in zip(k_sizes, dilation, strict=True)]
  if isinstance(padding, str):
    name = padding.upper()
    pads = []
    for size, k, s in zip(sizes, k_eff, strides, strict=True):
      if name == "VALID":
        pads.append((0, 0))
      elif name in ("SAME", "SAME_LOWER"):
        out = -(-size // s)
        total = max((out - 1) * s + k - size, 0)
        small, big = total // 2, total - total // 2
        pads.append((small, big) if name == "SAME" else (big, small))
      elif name == "FULL":
        pads.append((k - 1, k - 1))
      elif name == "HALF":
        pads.append((k // 2, k // 2))
      elif name == "CAUSAL":
        pads.append((k - 1, 0))
      else:
        raise AssertionError(name)
    return pads
  if isinstance(padding, int):
    return [(padding, padding)] * n
  return [(p, p) if isinstance(p, int) else tuple(p) for p in padding]


def relayout(arr, src: str, dst: str) -> np.ndarray:
  """``arr`` laid out as ``src`` transposed to ``dst`` (the same letters)."""
  assert sorted(src) == sorted(dst), (src, dst)
  return np.transpose(np.asarray(arr), [src.index(c) for c in dst])


def per_dim(value, n: int) -> tuple[int, ...]:
  return (value,) * n if isinstance(value, int) else tuple(value)


def reference(
  x,
  k,
  *,
  flip,
  strides=1,
  padding="VALID",
  dilation=1,
  input_dilation=1,
  groups=1,
  pad_mode="zeros",
):
  """The NumPy reference for channels-first arrays and any padding form, in float64."""
  n = x.ndim - 2
  strides, dilation, input_dilation = (per_dim(v, n) for v in (strides, dilation, input_dilation))
  pads = expected_pads(padding, x.shape[2:], k.shape[2:], strides, dilation, input_dilation)
  wide = np.complex128 if np.iscomplexobj(x) or np.iscomplexobj(k) else np.float64
  x, k = np.asarray(x).astype(wide), np.asarray(k).astype(wide)
  mode = NUMPY_ALIASES.get(pad_mode, pad_mode)
  if mode != "zeros":
    x, pads = np_pad(x, pads, mode), [(0, 0)] * n
  return np_conv(
    x,
    k,
    flip=flip,
    strides=strides,
    pads=pads,
    dilation=dilation,
    input_dilation=input_dilation,
    groups=groups,
  )


def rand(rng, shape, dtype=np.float32):
  return rng.standard_normal(shape).astype(dtype)


def assert_close(actual, expected, *, rtol=1e-5, atol=1e-5):
  actual = np.asarray(actual)
  assert actual.shape == expected.shape, (actual.shape, expected.shape)
  np.testing.assert_allclose(actual.astype(expected.dtype), expected, rtol=rtol, atol=atol)


def min_input(k: int, dilation: int, input_dilation: int) -> int:
  """The smallest input size whose dilated extent holds the effective kernel."""
  k_eff = (k - 1) * dilation + 1
  return max(1, -(-(k_eff - 1) // input_dilation) + 1)


# --- the NumPy reference, every argument -------------------------------------------------


@st.composite
def conv_cases(draw):
  """A conv with random rank, flip, strides, dilations, groups, padding and layouts."""
  n = draw(st.integers(1, 3))
  letters = LETTERS[n]
  small = n == 3  # keep the 3-D reference loops short
  depthwise = draw(st.booleans())
  groups = draw(st.integers(1, 3))
  in_per_group = 1 if depthwise else draw(st.integers(1, 2))
  out_per_group = draw(st.integers(1, 2))
  ks = [draw(st.integers(1, 2 if small else 3)) for _ in range(n)]
  strides = [draw(st.integers(1, 3)) for _ in range(n)]
  dilation = [draw(st.integers(1, 2)) for _ in range(n)]
  input_dilation = [draw(st.integers(1, 2)) for _ in range(n)]
  sizes = [
    draw(st.integers(min_input(k, d, i), min_input(k, d, i) + (2 if small else 4)))
    for k, d, i in zip(ks, dilation, input_dilation, strict=True)
  ]
  form = draw(st.sampled_from([*PADDING_NAMES, "lower", "int", "ints", "pairs"]))
  if form == "lower":
    padding = draw(st.sampled_from(PADDING_NAMES)).lower()
  elif form == "int":
    padding = draw(st.integers(0, 2))
  elif form == "ints":
    padding = tuple(draw(st.integers(0, 2)) for _ in range(n))
  elif form == "pairs":
    padding = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(n))
  else:
    padding = form
  # Random layouts; per-dimension arguments follow the kernel layout's spatial letters.
  kernel_layout = "".join(draw(st.permutations("OI" + letters)))
  layout = "".join(draw(st.permutations("NC" + letters)))
  out_layout = draw(st.one_of(st.none(), st.permutations("NC" + letters).map("".join)))
  entry = draw(st.sampled_from(["conv", "convolve", "correlate"]))
  flip = {"convolve": True, "correlate": False}[entry] if entry != "conv" else draw(st.booleans())
  c = groups * in_per_group
  batch = draw(st.integers(1, 2))
  return dict(
    n=n,
    flip=flip,
    entry=entry,
    strides=tuple(strides),
    dilation=tuple(dilation),
    input_dilation=tuple(input_dilation),
    groups=groups,
    padding=padding,
    x_shape=(batch, c, *sizes),
    k_shape=(groups * out_per_group, in_per_group, *ks),
    layout=layout,
    kernel_layout=kernel_layout,
    out_layout=out_layout,
    seed=draw(st.integers(0, 2**32 - 1)),
  )


def reference_cost(case) -> int:
  """Iterations of the reference's loops (to keep each example fast)."""
  n = case["n"]
  pads = expected_pads(
    case["padding"],
    case["x_shape"][2:],
    case["k_shape"][2:],
    case["strides"],
    case["dilation"],
    case["input_dilation"],
  )
  outs = []
  for i, (lo, hi), k, s, d, di in zip(
    case["x_shape"][2:],
    pads,
    case["k_shape"][2:],
    case["strides"],
    case["dilation"],
    case["input_dilation"],
    strict=True,
  ):
    size = (i - 1) * di + 1 + lo + hi
    if size < (k - 1) * d + 1:
      return -1
    outs.append((size - (k - 1) * d - 1) // s + 1)
  return math.prod(outs) * math.prod(case["k_shape"][:2]) * math.prod(case["k_shape"][2:]) * n


@given(conv_cases())
def test_conv_matches_numpy_reference_for_every_argument(case):
  cost = reference_cost(case)
  assume(0 < cost < 6000)
  rng = np.random.default_rng(case["seed"])
  x, k = rand(rng, case["x_shape"]), rand(rng, case["k_shape"])
  letters = "".join(c for c in case["kernel_layout"] if c not in "OI")
  expected = reference(
    x,
    k,
    flip=case["flip"],
    strides=case["strides"],
    padding=case["padding"],
    dilation=case["dilation"],
    input_dilation=case["input_dilation"],
    groups=case["groups"],
  )
  kw = dict(
    strides=case["strides"],
    padding=case["padding"],
    dilation=case["dilation"],
    input_dilation=case["input_dilation"],
    groups=case["groups"],
    layout=case["layout"],
    kernel_layout=case["kernel_layout"],
    out_layout=case["out_layout"],
  )
  xl = relayout(x, "NC" + letters, case["layout"])
  kl = relayout(k, "OI" + letters, case["kernel_layout"])
  if case["entry"] == "conv":
    out = jconv(xl, kl, flip=case["flip"], **kw)
  else:
    out = jitted(case["entry"])(xl, kl, **kw)
  out_layout = case["out_layout"] or case["layout"]
  assert_close(out, relayout(expected, "NC" + letters, out_layout), rtol=2e-5, atol=2e-5)


EXPLICIT = {
  # name: (x shape NC..., k shape OI..., kwargs)
  "1d-valid": ((2, 3, 9), (4, 3, 3), dict()),
  "1d-same-even-kernel-stride": ((1, 2, 10), (3, 2, 4), dict(strides=3, padding="SAME")),
  "1d-same-lower-even-kernel": ((1, 2, 7), (2, 2, 2), dict(padding="SAME_LOWER")),
  "1d-causal-dilated": ((1, 1, 8), (1, 1, 3), dict(padding="CAUSAL", dilation=2)),
  "1d-full-input-dilation": ((1, 2, 4), (2, 2, 3), dict(padding="FULL", input_dilation=3)),
  "2d-half-even-kernel": ((1, 2, 5, 6), (2, 2, 2, 4), dict(padding="HALF")),
  "2d-pairs-strides": ((2, 2, 7, 6), (3, 2, 3, 2), dict(padding=((2, 0), (1, 3)), strides=(2, 3))),
  "2d-per-dim-ints": ((1, 3, 5, 6), (2, 3, 3, 3), dict(padding=(0, 2), dilation=(1, 2))),
  "2d-groups": ((1, 6, 5, 5), (4, 3, 3, 3), dict(groups=2, padding=1)),
  "2d-depthwise-multiplier": ((2, 3, 6, 5), (6, 1, 3, 2), dict(groups=3, padding="SAME")),
  "2d-same-lower-input-dilation": (
    (1, 2, 4, 3),
    (2, 2, 3, 2),
    dict(padding="SAME_LOWER", input_dilation=(2, 3), strides=(2, 1)),
  ),
  "3d-same-strided": ((1, 2, 5, 4, 3), (2, 2, 2, 3, 2), dict(padding="SAME", strides=2)),
  "3d-depthwise-full": ((1, 2, 3, 3, 3), (2, 1, 2, 2, 2), dict(padding="FULL", groups=2)),
}


@pytest.mark.parametrize("case", list(EXPLICIT.values()), ids=list(EXPLICIT))
def test_conv_matches_numpy_reference_explicit_cases(case):
  x_shape, k_shape, kw = case
  flip = list(EXPLICIT.values()).index(case) % 2 == 1  # both flips across the cases
  rng = np.random.default_rng(0)
  x, k = rand(rng, x_shape), rand(rng, k_shape)
  n = len(x_shape) - 2
  letters = LETTERS[n]
  out = jconv(x, k, flip=flip, layout="NC" + letters, kernel_layout="OI" + letters, **kw)
  assert_close(out, reference(x, k, flip=flip, **kw))


def test_flip_makes_a_difference_on_an_asymmetric_kernel():
  # Guards the reference tests against a kernel that is its own flip.
  x = np.arange(6.0, dtype=np.float32).reshape(1, 1, 6) ** 2
  k = np.array([1.0, 2.0, 4.0], np.float32).reshape(1, 1, 3)
  kw = dict(layout="NCW", kernel_layout="OIW")
  np.testing.assert_allclose(fc.correlate(x, k, **kw)[0, 0], [18, 45, 86, 141])
  np.testing.assert_allclose(fc.convolve(x, k, **kw)[0, 0], [6, 21, 50, 93])


# --- layouts ---------------------------------------------------------------------------

LAYOUT_CASES = [
  ("NCHW", "OIHW", None),
  ("NHWC", "HWIO", None),
  ("NHCW", "HOWI", None),
  ("NCHW", "OIHW", "NHWC"),
  ("NHWC", "HWIO", "NCHW"),
  ("HWNC", "IHOW", "CNWH"),
  ("NCHW", "HWIO", "NHCW"),
]


@pytest.mark.parametrize(("layout", "kernel_layout", "out_layout"), LAYOUT_CASES)
def test_every_layout_computes_the_same_conv(layout, kernel_layout, out_layout):
  flip = True  # the reversed axes depend on the kernel layout
  rng = np.random.default_rng(1)
  x, k = rand(rng, (2, 4, 7, 6)), rand(rng, (6, 2, 3, 2))
  kw = dict(strides=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2), groups=2)
  expected = reference(x, k, flip=flip, **kw)
  out = jconv(
    relayout(x, "NCHW", layout),
    relayout(k, "OIHW", kernel_layout),
    flip=flip,
    layout=layout,
    kernel_layout=kernel_layout,
    out_layout=out_layout,
    **kw,
  )
  assert_close(out, relayout(expected, "NCHW", out_layout or layout))


def test_per_dimension_arguments_follow_the_kernel_layouts_spatial_order():
  # kernel_layout "WHIO" lists W first, so strides=(3, 1) means W-stride 3, H-stride 1.
  rng = np.random.default_rng(2)
  x, k = rand(rng, (1, 2, 7, 8)), rand(rng, (3, 2, 3, 2))
  expected = reference(x, k, flip=False, strides=(1, 3), padding=((0, 0), (1, 2)))
  out = fc.conv(
    relayout(x, "NCHW", "NHWC"),
    relayout(k, "OIHW", "WHIO"),
    flip=False,
    layout="NHWC",
    kernel_layout="WHIO",
    strides=(3, 1),
    padding=((1, 2), (0, 0)),
  )
  assert_close(out, relayout(expected, "NCHW", "NHWC"))


def test_default_layout_is_channels_last():
  rng = np.random.default_rng(3)
  x, k = rand(rng, (2, 3, 6, 5)), rand(rng, (4, 3, 2, 3))
  out = fc.conv(relayout(x, "NCHW", "NHWC"), relayout(k, "OIHW", "HWIO"), flip=True, padding="SAME")
  assert_close(out, relayout(reference(x, k, flip=True, padding="SAME"), "NCHW", "NHWC"))


@pytest.mark.parametrize(
  ("n", "layout", "kernel_layout"), [(1, "CW", "OIW"), (2, "CHW", "OIHW"), (2, "HWC", "HWIO")]
)
def test_unbatched_layout_equals_batch_of_one(n, layout, kernel_layout):
  rng = np.random.default_rng(4)
  letters = LETTERS[n]
  x, k = rand(rng, (1, 4, *[6] * n)), rand(rng, (2, 4, *[3] * n))
  kw = dict(padding="SAME", strides=2)
  expected = reference(x, k, flip=True, **kw)[0]
  out = fc.conv(
    relayout(x[0], "C" + letters, layout),
    relayout(k, "OI" + letters, kernel_layout),
    flip=True,
    layout=layout,
    kernel_layout=kernel_layout,
    **kw,
  )
  assert_close(out, relayout(expected, "C" + letters, layout))
  batched = fc.conv(
    relayout(x, "NC" + letters, "N" + layout),
    relayout(k, "OI" + letters, kernel_layout),
    flip=True,
    layout="N" + layout,
    kernel_layout=kernel_layout,
    **kw,
  )
  np.testing.assert_array_equal(out, np.asarray(batched)[0])


def test_unbatched_layout_with_a_pad_mode():
  rng = np.random.default_rng(5)
  x, k = rand(rng, (1, 2, 5, 6)), rand(rng, (3, 2, 3, 3))
  expected = reference(x, k, flip=False, padding=(1, 2), pad_mode="reflect")[0]
  out = fc.conv(
    x[0], k, flip=False, layout="CHW", kernel_layout="OIHW", padding=(1, 2), pad_mode="reflect"
  )
  assert_close(out, expected)


@pytest.mark.parametrize(
  ("layout", "kernel_layout", "out_layout"),
  [
    ("NCHW", "OIHW", "NCHW"),
    ("NHWC", "HWIO", "NCHW"),
    ("NHWC", "WHIO", "NHWC"),
    ("NCHW", "OHWI", "NHCW"),
  ],
)
def test_dimension_numbers_and_layout_triples_mean_the_strings(layout, kernel_layout, out_layout):
  rng = np.random.default_rng(6)
  x, k = rand(rng, (2, 2, 7, 6)), rand(rng, (4, 2, 3, 2))
  xl, kl = relayout(x, "NCHW", layout), relayout(k, "OIHW", kernel_layout)
  # strides, padding and dilation in the kernel layout's spatial order (lax's rule).
  kw = dict(strides=(2, 1), padding=((1, 2), (0, 1)), dilation=(1, 2))
  from_strings = fc.conv(
    xl, kl, flip=True, layout=layout, kernel_layout=kernel_layout, out_layout=out_layout, **kw
  )
  dn = lax.conv_dimension_numbers(xl.shape, kl.shape, (layout, kernel_layout, out_layout))
  from_dn = fc.conv(xl, kl, flip=True, layout=dn, **kw)
  from_triple = fc.conv(xl, kl, flip=True, layout=(layout, kernel_layout, out_layout), **kw)
  np.testing.assert_array_equal(from_dn, from_strings)
  np.testing.assert_array_equal(from_triple, from_strings)
  order = "".join(c for c in kernel_layout if c not in "OI")
  if order == "HW":
    expected = reference(x, k, flip=True, **kw)
  else:  # "WH": the reference's H, W order is the reverse of the arguments'
    expected = reference(x, k, flip=True, strides=(1, 2), padding=((0, 1), (1, 2)), dilation=(2, 1))
  assert_close(from_strings, relayout(expected, "NCHW", out_layout))


@pytest.mark.parametrize(
  "dn",
  [
    lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 1, 0), (0, 3, 1, 2)),
    lax.ConvDimensionNumbers((2, 0, 3, 1), (1, 0, 2, 3), (3, 1, 0, 2)),
    lax.ConvDimensionNumbers((0, 1, 3, 2), (0, 1, 2, 3), (1, 0, 2, 3)),
  ],
  ids=["kernel-spatial-reversed", "all-permuted", "input-spatial-swapped"],
)
@pytest.mark.parametrize("flip", [False, True])
def test_dimension_numbers_mean_what_lax_means(dn, flip):
  # Index-based numbers whose spatial order is in no array's axis order.
  rng = np.random.default_rng(21)
  x_shape, k_shape = [0] * 4, [0] * 4
  for axis, size in zip(dn.lhs_spec, (2, 2, 7, 6), strict=True):
    x_shape[axis] = size
  for axis, size in zip(dn.rhs_spec, (3, 2, 3, 2), strict=True):
    k_shape[axis] = size
  x, k = rand(rng, x_shape), rand(rng, k_shape)
  kw = dict(strides=(2, 1), padding=((1, 0), (0, 2)), dilation=(1, 2))
  k_lax = lax.rev(k, dn.rhs_spec[2:]) if flip else k
  expected = lax.conv_general_dilated(
    x,
    k_lax,
    window_strides=kw["strides"],
    padding=kw["padding"],
    rhs_dilation=kw["dilation"],
    dimension_numbers=dn,
  )
  np.testing.assert_array_equal(fc.conv(x, k, flip=flip, layout=dn, **kw), expected)


@pytest.mark.parametrize(("layout", "out_layout"), [("CHW", "HWC"), ("HCW", "WHC")])
def test_unbatched_out_layout_differs_from_layout(layout, out_layout):
  rng = np.random.default_rng(22)
  x, k = rand(rng, (1, 2, 5, 6)), rand(rng, (3, 2, 2, 3))
  expected = reference(x, k, flip=True, padding=((1, 0), (0, 1)))[0]
  out = jconv(
    relayout(x[0], "CHW", layout),
    k,
    flip=True,
    layout=layout,
    kernel_layout="OIHW",
    out_layout=out_layout,
    padding=((1, 0), (0, 1)),
  )
  assert_close(out, relayout(expected, "CHW", out_layout))


# --- pad modes -------------------------------------------------------------------------

PAD_MODE_CASES = {
  # name: (x shape NC..., k shape OI..., kwargs)
  "1d-int": ((1, 2, 6), (3, 2, 3), dict(padding=2)),
  "1d-same-groups": ((2, 2, 5), (2, 1, 4), dict(padding="SAME", groups=2)),
  "1d-causal-dilated": ((1, 1, 7), (1, 1, 3), dict(padding="CAUSAL", dilation=2)),
  "2d-pairs-strided": ((1, 2, 5, 6), (2, 2, 3, 3), dict(padding=((2, 0), (1, 3)), strides=(2, 1))),
  "2d-same-lower": ((1, 2, 5, 4), (2, 2, 2, 3), dict(padding="SAME_LOWER", strides=2)),
  "3d-ints": ((1, 1, 3, 4, 3), (2, 1, 2, 3, 2), dict(padding=(1, 2, 1))),
}


@pytest.mark.parametrize("pad_mode", ["reflect", "replicate", "circular", "symmetric", "zeros"])
@pytest.mark.parametrize("case", list(PAD_MODE_CASES.values()), ids=list(PAD_MODE_CASES))
def test_pad_mode_equals_np_pad_then_valid_conv(pad_mode, case):
  x_shape, k_shape, kw = case
  rng = np.random.default_rng(7)
  x, k = rand(rng, x_shape), rand(rng, k_shape)
  letters = LETTERS[len(x_shape) - 2]
  flip = len(x_shape) % 2 == 0  # both flips across the cases
  out = jconv(
    x, k, flip=flip, layout="NC" + letters, kernel_layout="OI" + letters, pad_mode=pad_mode, **kw
  )
  assert_close(out, reference(x, k, flip=flip, pad_mode=pad_mode, **kw))


@pytest.mark.parametrize("alias", ["constant", "edge", "wrap"])
@pytest.mark.parametrize("case", ["1d-int", "2d-pairs-strided"])
def test_numpy_pad_mode_names_are_aliases(alias, case):
  x_shape, k_shape, kw = PAD_MODE_CASES[case]
  rng = np.random.default_rng(7)
  x, k = rand(rng, x_shape), rand(rng, k_shape)
  letters = LETTERS[len(x_shape) - 2]
  out = jconv(
    x, k, flip=True, layout="NC" + letters, kernel_layout="OI" + letters, pad_mode=alias, **kw
  )
  assert_close(out, reference(x, k, flip=True, pad_mode=alias, **kw))


def test_pad_mode_works_in_channels_last_layout():
  rng = np.random.default_rng(8)
  x, k = rand(rng, (2, 3, 5, 4)), rand(rng, (2, 3, 3, 3))
  expected = reference(x, k, flip=False, padding=((2, 1), (0, 2)), pad_mode="symmetric")
  out = fc.conv(
    relayout(x, "NCHW", "NHWC"),
    relayout(k, "OIHW", "HWIO"),
    flip=False,
    padding=((2, 1), (0, 2)),
    pad_mode="symmetric",
  )
  assert_close(out, relayout(expected, "NCHW", "NHWC"))


def test_pad_mode_pads_the_right_axes_of_an_odd_layout():
  # Kernel layout "OIWH": per-dimension padding is given in (W, H) order, unlike the input's.
  rng = np.random.default_rng(20)
  x, k = rand(rng, (2, 2, 5, 6)), rand(rng, (3, 2, 2, 3))
  expected = reference(x, k, flip=True, padding=((2, 0), (1, 3)), pad_mode="reflect")
  out = jconv(
    relayout(x, "NCHW", "HCNW"),
    relayout(k, "OIHW", "OIWH"),
    flip=True,
    layout="HCNW",
    kernel_layout="OIWH",
    out_layout="NHWC",
    padding=((1, 3), (2, 0)),
    pad_mode="reflect",
  )
  assert_close(out, relayout(expected, "NCHW", "NHWC"))


@settings(max_examples=40, deadline=None)
@given(
  mode=st.sampled_from(["reflect", "circular", "symmetric", "replicate", "wrap", "edge"]),
  size=st.integers(1, 4),
  pads=st.tuples(st.integers(0, 11), st.integers(0, 11)),
)
def test_pad_mode_of_any_width_is_numpy_pad(mode, size, pads):
  """Wider than the input, the pad wraps or reflects again, as numpy.pad (and Flax) do.

  A 1-tap kernel of 1 shows the padded input itself.
  """
  x = np.arange(1.0, size + 1, dtype=np.float32).reshape(1, 1, size)
  kw = dict(flip=False, layout="NCW", kernel_layout="OIW", padding=(pads,), pad_mode=mode)
  out = fc.conv(x, np.ones((1, 1, 1), np.float32), **kw)
  np_mode = {"circular": "wrap", "replicate": "edge"}.get(mode, mode)
  np.testing.assert_array_equal(out[0, 0], np.pad(x[0, 0], pads, mode=np_mode))


@pytest.mark.parametrize("pad_mode", ["reflect", "circular", "symmetric", "replicate"])
def test_pad_mode_wider_than_the_input_in_2d(pad_mode):
  """Kernel 9 x 4 on a 1 x 3 input, per-dimension pads wider than the input: the reference."""
  rng = np.random.default_rng(9)
  x, k = rand(rng, (2, 2, 1, 3)), rand(rng, (3, 2, 9, 4))
  padding = ((4, 4), (5, 2))
  out = fc.conv(
    x, k, flip=True, layout="NCHW", kernel_layout="OIHW", padding=padding, pad_mode=pad_mode
  )
  assert out.shape == (2, 3, 1, 7)
  assert_close(out, reference(x, k, flip=True, padding=padding, pad_mode=pad_mode))


# --- scipy.signal --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["valid", "full"])
@pytest.mark.parametrize(
  ("x_shape", "k_shape"),
  [((11,), (4,)), ((7, 6), (3, 2)), ((5, 4, 6), (2, 3, 3))],
  ids=["1d", "2d", "3d"],
)
def test_single_channel_equals_scipy_signal(x_shape, k_shape, mode):
  rng = np.random.default_rng(10)
  x, k = rng.standard_normal(x_shape), rng.standard_normal(k_shape)
  n = len(x_shape)
  kw = dict(
    layout="NC" + LETTERS[n],
    kernel_layout="OI" + LETTERS[n],
    padding={"valid": "VALID", "full": "FULL"}[mode],
  )
  xb, kb = x[None, None].astype(np.float32), k[None, None].astype(np.float32)
  np.testing.assert_allclose(
    fc.convolve(xb, kb, **kw)[0, 0],
    scipy.signal.convolve(x, k, mode=mode, method="direct"),
    rtol=1e-5,
    atol=1e-5,
  )
  np.testing.assert_allclose(
    fc.correlate(xb, kb, **kw)[0, 0],
    scipy.signal.correlate(x, k, mode=mode, method="direct"),
    rtol=1e-5,
    atol=1e-5,
  )


# --- lax.conv_general_dilated directly ---------------------------------------------------

LAX_CASES = {
  # name: (x shape, k shape, dimension numbers, fc kwargs, lax padding)
  "1d-nwc": ((2, 9, 3), (3, 3, 4), ("NWC", "WIO", "NWC"), dict(strides=2, padding="SAME"), "SAME"),
  "2d-nchw-groups": (
    (1, 4, 6, 7),
    (6, 2, 3, 2),
    ("NCHW", "OIHW", "NCHW"),
    dict(padding=((1, 2), (0, 1)), groups=2, dilation=(2, 1)),
    ((1, 2), (0, 1)),
  ),
  "2d-nhwc-to-nchw": (
    (2, 5, 6, 3),
    (2, 3, 3, 4),
    ("NHWC", "HWIO", "NCHW"),
    dict(padding=((2, 2), (1, 0)), strides=(1, 2), input_dilation=2),
    ((2, 2), (1, 0)),
  ),
  "3d-ncdhw": (
    (1, 2, 4, 5, 3),
    (3, 2, 2, 3, 2),
    ("NCDHW", "OIDHW", "NCDHW"),
    dict(padding=1, strides=(1, 2, 1)),
    ((1, 1),) * 3,
  ),
}


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("case", list(LAX_CASES.values()), ids=list(LAX_CASES))
def test_equals_lax_conv_general_dilated(case, flip):
  x_shape, k_shape, dn, kw, lax_padding = case
  rng = np.random.default_rng(11)
  x, k = rand(rng, x_shape), rand(rng, k_shape)
  n = len(x_shape) - 2
  per = {name: per_dim(kw.get(name, 1), n) for name in ("strides", "dilation", "input_dilation")}
  k_lax = lax.rev(k, tuple(i for i, c in enumerate(dn[1]) if c not in "OI")) if flip else k
  expected = lax.conv_general_dilated(
    x,
    k_lax,
    window_strides=per["strides"],
    padding=lax_padding,
    lhs_dilation=per["input_dilation"],
    rhs_dilation=per["dilation"],
    dimension_numbers=dn,
    feature_group_count=kw.get("groups", 1),
  )
  out = fc.conv(x, k, flip=flip, layout=dn[0], kernel_layout=dn[1], out_layout=dn[2], **kw)
  assert out.dtype == expected.dtype
  np.testing.assert_array_equal(out, expected)


# --- dtypes ---------------------------------------------------------------------------------


def _small_case(rng, dtype):
  x = rng.standard_normal((2, 3, 6, 5))
  k = rng.standard_normal((4, 3, 3, 2))
  if np.dtype(dtype).kind == "c":
    x = x + 1j * rng.standard_normal(x.shape)
    k = k + 1j * rng.standard_normal(k.shape)
  return jnp.asarray(x, dtype), jnp.asarray(k, dtype)


KW2D = dict(layout="NCHW", kernel_layout="OIHW", padding="SAME", strides=(2, 1))


@pytest.mark.parametrize(
  ("dtype", "tol"),
  [(jnp.float16, 1e-2), (jnp.bfloat16, 5e-2), (jnp.float32, 1e-5), (jnp.complex64, 1e-5)],
)
@pytest.mark.parametrize("flip", [False, True])
def test_dtypes_pass_through_as_lax_returns_them(dtype, tol, flip):
  x, k = _small_case(np.random.default_rng(12), dtype)
  out = fc.conv(x, k, flip=flip, **KW2D)
  k_lax = lax.rev(k, (2, 3)) if flip else k
  direct = lax.conv_general_dilated(
    x, k_lax, (2, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW")
  )
  assert out.dtype == direct.dtype == dtype
  # The reference sees exactly the (rounded) inputs fc saw.
  wide = jnp.complex64 if dtype == jnp.complex64 else jnp.float32
  expected = reference(
    np.asarray(x.astype(wide)),
    np.asarray(k.astype(wide)),
    flip=flip,
    padding="SAME",
    strides=(2, 1),
  )
  scale = np.abs(expected).max()
  assert_close(out, expected, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("dtype", ["float64", "complex128"])
def test_float64_and_complex128_under_x64(dtype):
  with jax.enable_x64(True):
    x, k = _small_case(np.random.default_rng(13), dtype)
    out = fc.conv(x, k, flip=True, **KW2D)
    assert out.dtype == dtype
    expected = reference(np.asarray(x), np.asarray(k), flip=True, padding="SAME", strides=(2, 1))
    assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_complex_correlation_does_not_conjugate():
  # lax and PyTorch: y = sum x * k, without conj(k) (unlike scipy.signal.correlate).
  x = np.array([1 + 1j, 2 - 1j, 0.5j], np.complex64).reshape(1, 1, 3)
  k = np.array([1j, 2.0], np.complex64).reshape(1, 1, 2)
  out = fc.correlate(x, k, layout="NCW", kernel_layout="OIW")
  np.testing.assert_allclose(
    out[0, 0], [(1 + 1j) * 1j + (2 - 1j) * 2, (2 - 1j) * 1j + 0.5j * 2], rtol=1e-6
  )


def test_preferred_element_type_float32_with_bfloat16_inputs():
  x, k = _small_case(np.random.default_rng(14), jnp.bfloat16)
  out = fc.conv(x, k, flip=False, preferred_element_type=jnp.float32, **KW2D)
  assert out.dtype == jnp.float32
  expected = reference(
    np.asarray(x.astype(jnp.float32)),
    np.asarray(k.astype(jnp.float32)),
    flip=False,
    padding="SAME",
    strides=(2, 1),
  )
  # bf16 products are exact in f32; only the f32 accumulation rounds.
  assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_precision_highest_is_accepted():
  x, k = _small_case(np.random.default_rng(15), jnp.float32)
  expected = reference(np.asarray(x), np.asarray(k), flip=True, padding="SAME", strides=(2, 1))
  for precision in ("highest", lax.Precision.HIGHEST):
    out = fc.conv(x, k, flip=True, precision=precision, **KW2D)
    assert_close(out, expected, rtol=1e-6, atol=1e-6)


def test_numpy_and_jax_inputs_give_the_same_result():
  rng = np.random.default_rng(16)
  x, k = rand(rng, (1, 2, 5)), rand(rng, (3, 2, 2))
  kw = dict(flip=True, layout="NCW", kernel_layout="OIW", padding="FULL")
  np.testing.assert_array_equal(fc.conv(x, k, **kw), fc.conv(jnp.asarray(x), jnp.asarray(k), **kw))


# --- conventions ----------------------------------------------------------------------------

CONVENTIONS = {
  "pytorch": (False, "NC", "OI"),
  "flax": (False, "N{}C", "{}IO"),
  "lasagne": (True, "NC", "OI"),
}


def _convention_layouts(name: str, letters: str) -> tuple[str, str]:
  _, data, kern = CONVENTIONS[name]
  data = data.format(letters) if "{}" in data else data + letters
  kern = kern.format(letters) if "{}" in kern else kern + letters
  return data, kern


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("name", list(CONVENTIONS))
def test_convention_supplies_flip_and_layouts(name, n):
  rng = np.random.default_rng(17)
  letters = LETTERS[n]
  x, k = rand(rng, (1, 2, *[5] * n)), rand(rng, (3, 2, *[2] * n))
  flip = CONVENTIONS[name][0]
  layout, kernel_layout = _convention_layouts(name, letters)
  xl, kl = relayout(x, "NC" + letters, layout), relayout(k, "OI" + letters, kernel_layout)
  out = jconv(xl, kl, convention=name, padding=1)
  assert_close(out, relayout(reference(x, k, flip=flip, padding=1), "NC" + letters, layout))
  # An explicit flip wins over the convention's.
  out = jconv(xl, kl, convention=name, flip=not flip, padding=1)
  assert_close(out, relayout(reference(x, k, flip=not flip, padding=1), "NC" + letters, layout))


@pytest.mark.parametrize("name", list(CONVENTIONS))
def test_explicit_layouts_win_over_the_conventions(name):
  rng = np.random.default_rng(19)
  x, k = rand(rng, (1, 2, 5, 4)), rand(rng, (3, 2, 2, 3))
  out = jconv(
    relayout(x, "NCHW", "NHCW"),
    relayout(k, "OIHW", "HOWI"),
    convention=name,
    layout="NHCW",
    kernel_layout="HOWI",
    padding=1,
  )
  expected = reference(x, k, flip=CONVENTIONS[name][0], padding=1)
  assert_close(out, relayout(expected, "NCHW", "NHCW"))


def test_convention_object_is_accepted():
  rng = np.random.default_rng(18)
  x, k = rand(rng, (1, 2, 5, 5)), rand(rng, (3, 2, 2, 2))
  out = fc.conv(x, k, convention=fc.get_convention("lasagne"))
  assert_close(out, reference(x, k, flip=True))
