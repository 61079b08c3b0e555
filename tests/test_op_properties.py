"""Properties of ``fc.conv`` / ``convolve`` / ``correlate`` / ``flip_kernel``.

Identities that must hold for any arguments (convolve is correlate with the
flipped kernel, flip twice is the identity, a layout is only a transposition,
SAME keeps ``ceil(in / stride)``), their behaviour under ``jit``, ``grad`` and
``vmap``, and the program they lower to, compared with a direct
``lax.conv_general_dilated``.
"""

from __future__ import annotations

import functools
import logging
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax
from jax.test_util import check_grads

import flipconv as fc
from _reference import np_conv

LETTERS = {1: "W", 2: "HW", 3: "DHW"}
# Each example of a jit/no-jit pair compiles several programs: half the profile's examples
# per variant keeps the pair at the profile's cost.
HALF_EXAMPLES = settings(max_examples=max(1, settings.default.max_examples // 2))
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def relayout(arr, src: str, dst: str) -> np.ndarray:
  """``arr`` laid out as ``src`` transposed to ``dst`` (the same letters)."""
  return np.transpose(np.asarray(arr), [src.index(c) for c in dst])


@st.composite
def layouts(draw, n: int | None = None):
  """(spatial rank, data layout, kernel layout, out layout), in random letter orders."""
  n = n or draw(st.integers(1, 3))
  letters = LETTERS[n]
  layout = "".join(draw(st.permutations("NC" + letters)))
  kernel_layout = "".join(draw(st.permutations("OI" + letters)))
  out_layout = "".join(draw(st.permutations("NC" + letters)))
  return n, layout, kernel_layout, out_layout


@st.composite
def conv_problems(draw):
  """Arrays and arguments of a small conv in random layouts (shapes in canonical NC/OI order)."""
  n, layout, kernel_layout, out_layout = draw(layouts())
  groups = draw(st.integers(1, 2))
  ks = tuple(draw(st.integers(1, 3)) for _ in range(n))
  sizes = tuple(draw(st.integers(1, 6)) for _ in range(n))
  kw = dict(
    strides=tuple(draw(st.integers(1, 2)) for _ in range(n)),
    dilation=tuple(draw(st.integers(1, 2)) for _ in range(n)),
    padding=draw(st.sampled_from(["SAME", "SAME_LOWER", "FULL", "CAUSAL"])),
    groups=groups,
  )
  seed = draw(st.integers(0, 2**32 - 1))
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((2, 2 * groups, *sizes)).astype(np.float32)
  k = rng.standard_normal((2 * groups, 2, *ks)).astype(np.float32)
  return n, layout, kernel_layout, out_layout, x, k, kw


# --- identities, with and without jit ----------------------------------------------------


class OpIdentitiesTest(chex.TestCase):
  """Identities of the main paths, each run eagerly and under ``jax.jit``."""

  @chex.variants(with_jit=True, without_jit=True)
  @HALF_EXAMPLES
  @given(conv_problems())
  def test_convolve_is_correlate_with_flipped_kernel(self, problem):
    n, layout, kernel_layout, out_layout, x, k, kw = problem
    letters = LETTERS[n]
    xl, kl = relayout(x, "NC" + letters, layout), relayout(k, "OI" + letters, kernel_layout)
    lay = dict(layout=layout, kernel_layout=kernel_layout, out_layout=out_layout)
    convolve = self.variant(lambda a, b: fc.convolve(a, b, **lay, **kw))
    correlate = self.variant(lambda a, b: fc.correlate(a, b, **lay, **kw))
    chex.assert_trees_all_equal(convolve(xl, kl), correlate(xl, fc.flip_kernel(kl, kernel_layout)))

  @chex.variants(with_jit=True, without_jit=True)
  def test_conv_equals_the_numpy_reference(self):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 4, 6, 5)).astype(np.float32)
    k = rng.standard_normal((6, 2, 3, 2)).astype(np.float32)
    pads = ((0, 1), (1, 1))  # SAME for these sizes, strides and dilation
    for flip in (False, True):
      f = self.variant(
        lambda a, b, flip=flip: fc.conv(
          a,
          b,
          flip=flip,
          layout="NCHW",
          kernel_layout="OIHW",
          padding="SAME",
          strides=(2, 1),
          dilation=(1, 2),
          groups=2,
        )
      )
      expected = np_conv(
        x.astype(np.float64),
        k.astype(np.float64),
        flip=flip,
        strides=(2, 1),
        pads=pads,
        dilation=(1, 2),
        input_dilation=(1, 1),
        groups=2,
      )
      chex.assert_trees_all_close(
        np.asarray(f(x, k)), expected.astype(np.float32), rtol=1e-5, atol=1e-5
      )

  @chex.variants(with_jit=True, without_jit=True)
  def test_vmap_over_kernels_equals_a_loop(self):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    ks = rng.standard_normal((4, 5, 3, 2, 3)).astype(np.float32)  # 4 kernels OIHW
    kw = dict(flip=True, layout="NCHW", kernel_layout="OIHW", strides=(2, 1), padding="SAME")
    batched = self.variant(jax.vmap(lambda k: fc.conv(x, k, **kw)))(ks)
    loop = np.stack([np.asarray(fc.conv(x, k, **kw)) for k in ks])
    chex.assert_trees_all_close(np.asarray(batched), loop, rtol=1e-5, atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_vmap_of_unbatched_layout_equals_batched_layout(self):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2, 6, 5)).astype(np.float32)
    k = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    kw = dict(flip=False, kernel_layout="OIHW", padding=1, pad_mode="circular")
    vmapped = self.variant(jax.vmap(lambda a: fc.conv(a, k, layout="CHW", **kw)))(x)
    batched = fc.conv(x, k, layout="NCHW", **kw)
    chex.assert_trees_all_close(np.asarray(vmapped), np.asarray(batched), rtol=1e-5, atol=1e-5)


