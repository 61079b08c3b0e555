"""``fc.conv_transpose``: the adjoint of ``fc.conv``, its sizes, its program and its errors.

References, none of them flipconv's transpose: ``jax.linear_transpose`` of the
forward ``fc.conv`` (JAX's own transpose rule of ``lax.conv_general_dilated``),
a NumPy scatter loop (every input element adds ``y[i] * k[j]`` at ``i * s - lo +
j * d``), the inner-product identity ``<conv(x), y> == <x, conv_transpose(y)>``,
the documented size formulas (PyTorch's, TensorFlow's) and ``lax.conv_transpose``
/ ``flax.linen.ConvTranspose`` for the ``"tensorflow"`` size rule.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax import lax

import flipconv as fc

PADDING_NAMES = ("VALID", "SAME", "SAME_LOWER", "FULL", "HALF", "CAUSAL")

# (data layout, kernel layout) pairs per spatial rank: channels-last, channels-first,
# unbatched, and orders whose spatial letters or batch axis sit in odd places.
LAYOUTS = {
  1: [("NWC", "WIO"), ("NCW", "OIW"), ("CW", "WIO"), ("WNC", "IWO")],
  2: [("NHWC", "HWIO"), ("NCHW", "OIHW"), ("NWHC", "WHOI"), ("NCHW", "HWIO"), ("HWCN", "OHWI")],
  3: [("NDHWC", "DHWIO"), ("NCDHW", "OIDHW"), ("NWHDC", "WHDOI")],
}


# --- independent references -------------------------------------------------------------


def spatial_order(kernel_layout: str) -> str:
  """Per-dimension arguments follow the kernel layout's spatial letters (lax's rule)."""
  return "".join(c for c in kernel_layout if c not in "OI")


def laid_out(layout: str, order: str, sizes, **named) -> tuple[int, ...]:
  dims = {**dict(zip(order, sizes, strict=True)), **named}
  return tuple(dims[c] for c in layout)


def canonical(arr, layout: str, order: str, head: str = "NC") -> np.ndarray:
  """``arr`` transposed to ``head + order`` (a missing N is added in front)."""
  arr = np.asarray(arr)
  if head == "NC" and "N" not in layout:
    arr, layout = arr[None], "N" + layout
  return np.transpose(arr, [layout.index(c) for c in head + order])


def oracle_pads(padding, sizes, k_eff, strides):
  """Explicit (low, high) pads of the forward conv, from the API's definitions."""
  n = len(sizes)
  if isinstance(padding, str):
    name = padding.upper()
    if name in ("SAME", "SAME_LOWER"):
      return [tuple(p) for p in lax.padtype_to_pads(sizes, k_eff, strides, name)]
    return [
      {"VALID": (0, 0), "FULL": (k - 1, k - 1), "HALF": (k // 2, k // 2), "CAUSAL": (k - 1, 0)}[
        name
      ]
      for k in k_eff
    ]
  if isinstance(padding, int):
    return [(padding, padding)] * n
  return [(p, p) if isinstance(p, int) else tuple(p) for p in padding]


def numpy_conv_transpose(y, k, *, flip, strides, pads, dilation, groups, sizes):
  """Scatter form of the adjoint: x[i*s - lo + j*d] += y[i] * k[j], per group.

  ``y`` is ``(N, O, *m)``, ``k`` is ``(O, I, *ks)`` (forward letters); the result is
  ``(N, I * groups, *sizes)``.
  """
  n = len(strides)
  if flip:
    k = k[(slice(None), slice(None)) + (slice(None, None, -1),) * n]
  batch, o_all, m = y.shape[0], y.shape[1], y.shape[2:]
  i_per, ks = k.shape[1], k.shape[2:]
  o_per = o_all // groups
  big = [
    max((mm - 1) * s + (kk - 1) * d + 1, size + lo)
    for mm, s, kk, d, size, (lo, _) in zip(m, strides, ks, dilation, sizes, pads, strict=True)
  ]
  buf = np.zeros((batch, i_per * groups, *big), dtype=np.result_type(y, k))
  for j in np.ndindex(*ks):
    where = tuple(
      slice(jj * d, jj * d + (mm - 1) * s + 1, s)
      for jj, d, mm, s in zip(j, dilation, m, strides, strict=True)
    )
    for g in range(groups):
      o_sl, i_sl = slice(g * o_per, (g + 1) * o_per), slice(g * i_per, (g + 1) * i_per)
      buf[(slice(None), i_sl, *where)] += np.einsum(
        "no...,oi->ni...", y[:, o_sl], k[(o_sl, slice(None), *j)]
      )
  crop = tuple(slice(lo, lo + size) for (lo, _), size in zip(pads, sizes, strict=True))
  return buf[(slice(None), slice(None), *crop)]


# --- the property test ------------------------------------------------------------------


def paddings(n: int):
  small = st.integers(0, 2)
  return st.one_of(
    st.sampled_from([*PADDING_NAMES, "same", "Valid", "causal"]),
    small,
    st.lists(small, min_size=n, max_size=n),
    st.lists(st.tuples(small, small), min_size=n, max_size=n),
  )


def per_dim(n: int, lo: int, hi: int):
  return st.one_of(st.integers(lo, hi), st.tuples(*[st.integers(lo, hi)] * n))


def as_tuple(value, n: int) -> tuple[int, ...]:
  return (value,) * n if isinstance(value, int) else tuple(value)


def precision(groups: int, strides) -> tuple[type, float]:
  """float64 (tolerance 1e-10), except for grouped strided convs: float32 (2e-5).

  XLA's CPU compiler (jax 0.10.2) aborts the process (algebraic_simplifier.cc
  "Window dimensions do not match RHS shape") on some float64 grouped convs with
  lhs dilation; plain ``jax.grad`` of a float64 grouped strided lax conv hits it
  too. float32 is not affected.
  """
  if groups > 1 and any(s > 1 for s in np.atleast_1d(strides)):
    return np.float32, 2e-5
  return np.float64, 1e-10


def assert_same_inner_product(a, b, c, d, tol):
  """<a, b> == <c, d> up to tol relative to the norms (no cancellation trap)."""
  scale = np.linalg.norm(a) * np.linalg.norm(b) + np.linalg.norm(c) * np.linalg.norm(d)
  assert abs(np.vdot(a, b) - np.vdot(c, d)) <= tol * scale, (np.vdot(a, b), np.vdot(c, d))


@st.composite
def transpose_cases(draw):
  n = draw(st.integers(1, 3))
  layout, kernel_layout = draw(st.sampled_from(LAYOUTS[n]))
  ks = draw(st.tuples(*[st.integers(1, 3 if n < 3 else 2)] * n))
  strides = draw(per_dim(n, 1, 3))
  dilation = draw(per_dim(n, 1, 2))
  padding = draw(paddings(n))
  groups = draw(st.sampled_from([1, 2, 3]))
  depthwise = draw(st.booleans())  # one input channel per group: depthwise when groups > 1
  i_per = 1 if depthwise else draw(st.integers(1, 2))
  o_per = draw(st.integers(1, 2))
  k_eff = [(k - 1) * d + 1 for k, d in zip(ks, as_tuple(dilation, n), strict=True)]
  fixed = (
    None
    if isinstance(padding, str) and padding.upper().startswith("SAME")
    else oracle_pads(padding, [1] * n, k_eff, [1] * n)
  )
  sizes = []
  for dim, s in enumerate(as_tuple(strides, n)):
    smallest = 1 if fixed is None else max(1, k_eff[dim] - sum(fixed[dim]))
    sizes.append(smallest + draw(st.integers(0, 2 * s)))  # not only the minimal sizes
  return dict(
    conv=dict(
      flip=draw(st.booleans()),
      strides=strides,
      padding=padding,
      dilation=dilation,
      groups=groups,
      layout=layout,
      kernel_layout=kernel_layout,
    ),
    ks=ks,
    sizes=tuple(sizes),
    i_per=i_per,
    o_per=o_per,
    batch=draw(st.integers(1, 2)),
    size_by=draw(st.sampled_from(["output_shape", "output_padding", "default"])),
    seed=draw(st.integers(0, 2**16)),
  )


def documented_sizes(padding, m, k_eff, strides, pads):
  """x sizes for y sizes m, rule "pytorch": (what output_padding counts from, default).

  PyTorch's formula; for SAME the smallest size (m - 1) * s + 1 and the default m * s.
  A padding so large that the formula is < 1 leaves 1 as the smallest (and default) size.
  """
  same = isinstance(padding, str) and padding.upper().startswith("SAME")
  base, default = [], []
  for mm, k, s, (lo, hi) in zip(m, k_eff, strides, pads, strict=True):
    if same:
      base.append((mm - 1) * s + 1)
      default.append(mm * s)
    else:
      base.append((mm - 1) * s + k - lo - hi)
      default.append(max(base[-1], 1))
  return tuple(base), tuple(default)


@given(transpose_cases())
def test_conv_transpose_is_the_adjoint_of_conv(case):
  kw = case["conv"]
  layout, kernel_layout = kw["layout"], kw["kernel_layout"]
  order = spatial_order(kernel_layout)
  n, groups = len(order), kw["groups"]
  strides, dilation = as_tuple(kw["strides"], n), as_tuple(kw["dilation"], n)
  k_eff = [(k - 1) * d + 1 for k, d in zip(case["ks"], dilation, strict=True)]
  rng = np.random.default_rng(case["seed"])
  dtype, tol = precision(groups, strides)
  c_in, c_out = case["i_per"] * groups, case["o_per"] * groups
  kernel = rng.standard_normal(
    laid_out(kernel_layout, order, case["ks"], O=c_out, I=case["i_per"])
  ).astype(dtype)
  sizes = case["sizes"]
  with jax.enable_x64(True):
    x_struct = jax.ShapeDtypeStruct(laid_out(layout, order, sizes, N=case["batch"], C=c_in), dtype)
    y_shape = jax.eval_shape(lambda x: fc.conv(x, kernel, **kw), x_struct).shape
    m = tuple(y_shape[layout.index(c)] for c in order)
    pads = oracle_pads(kw["padding"], sizes, k_eff, strides)
    smallest, default = documented_sizes(kw["padding"], m, k_eff, strides, pads)
    if case["size_by"] == "default":
      sizes, size_kw = default, {}
      pads = oracle_pads(kw["padding"], sizes, k_eff, strides)
    elif case["size_by"] == "output_padding":
      size_kw = dict(output_padding=tuple(a - b for a, b in zip(sizes, smallest, strict=True)))
    else:
      size_kw = dict(output_shape=sizes)
    x = rng.standard_normal(laid_out(layout, order, sizes, N=case["batch"], C=c_in)).astype(dtype)
    y = rng.standard_normal(y_shape).astype(dtype)

    @jax.jit
    def run(x, y):
      forward = lambda x: fc.conv(x, kernel, **kw)
      (lt,) = jax.linear_transpose(forward, x)(y)
      return forward(x), fc.conv_transpose(y, kernel, **kw, **size_kw), lt

    fwd, ct, lt = run(x, y)
  assert fwd.shape == y.shape
  assert ct.shape == x.shape and ct.dtype == dtype
  np.testing.assert_allclose(ct, lt, rtol=tol, atol=tol)
  assert_same_inner_product(fwd, y, x, ct, tol)
  expected = numpy_conv_transpose(
    canonical(y, layout, order),
    canonical(kernel, kernel_layout, order, "OI"),
    flip=kw["flip"],
    strides=strides,
    pads=pads,
    dilation=dilation,
    groups=groups,
    sizes=sizes,
  )
  np.testing.assert_allclose(canonical(ct, layout, order), expected, rtol=tol, atol=tol)


# --- every padding form, grouped and depthwise, explicitly ---------------------------------


@pytest.mark.parametrize("padding", [*PADDING_NAMES, 1, (2, 0), ((0, 2), (1, 0))], ids=str)
def test_conv_transpose_is_adjoint_for_every_padding(padding):
  flip = isinstance(padding, str) and len(padding) % 2 == 0  # both flips across the list
  kw = dict(
    flip=flip,
    strides=(2, 3),
    padding=padding,
    dilation=(1, 2),
    groups=2,
    layout="NCHW",
    kernel_layout="OIHW",
  )
  rng = np.random.default_rng(0)
  dtype, tol = precision(2, (2, 3))
  kernel = rng.standard_normal((4, 3, 2, 3)).astype(dtype)  # O=4, I=3/group, groups=2
  x = rng.standard_normal((1, 6, 8, 11)).astype(dtype)  # not the smallest sizes for (2, 3)
  forward = lambda x: fc.conv(x, kernel, **kw)
  y = rng.standard_normal(jax.eval_shape(forward, x).shape).astype(dtype)
  ct = fc.conv_transpose(y, kernel, **kw, output_shape=(8, 11))
  (lt,) = jax.linear_transpose(forward, x)(y)
  np.testing.assert_allclose(ct, lt, rtol=tol, atol=tol)
  assert_same_inner_product(forward(x), y, x, ct, tol)
  pads = oracle_pads(padding, (8, 11), (2, 5), (2, 3))
  expected = numpy_conv_transpose(
    y, kernel, flip=flip, strides=(2, 3), pads=pads, dilation=(1, 2), groups=2, sizes=(8, 11)
  )
  np.testing.assert_allclose(ct, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("flip", [False, True])
def test_depthwise_conv_transpose_matches_numpy(flip):
  channels, multiplier = 3, 2
  rng = np.random.default_rng(1)
  kernel = rng.standard_normal((3, 3, 1, channels * multiplier))  # HWIO, I = 1
  y = rng.standard_normal((2, 4, 5, channels * multiplier)).astype(np.float32)
  out = fc.conv_transpose(y, kernel, flip=flip, strides=2, padding="SAME", groups=channels)
  assert out.shape == (2, 8, 10, channels)
  pads = oracle_pads("SAME", (8, 10), (3, 3), (2, 2))
  expected = numpy_conv_transpose(
    canonical(y, "NHWC", "HW"),
    canonical(kernel, "HWIO", "HW", "OI"),
    flip=flip,
    strides=(2, 2),
    pads=pads,
    dilation=(1, 1),
    groups=channels,
    sizes=(8, 10),
  )
  np.testing.assert_allclose(canonical(out, "NHWC", "HW"), expected, rtol=1e-5, atol=1e-5)


def test_out_layout_and_dimension_numbers():
  rng = np.random.default_rng(2)
  kernel = rng.standard_normal((2, 3, 4, 1)).astype(np.float32)  # HWOI: O = 4
  y = rng.standard_normal((1, 4, 5, 6)).astype(np.float32)  # NCHW
  kw = dict(flip=True, strides=(1, 2), padding="FULL")
  ref = fc.conv_transpose(y, kernel, layout="NCHW", kernel_layout="HWOI", **kw)
  out = fc.conv_transpose(y, kernel, layout="NCHW", kernel_layout="HWOI", out_layout="NHWC", **kw)
  np.testing.assert_array_equal(out, np.transpose(ref, (0, 2, 3, 1)))
  dn = lax.ConvDimensionNumbers(lhs_spec=(0, 1, 2, 3), rhs_spec=(2, 3, 0, 1), out_spec=(0, 3, 1, 2))
  np.testing.assert_array_equal(fc.conv_transpose(y, kernel, layout=dn, **kw), out)
  pads = oracle_pads("FULL", ref.shape[2:], (2, 3), (1, 2))
  expected = numpy_conv_transpose(
    y,
    canonical(kernel, "HWOI", "HW", "OI"),
    flip=True,
    strides=(1, 2),
    pads=pads,
    dilation=(1, 1),
    groups=1,
    sizes=ref.shape[2:],
  )
  np.testing.assert_allclose(ref, expected, rtol=1e-5, atol=1e-5)


# --- the lowered program: one convolution, input dilation = strides, no needless reverse ---


def count(pattern: str, text: str) -> int:
  return len(re.findall(pattern, text))


@pytest.mark.parametrize(
  "layout,kernel_layout,strides,padding,groups",
  [
    ("NWC", "WIO", (3,), "VALID", 1),
    ("NCHW", "OIHW", (2, 3), "SAME", 1),
    ("NHWC", "OHWI", (2, 1), ((1, 0), (2, 2)), 1),
    ("NCDHW", "DHWIO", (1, 2, 2), "CAUSAL", 1),
    ("NCHW", "OIHW", (2, 2), "SAME_LOWER", 2),
  ],
  ids=["1d", "2d", "2d-pairs", "3d", "2d-groups"],
)
@pytest.mark.parametrize("flip", [True, False])
def test_lowers_to_one_convolution_without_a_needless_reverse(
  layout, kernel_layout, strides, padding, groups, flip
):
  n = len(strides)
  order = spatial_order(kernel_layout)
  kernel = np.ones(laid_out(kernel_layout, order, (3,) * n, O=4, I=2), np.float32)
  y = np.ones(laid_out(layout, order, (4,) * n, N=1, C=4), np.float32)
  f = lambda y, k: fc.conv_transpose(
    y,
    k,
    flip=flip,
    strides=strides,
    padding=padding,
    groups=groups,
    layout=layout,
    kernel_layout=kernel_layout,
  )
  text = jax.jit(f).lower(y, kernel).as_text()
  assert count(r"stablehlo\.convolution\b", text) == 1, text
  assert count(r"stablehlo\.reverse\b", text) == (0 if flip else 1), text
  assert f"lhs_dilate = [{', '.join(map(str, strides))}]" in text, text
  # No transpose rule at run time: nothing but the conv, the kernel's regrouping and a reverse.
  assert "stablehlo.pad" not in text and "scatter" not in text, text


# --- jit, grad, vmap --------------------------------------------------------------------


def test_jit_grad_and_vmap():
  rng = np.random.default_rng(3)
  kernel = rng.standard_normal((3, 2, 4)).astype(np.float32)  # OIW: O = 3
  ys = rng.standard_normal((5, 3, 6)).astype(np.float32)  # five unbatched CW inputs
  w = rng.standard_normal((5, 2, 12)).astype(np.float32)
  kw = dict(flip=True, strides=2, padding="SAME", layout="CW", kernel_layout="OIW")
  ct = lambda y, k: fc.conv_transpose(y, k, **kw)
  batched = fc.conv_transpose(ys, kernel, **{**kw, "layout": "NCW"})
  pads = oracle_pads("SAME", (12,), (4,), (2,))
  expected = numpy_conv_transpose(
    ys, kernel, flip=True, strides=(2,), pads=pads, dilation=(1,), groups=1, sizes=(12,)
  )
  np.testing.assert_allclose(batched, expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(
    jax.jit(jax.vmap(ct, (0, None)))(ys, kernel), expected, rtol=1e-5, atol=1e-5
  )
  kernels = rng.standard_normal((2, 3, 2, 4)).astype(np.float32)
  for b, k in enumerate(kernels):  # vmap over the kernel too
    np.testing.assert_allclose(
      jax.vmap(ct, (None, 0))(ys[0], kernels)[b], ct(ys[0], k), rtol=1e-6, atol=1e-6
    )

  # d<conv_transpose(y), w>/dy = conv(w): the adjoint of the adjoint.
  loss = lambda y, k, w: jnp.vdot(fc.conv_transpose(y, k, **{**kw, "layout": "NCW"}), w)
  grad_y, grad_k = jax.jit(jax.grad(loss, argnums=(0, 1)))(ys, kernel, w)
  conv_kw = {**kw, "layout": "NCW"}
  np.testing.assert_allclose(grad_y, fc.conv(w, kernel, **conv_kw), rtol=1e-5, atol=1e-5)
  # d/dk of the same loss written with JAX's own transpose of conv.
  ref_loss = lambda y, k, w: jnp.vdot(
    jax.linear_transpose(lambda x: fc.conv(x, k, **conv_kw), w)(y)[0], w
  )
  np.testing.assert_allclose(
    grad_k, jax.grad(ref_loss, argnums=1)(ys, kernel, w), rtol=1e-4, atol=1e-4
  )


# --- output sizes -------------------------------------------------------------------------


def out_sizes(y_spatial, kernel_spatial, **kw):
  """Spatial output sizes for NCW/NCHW input, computed without compiling."""
  n = len(y_spatial)
  sp = "HW"[2 - n :]
  y = jax.ShapeDtypeStruct((1, 2, *y_spatial), jnp.float32)
  k = jax.ShapeDtypeStruct((2, 1, *kernel_spatial), jnp.float32)
  kw.setdefault("flip", False)
  return jax.eval_shape(
    lambda y, k: fc.conv_transpose(y, k, layout="NC" + sp, kernel_layout="OI" + sp, **kw), y, k
  ).shape[2:]


def test_default_size_and_output_padding_follow_pytorch_formula():
  for m, k, s, d, p in np.ndindex(3, 4, 3, 2, 3):
    m, k, s, d = m + 1, k + 1, s + 1, d + 1
    base = (m - 1) * s - 2 * p + d * (k - 1) + 1
    if base + s - 1 < 1:  # no size maps to m
      with pytest.raises(ValueError, match=rf"padding \({p}, {p}\) .* too large"):
        out_sizes((m,), (k,), strides=s, padding=p, dilation=d)
    else:  # PyTorch's formula, or 1 where the padding makes it empty (PyTorch raises there)
      assert out_sizes((m,), (k,), strides=s, padding=p, dilation=d) == (max(base, 1),)
    for op in range(max(s, d)):  # PyTorch's formula + output_padding, as torch computes it
      if base + op < 1:
        with pytest.raises(ValueError, match=f"output_padding \\({op},\\)"):
          out_sizes((m,), (k,), strides=s, padding=p, dilation=d, output_padding=op)
      else:
        assert out_sizes((m,), (k,), strides=s, padding=p, dilation=d, output_padding=op) == (
          base + op,
        )
  # Per-dimension pairs, strides, dilations and output padding, in 2-D.
  assert out_sizes(
    (4, 5), (3, 2), strides=(2, 3), padding=((1, 0), (0, 2)), dilation=(2, 1), output_padding=(1, 2)
  ) == (3 * 2 - 1 + 2 * 2 + 1 + 1, 4 * 3 - 2 + 1 + 1 + 2)
  assert out_sizes((4,), (3,), strides=2, padding="VALID") == (3 * 2 + 3,)


def test_default_size_of_size_independent_strings():
  m, k, s, d = 5, 4, 3, 2
  k_eff = d * (k - 1) + 1
  for padding, (lo, hi) in [
    ("FULL", (k_eff - 1, k_eff - 1)),
    ("HALF", (k_eff // 2,) * 2),
    ("CAUSAL", (k_eff - 1, 0)),
  ]:
    assert out_sizes((m,), (k,), strides=s, padding=padding, dilation=d) == (
      (m - 1) * s + k_eff - lo - hi,
    )


@pytest.mark.parametrize("convention", [None, "pytorch", "flax"])
def test_same_default_is_input_times_stride_and_output_padding_counts_from_the_smallest(convention):
  kw = {"convention": convention} if convention else {}
  for m, k, s in np.ndindex(3, 4, 3):
    m, k, s = m + 1, k + 1, s + 1
    for padding in ("SAME", "SAME_LOWER"):
      assert out_sizes((m, 2), (k, 1), strides=(s, 1), padding=padding, **kw) == (m * s, 2)
      for op in range(s):  # the smallest SAME size is (m - 1) * s + 1
        assert out_sizes(
          (m, 2), (k, 1), strides=(s, 1), padding=padding, output_padding=(op, 0), **kw
        ) == ((m - 1) * s + 1 + op, 2)


def test_tensorflow_size_rule_matches_flax_and_lax_conv_transpose():
  """VALID: m * s + max(k_eff - s, 0); SAME: m * s; for flax.linen.ConvTranspose and lax."""
  nn = pytest.importorskip("flax.linen")
  m = 4
  y = jax.ShapeDtypeStruct((1, m, 3), jnp.float32)
  for k, s, d in np.ndindex(5, 3, 2):
    k, s, d = k + 1, s + 1, d + 1
    k_eff = d * (k - 1) + 1
    kernel = jax.ShapeDtypeStruct((k, 3, 2), jnp.float32)  # flax stores (k, in_t, out_t)
    for padding, rule in [("VALID", m * s + max(k_eff - s, 0)), ("SAME", m * s)]:
      ours = jax.eval_shape(
        functools.partial(
          fc.conv_transpose, convention="flax", strides=s, padding=padding, dilation=d
        ),
        y,
        kernel,
      )
      ref = jax.eval_shape(
        functools.partial(
          lax.conv_transpose,
          strides=(s,),
          padding=padding,
          rhs_dilation=(d,),
          dimension_numbers=("NWC", "WIO", "NWC"),
        ),
        y,
        kernel,
      )
      module = nn.ConvTranspose(
        2, (k,), strides=(s,), padding=padding, kernel_dilation=(d,), use_bias=False
      )
      out, params = jax.eval_shape(functools.partial(module.init_with_output, jax.random.key(0)), y)
      assert params["params"]["kernel"].shape == kernel.shape
      assert ours.shape == ref.shape == out.shape == (1, rule, 2), (k, s, d, padding)


@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_flax_convention_equals_lax_conv_transpose(padding):
  rng = np.random.default_rng(4)
  y = rng.standard_normal((2, 5, 6, 3)).astype(np.float32)
  kernel = rng.standard_normal((4, 3, 3, 2)).astype(np.float32)  # (kh, kw, in_t, out_t)
  for strides in [(1, 1), (2, 3), (3, 2)]:
    ref = lax.conv_transpose(
      y, kernel, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    ours = fc.conv_transpose(y, kernel, convention="flax", strides=strides, padding=padding)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


def test_output_padding_beyond_the_stride_pads_y_with_zeros():
  """output_padding in [stride, dilation): the transpose of a larger conv, y zero-padded."""
  rng = np.random.default_rng(5)
  kernel = rng.standard_normal((2, 3, 3))  # OIW
  y = rng.standard_normal((1, 2, 4))
  kw = dict(flip=False, strides=1, padding=1, dilation=3, layout="NCW", kernel_layout="OIW")
  with jax.enable_x64(True):
    out = fc.conv_transpose(y, kernel, **kw, output_padding=2)
    size = out.shape[-1]
    assert size == 3 * 1 + 3 * 2 + 1 - 2 + 2
    forward = lambda x: fc.conv(x, kernel, **kw)
    x = jax.ShapeDtypeStruct((1, 3, size), jnp.float64)
    m_big = jax.eval_shape(forward, x).shape[-1]
    (ref,) = jax.linear_transpose(forward, x)(np.pad(y, ((0, 0), (0, 0), (0, m_big - 4))))
  np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-10)


# --- errors -------------------------------------------------------------------------------

Y = np.ones((1, 4, 5), np.float32)  # NCW, 4 channels
K = np.ones((4, 2, 3), np.float32)  # OIW, O = 4


def ct(y=Y, k=K, **kw):
  kw.setdefault("flip", False)
  return fc.conv_transpose(y, k, layout="NCW", kernel_layout="OIW", **kw)


@pytest.mark.parametrize(
  "kw,error,words",
  [
    (
      dict(strides=2, output_padding=2),
      ValueError,
      ["output_padding 2", "stride (2)", "dilation (1)"],
    ),
    (dict(strides=2, dilation=3, output_padding=3), ValueError, ["output_padding 3"]),
    (dict(output_padding=-1), ValueError, ["output_padding", "-1", ">= 0"]),
    (dict(output_padding=(0, 0)), ValueError, ["output_padding", "2 values", "1 spatial"]),
    (dict(output_padding=0.5), TypeError, ["output_padding", "0.5"]),
    (dict(strides=2, output_shape=13), ValueError, ["output_shape (13,)", "11..12", "not 13"]),
    (dict(strides=2, output_shape=10), ValueError, ["output_shape (10,)", "11..12", "not 10"]),
    (
      dict(strides=2, padding="SAME", output_shape=11),
      ValueError,
      ["output_shape (11,)", "9..10", "not 11"],
    ),
    (dict(output_shape=(7, 7)), ValueError, ["output_shape", "2 values"]),
    (dict(output_shape=0), ValueError, ["output_shape", ">= 1"]),
    (dict(output_padding=0, output_shape=7), ValueError, ["output_padding or output_shape"]),
    (dict(padding=4), ValueError, ["padding (4, 4)", "too large"]),
    (dict(groups=3), ValueError, ["groups=3", "4 channels"]),
    (dict(groups=0), ValueError, ["groups", "0"]),
    (dict(groups=2.0), TypeError, ["groups", "2.0"]),
    (dict(padding="SAMEE"), ValueError, ["padding", "SAMEE", "did you mean"]),
    (dict(strides=0), ValueError, ["strides", ">= 1"]),
    (dict(flip=None), ValueError, ["flip=True", "convention"]),
  ],
)
def test_bad_arguments_name_the_argument(kw, error, words):
  with pytest.raises(error) as info:
    ct(**kw)
  for word in words:
    assert word in str(info.value), (word, str(info.value))


def test_output_shape_in_range_is_accepted_at_both_ends():
  assert ct(strides=2, output_shape=11).shape == (1, 2, 11)
  assert ct(strides=2, output_shape=12).shape == (1, 2, 12)
  assert ct(strides=2, padding="SAME", output_shape=9).shape == (1, 2, 9)


@pytest.mark.parametrize(
  "y,k,words",
  [
    (np.ones((1, 3, 5)), K, ["x has 3 channels", "4 output channels (O)"]),
    (np.ones((1, 4, 5, 5)), K, ["x has rank 4", "'NCW'"]),
    (Y, np.ones((4, 2, 3, 3)), ["kernel has rank 4", "'OIW'"]),
    (np.ones((1, 4, 0)), K, ["empty spatial axis"]),
  ],
)
def test_shape_errors_name_the_shapes(y, k, words):
  with pytest.raises(ValueError) as info:
    ct(y, k)
  for word in words:
    assert word in str(info.value), (word, str(info.value))


def test_same_rule_is_a_size_rule_not_a_guess():
  """Every size conv_transpose can return maps back to y's size under the forward conv."""
  for padding in ["SAME", "SAME_LOWER", "VALID", 1, "HALF"]:
    for s in (1, 2, 3):
      for op in range(s):
        size = out_sizes((5,), (4,), strides=s, padding=padding, output_padding=op)
        x = jax.ShapeDtypeStruct((1, 1, *size), jnp.float32)
        k = jax.ShapeDtypeStruct((2, 1, 4), jnp.float32)
        m = jax.eval_shape(
          functools.partial(
            lax.conv_general_dilated,
            window_strides=(s,),
            padding=oracle_pads(padding, size, (4,), (s,)),
            dimension_numbers=("NCW", "OIW", "NCW"),
          ),
          x,
          k,
        ).shape[-1]
        assert m == 5, (padding, s, op, size)