@given(conv_problems())
def test_permuting_the_layouts_permutes_the_output(problem):
  n, layout, kernel_layout, out_layout, x, k, kw = problem
  letters = LETTERS[n]
  base = jax.jit(
    lambda a, b: fc.conv(
      a, b, flip=True, layout="NC" + letters, kernel_layout="OI" + letters, **kw
    ),
    compiler_options=FAST_COMPILE,
  )(x, k)
  # The per-dimension arguments follow the kernel layout's spatial order: reorder them.
  order = [letters.index(c) for c in kernel_layout if c not in "OI"]
  kw2 = {**kw, **{name: tuple(kw[name][i] for i in order) for name in ("strides", "dilation")}}
  permuted = jax.jit(
    lambda a, b: fc.conv(
      a, b, flip=True, layout=layout, kernel_layout=kernel_layout, out_layout=out_layout, **kw2
    ),
    compiler_options=FAST_COMPILE,
  )
  out = permuted(relayout(x, "NC" + letters, layout), relayout(k, "OI" + letters, kernel_layout))
  expected = relayout(base, "NC" + letters, out_layout)
  chex.assert_trees_all_close(np.asarray(out), expected, rtol=1e-5, atol=1e-5)


# --- flip_kernel ---------------------------------------------------------------------------


@given(
  layouts(),
  st.sampled_from([np.float32, np.float16, np.int32, np.complex64]),
  st.integers(0, 2**32 - 1),
)
def test_flip_kernel_is_np_flip_on_exactly_the_spatial_axes_and_an_involution(lay, dtype, seed):
  n, _, kernel_layout, _ = lay
  rng = np.random.default_rng(seed)
  k = (rng.standard_normal(rng.integers(1, 4, size=n + 2)) * 10).astype(dtype)
  once = fc.flip_kernel(k, kernel_layout)
  spatial = tuple(i for i, c in enumerate(kernel_layout) if c not in "OI")
  assert once.dtype == k.dtype and once.shape == k.shape
  np.testing.assert_array_equal(once, np.flip(k, axis=spatial))
  np.testing.assert_array_equal(fc.flip_kernel(once, kernel_layout), k)


def test_flip_kernel_keeps_the_channel_axes_in_place():
  k = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)  # "IWO": W is axis 1
  out = np.asarray(fc.flip_kernel(k, "IWO"))
  np.testing.assert_array_equal(out[:, ::-1, :], k)
  np.testing.assert_array_equal(out.sum(axis=1), k.sum(axis=1))  # per-(I, O) content kept


# --- output sizes ------------------------------------------------------------------------


@given(st.integers(1, 3), st.data())
def test_same_and_same_lower_keep_ceil_of_input_over_stride(n, data):
  ints = functools.partial(data.draw, st.lists(st.integers(1, 4), min_size=n, max_size=n))
  sizes = data.draw(st.lists(st.integers(1, 9), min_size=n, max_size=n))
  ks, strides, dilation, input_dilation = ints(), ints(), ints(), ints()
  letters = LETTERS[n]
  x = jax.ShapeDtypeStruct((1, 2, *sizes), jnp.float32)
  k = jax.ShapeDtypeStruct((3, 2, *ks), jnp.float32)
  dilated = [(s - 1) * d + 1 for s, d in zip(sizes, input_dilation, strict=True)]
  expected = (1, 3, *(-(-s // st_) for s, st_ in zip(dilated, strides, strict=True)))
  for padding in ("SAME", "SAME_LOWER", "same"):
    out = jax.eval_shape(
      lambda a, b, p=padding: fc.conv(
        a,
        b,
        flip=False,
        layout="NC" + letters,
        kernel_layout="OI" + letters,
        padding=p,
        strides=strides,
        dilation=dilation,
        input_dilation=input_dilation,
      ),
      x,
      k,
    )
    assert out.shape == expected, (padding, sizes, ks, strides, dilation, input_dilation)


# --- grad ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
  ("flip", "kw"),
  [
    (False, dict(padding="SAME", strides=(2, 1), dilation=(1, 2))),
    (True, dict(padding=((1, 0), (2, 1)), groups=2)),
    (True, dict(padding=1, pad_mode="reflect")),
  ],
  ids=["correlate-same-strided-dilated", "convolve-pairs-groups", "convolve-reflect"],
)
def test_gradients_match_finite_differences(flip, kw):
  # float64: finite differences in float32 are too coarse for a tight check. (Grouped
  # strided float64 convs are avoided: XLA's CPU compiler aborts on some, see test_transpose.)
  with jax.enable_x64(True):
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((1, 4, 5, 4)))
    k = jnp.asarray(rng.standard_normal((2, 4 // kw.get("groups", 1), 3, 2)))
    f = jax.jit(lambda a, b: fc.conv(a, b, flip=flip, layout="NCHW", kernel_layout="OIHW", **kw))
    check_grads(f, (x, k), order=1, modes=["rev"])


# --- tracing and compilation -------------------------------------------------------------


def test_no_retrace_for_the_same_shapes():
  traces = []

  @jax.jit
  def f(x, k):
    traces.append(x.shape)
    return fc.convolve(x, k, layout="NCW", kernel_layout="OIW", padding="SAME", strides=2)

  rng = np.random.default_rng(3)
  for _ in range(3):
    f(
      rng.standard_normal((1, 2, 9)).astype(np.float32),
      rng.standard_normal((3, 2, 4)).astype(np.float32),
    )
  assert len(traces) == 1 and f._cache_size() == 1
  f(np.ones((1, 2, 10), np.float32), np.ones((3, 2, 4), np.float32))
  assert len(traces) == 2 and f._cache_size() == 2


def test_eager_calls_compile_once_per_shape(caplog):
  rng = np.random.default_rng(4)
  kw = dict(flip=True, layout="NCHW", kernel_layout="OIHW", padding="SAME", strides=(2, 1))

  def compiles_during(shapes):
    caplog.clear()
    with jax.log_compiles(True), caplog.at_level(logging.DEBUG):
      for x_shape, k_shape in shapes:
        x = rng.standard_normal(x_shape).astype(np.float32)
        k = rng.standard_normal(k_shape).astype(np.float32)
        fc.conv(x, k, **kw).block_until_ready()
    return [r.getMessage() for r in caplog.records if "ompil" in r.getMessage()]

  # Shapes no other test uses: the first call compiles (which shows the log is seen) ...
  assert compiles_during([((1, 2, 5, 13), (3, 2, 3, 2))])
  # ... and calls with new values of the same shapes compile nothing.
  assert compiles_during([((1, 2, 5, 13), (3, 2, 3, 2))] * 2) == []


def _ops(fn, *args) -> list[tuple[str, str]]:
  """``(result name, op)`` for each stablehlo op of ``jit(fn)``'s body, without locations."""
  text = jax.jit(fn).lower(*args).as_text()
  body = text[text.index("func.func public @main") :].splitlines()[1:]
  ops = []
  for line in body:
    line = re.sub(r"\s*loc\(.*\)$", "", line.strip())
    match = re.match(r"^(%\S+) = (.*)$", line)
    if match:
      ops.append((match.group(1), match.group(2)))
  return ops


HLO_CASES = {
  "2d-nchw-same-groups": (
    (2, 4, 7, 6),
    (6, 2, 3, 2),
    ("NCHW", "OIHW", "NCHW"),
    dict(padding="SAME", strides=(2, 1), groups=2),
  ),
  "1d-nwc-dilated": (
    (1, 9, 3),
    (3, 3, 4),
    ("NWC", "WIO", "NWC"),
    dict(padding=((2, 1),), dilation=2, input_dilation=2),
  ),
  "3d-to-channels-last": (
    (1, 2, 4, 5, 3),
    (2, 3, 2, 2, 3),
    ("NCDHW", "DHWIO", "NDHWC"),
    dict(padding="VALID", strides=(1, 2, 1)),
  ),
}


@pytest.mark.parametrize("case", list(HLO_CASES.values()), ids=list(HLO_CASES))
def test_correlate_lowers_to_the_direct_lax_call_and_convolve_adds_one_reverse(case):
  x_shape, k_shape, dn, kw = case
  x, k = jnp.zeros(x_shape), jnp.zeros(k_shape)
  n = len(x_shape) - 2
  per = lambda name: (kw.get(name, 1),) * n if isinstance(kw.get(name, 1), int) else kw[name]
  padding = kw["padding"]  # "SAME", "VALID" or pairs: lax takes each as it is here

  def direct(a, b):
    return lax.conv_general_dilated(
      a,
      b,
      window_strides=per("strides"),
      padding=padding,
      lhs_dilation=per("input_dilation"),
      rhs_dilation=per("dilation"),
      dimension_numbers=dn,
      feature_group_count=kw.get("groups", 1),
    )

  lay = dict(layout=dn[0], kernel_layout=dn[1], out_layout=dn[2])
  expected = [op for _, op in _ops(direct, x, k)]
  assert [op for _, op in _ops(lambda a, b: fc.correlate(a, b, **lay, **kw), x, k)] == expected
  convolve = _ops(lambda a, b: fc.convolve(a, b, **lay, **kw), x, k)
  spatial = [i for i, c in enumerate(dn[1]) if c not in "OI"]
  reverses = [(name, op) for name, op in convolve if op.startswith("stablehlo.reverse")]
  assert len(reverses) == 1, convolve
  name, op = reverses[0]
  assert op.startswith(f"stablehlo.reverse %arg1, dims = {spatial} :"), op
  # Apart from the reverse, the same program, with the reversed kernel in place of %arg1.
  rest = [re.sub(rf"{name}\b", "%arg1", op) for n_, op in convolve if n_ != name]
  assert rest == expected


if __name__ == "__main__":
  absltest.main()
