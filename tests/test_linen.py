"""``fc.linen.Conv`` and ``fc.linen.ConvTranspose`` against flax.linen, the oracle.

With the default ``convention="flax"`` the modules must be drop-in replacements
for ``flax.linen.Conv`` / ``ConvTranspose``: the same parameter tree, the same
initial values for the same key, the same output for the same parameters. For
every other convention the same key must give the Flax kernel converted by
``fc.convert_kernel``, and the output for the input laid out as that convention
lays it out must be the Flax output laid out the same way.

Cost: these tests compile hundreds of tiny programs, and ``jax.random``
compiles anew for every shape, so XLA's optimisations are switched off while
they run, inputs and parameters are NumPy draws, the default initialiser runs on
two kernel shapes only, and the grids initialise with :func:`keyed_init`, a
cheap initialiser whose values still show the key and the shape it was given.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from jax import lax

import flipconv as fc
from _module_cases import (
  CONV_CASES,
  CONV_TRANSPOSE_CASES,
  FLAX_NNX_CASES,
  FLAX_NNX_TRANSPOSE_CASES,
  FRAMEWORK_KERNEL_SHAPES,
  LETTERS,
  OTHER_CONVENTIONS,
  TRANSPOSED,
  assert_close,
  conv_configs,
  conv_eqn_params,
  conv_transpose_configs,
  expected_kernel_shape,
  keyed_init,
  nd,
  normal,
  randomize,
  relayout,
)

nn = pytest.importorskip("flax.linen")
pytestmark = pytest.mark.usefixtures("cheap_compiles")  # tests/conftest.py

KEY = jax.random.key(0)


# --- helpers -----------------------------------------------------------------------------


def assert_like_flax(ours: nn.Module, theirs: nn.Module, x: Any, rtol: float = 1e-5) -> Any:
  """Same tree, bit-identical init for the same key, same output for the same parameters.

  Returns the (random) parameters the outputs were compared with.
  """
  p_theirs, p_ours = theirs.init(KEY, x), ours.init(KEY, x)
  assert jax.tree.structure(p_ours) == jax.tree.structure(p_theirs)
  chex.assert_trees_all_equal_shapes_and_dtypes(p_ours, p_theirs)
  chex.assert_trees_all_equal(p_ours, p_theirs)
  params = randomize(p_theirs)
  want, got = theirs.apply(params, x), ours.apply(params, x)
  assert got.dtype == want.dtype
  assert_close(got, want, rtol)
  return params


def pair(transposed: bool, *args: Any, convention: str = "flax", **kwargs: Any):
  """A flipconv module and the flax.linen module it should equal."""
  if transposed:
    return (
      fc.linen.ConvTranspose(*args, convention=convention, **kwargs),
      nn.ConvTranspose(*args, **kwargs),
    )
  return fc.linen.Conv(*args, convention=convention, **kwargs), nn.Conv(*args, **kwargs)


def fc_layer(transposed: bool, *args: Any, **kwargs: Any) -> nn.Module:
  return (fc.linen.ConvTranspose if transposed else fc.linen.Conv)(*args, **kwargs)


# --- convention="flax" is flax.linen ------------------------------------------------------


@pytest.mark.parametrize(
  ("transposed", "in_features", "features", "kwargs"),
  [
    pytest.param(False, 4, 6, {}, id="conv"),
    pytest.param(False, 8, 6, dict(feature_group_count=2, strides=2), id="conv-groups"),
    pytest.param(False, 4, 6, dict(use_bias=False, padding="VALID"), id="conv-no-bias"),
    pytest.param(True, 4, 6, dict(strides=2), id="transpose"),
    pytest.param(True, 6, 4, dict(strides=2, transpose_kernel=True), id="transpose-kernel"),
  ],
)
def test_default_init_is_flax_linens_bit_for_bit(transposed, in_features, features, kwargs):
  """Flax's kernel shape is (3, 2, 4, 6) in every case (one compile of jax.random)."""
  assert_like_flax(*pair(transposed, features, (3, 2), **kwargs), normal((2, 7, 6, in_features)))


@pytest.mark.parametrize(
  ("spatial", "in_features", "features", "kernel_size", "kwargs"), CONV_CASES
)
def test_conv_is_flax_linen_conv(spatial, in_features, features, kernel_size, kwargs):
  assert_like_flax(
    *pair(False, features, kernel_size, kernel_init=keyed_init, **kwargs),
    normal((2, *spatial, in_features)),
  )


@settings(max_examples=8)
@given(conv_configs())
def test_conv_is_flax_linen_conv_on_a_grid(config):
  spatial, features, kernel_size, kwargs = config
  assert_like_flax(
    *pair(False, features, kernel_size, kernel_init=keyed_init, **kwargs),
    normal((2, *spatial, 4), 3),
  )


@pytest.mark.parametrize("transpose_kernel", [False, True])
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("strides", [1, 2, 3])
def test_conv_transpose_is_flax_linen_conv_transpose(strides, padding, transpose_kernel):
  """Kernel (2, 5): smaller than, equal to and larger than the stride."""
  assert_like_flax(
    *pair(
      True,
      4,
      (2, 5),
      strides=strides,
      padding=padding,
      transpose_kernel=transpose_kernel,
      kernel_init=keyed_init,
    ),
    normal((2, 5, 4, 3)),
  )


@pytest.mark.parametrize(("spatial", "kernel_size", "kwargs"), CONV_TRANSPOSE_CASES)
def test_conv_transpose_is_flax_linen_conv_transpose_in_every_rank(spatial, kernel_size, kwargs):
  assert_like_flax(
    *pair(True, 4, kernel_size, kernel_init=keyed_init, **kwargs), normal((2, *spatial, 3))
  )


@settings(max_examples=8)
@given(conv_transpose_configs())
def test_conv_transpose_is_flax_linen_conv_transpose_on_a_grid(config):
  spatial, kernel_size, kwargs = config
  assert_like_flax(
    *pair(True, 2, kernel_size, kernel_init=keyed_init, **kwargs), normal((2, *spatial, 3), 4)
  )


def test_numeric_conv_transpose_padding_is_flax_linens():
  """Flax pads the stride-dilated input: (4, 2) with kernel (7, 4) dilated (2, 3) on (24, 9)."""
  x = normal((1, 24, 9, 3))
  kwargs = dict(padding=(4, 2), kernel_dilation=(2, 3), kernel_init=keyed_init)
  assert_like_flax(*pair(True, 6, (7, 4), **kwargs), x)
  y = fc.linen.ConvTranspose(6, (7, 4), **kwargs).init_with_output(KEY, x)[0]
  assert y.shape == (1, 20, 4, 6)


@pytest.mark.parametrize("strides", [1, 2])
def test_padding_meaning_forward_is_the_forward_convs(strides):
  """``padding_meaning="forward"``: flipconv.conv_transpose's (PyTorch's) meaning.

  The adjoint of a conv padded by ``(lo, hi)`` pads the dilated input by
  ``(k - 1 - lo, k - 1 - hi)``; ``output_padding`` adds at the high end.
  """
  k, pads, out_pad = (3, 4), ((1, 0), (2, 1)), (strides - 1, 0)
  flax_pads = tuple(
    (kk - 1 - lo, kk - 1 - hi + op) for kk, (lo, hi), op in zip(k, pads, out_pad, strict=True)
  )
  x = normal((2, 5, 4, 3))
  ours = dict(strides=strides, output_padding=out_pad, kernel_init=keyed_init)
  theirs = nn.ConvTranspose(4, k, strides=strides, padding=flax_pads, kernel_init=keyed_init)
  for meaning in ("forward", "pytorch"):
    layer = fc.linen.ConvTranspose(4, k, padding=pads, padding_meaning=meaning, **ours)
    assert_like_flax(layer, theirs, x)
  # The same module with Flax's meaning spelled out is Flax's layer with the same padding
  # (output_padding adding at the high end once more).
  layer = fc.linen.ConvTranspose(4, k, padding=flax_pads, padding_meaning="dilated_input", **ours)
  more = tuple((lo, hi + op) for (lo, hi), op in zip(flax_pads, out_pad, strict=True))
  assert_like_flax(
    layer, nn.ConvTranspose(4, k, strides=strides, padding=more, kernel_init=keyed_init), x
  )
  with pytest.raises(ValueError, match="padding_meaning 'input'"):
    fc.linen.ConvTranspose(4, k, padding=1, padding_meaning="input").init(KEY, x)


def test_numeric_conv_transpose_padding_keeps_pytorchs_meaning_with_pytorch_convention():
  layer = fc.linen.ConvTranspose(3, (3, 3), strides=2, padding=1, convention="pytorch")
  x = normal((1, 2, 5, 4))
  assert layer.apply(layer.init(KEY, x), x).shape == (1, 3, 9, 7)  # (in - 1) * 2 + 3 - 2
  flax_meaning = layer.clone(padding_meaning="flax", padding=2)  # forward: 0
  assert flax_meaning.apply(flax_meaning.init(KEY, x), x).shape == (1, 3, 11, 9)


# --- Flax's own arguments: promote_dtype, conv_general_dilated(_cls) ----------------------


@TRANSPOSED
def test_attributes_are_flax_linens_in_flax_order(transposed):
  """Every flax.linen attribute, in Flax's order: positional arguments mean the same."""
  ours, theirs = (
    (fc.linen.ConvTranspose, nn.ConvTranspose) if transposed else (fc.linen.Conv, nn.Conv)
  )
  names = lambda cls: [f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name")]
  assert names(ours)[: len(names(theirs))] == names(theirs)
  # e.g. Conv(features, kernel_size, strides, padding, input_dilation): the 5th is Flax's 5th.
  x = normal((2, 7, 6, 4))
  args = (6, (3, 2), 1, 0, 2)
  assert_like_flax(ours(*args, kernel_init=keyed_init), theirs(*args, kernel_init=keyed_init), x)


def doubled_conv(*args: Any, **kwargs: Any) -> jax.Array:
  """A stand-in for a replacement conv (a quantised one, say) whose effect shows."""
  return 2 * lax.conv_general_dilated(*args, **kwargs)


def to_bfloat16(*args: Any, dtype: Any = None) -> tuple[Any, ...]:
  """A ``promote_dtype`` that ignores ``dtype`` (so its effect shows)."""
  return tuple(None if a is None else jnp.asarray(a, jnp.bfloat16) for a in args)


@pytest.mark.parametrize("how", ["function", "cls", "both"])
def test_conv_general_dilated_replaces_lax_as_in_flax_linen(how):
  kw = {
    "function": dict(conv_general_dilated=doubled_conv),
    "cls": dict(conv_general_dilated_cls=lambda: doubled_conv),
    # Flax calls conv_general_dilated_cls when both are given.
    "both": dict(
      conv_general_dilated=lax.conv_general_dilated, conv_general_dilated_cls=lambda: doubled_conv
    ),
  }[how]
  x = normal((2, 7, 6, 4))
  layer, theirs = pair(
    False, 6, (3, 2), strides=2, feature_group_count=2, kernel_init=keyed_init, **kw
  )
  params = assert_like_flax(layer, theirs, x)
  plain = fc.linen.Conv(6, (3, 2), strides=2, feature_group_count=2)
  assert_close(layer.apply(params, x), 2 * plain.apply(params, x) - params["params"]["bias"])


@pytest.mark.parametrize("convention", ["lasagne", "pytorch", "tflite"])
def test_conv_general_dilated_in_a_flipped_or_relaid_out_convention(convention):
  """The replacement gets the kernel flipped and the layouts the module has: Flax's result."""
  check_convention(
    convention, False, 2, "REFLECT", kernel_init=keyed_init, conv_general_dilated=doubled_conv
  )


def test_conv_general_dilated_gets_fc_convs_argument_checks():
  """A replacement primitive runs behind the same size checks as fc.conv: padding beyond
  what XLA computes right is a ValueError naming it, and the replacement is never called."""
  calls = []
  record = lambda *a, **k: calls.append(a) or lax.conv_general_dilated(*a, **k)
  x = normal((1, 5, 4))
  layer = fc.linen.Conv(3, (3,), padding=2**25, conv_general_dilated=record)
  with pytest.raises(ValueError, match=r"pads 33,554,432 on one side"):
    layer.init(jax.random.key(0), x)
  assert calls == []
  with pytest.raises(ValueError, match=r"pads 33,554,432 on one side"):
    fc.conv(x, np.ones((3, 4, 3), np.float32), flip=False, padding=2**25)


def test_conv_general_dilated_is_called_as_flax_linen_calls_it():
  calls = {}

  def recording(name):
    def conv(*args, **kwargs):
      calls[name] = (len(args), sorted(kwargs))
      return lax.conv_general_dilated(*args, **kwargs)

    return conv

  x = normal((2, 7, 6, 4))
  fc.linen.Conv(6, (3, 2), conv_general_dilated=recording("ours")).init(KEY, x)
  nn.Conv(6, (3, 2), conv_general_dilated=recording("theirs")).init(KEY, x)
  assert calls["ours"] == calls["theirs"]
  with pytest.raises(ValueError, match=r"conv_general_dilated.*method='fft'"):
    fc.linen.Conv(6, (3, 2), conv_general_dilated=doubled_conv, method="fft").init(KEY, x)
  with pytest.raises(TypeError, match="conv_general_dilated must be a function"):
    fc.linen.Conv(6, (3, 2), conv_general_dilated=3).init(KEY, x)


@TRANSPOSED
def test_promote_dtype_is_flax_linens(transposed):
  x = normal((2, 8, 7, 4))
  layer, theirs = pair(
    transposed, 6, (3, 2), strides=2, promote_dtype=to_bfloat16, kernel_init=keyed_init
  )
  params = assert_like_flax(layer, theirs, x, rtol=1e-2)
  assert layer.apply(params, x).dtype == jnp.bfloat16


@pytest.mark.parametrize(("padding", "strides", "use_mask", "preferred"), FLAX_NNX_CASES)
def test_flax_nnx_test_suites_conv_case_is_flax_linens(padding, strides, use_mask, preferred):
  """flax's nnx/linen equivalence case: float16 params, 3 groups, mask, both dilations."""
  mask = jnp.tril(jnp.ones((7, 4, 1, 6))) if use_mask else None
  cgd = (
    None
    if preferred is None
    else functools.partial(lax.conv_general_dilated, preferred_element_type=preferred)
  )
  kwargs = dict(
    strides=strides,
    padding=padding,
    input_dilation=1 if isinstance(padding, str) else (2, 3),  # lax: string pads need 1
    kernel_dilation=(2, 1) if padding == "VALID" else (2, 3),  # (2, 3) is wider than 9
    feature_group_count=3,
    mask=mask,
    param_dtype=jnp.float16,
    precision=lax.Precision.HIGHEST,
    conv_general_dilated=cgd,
    kernel_init=keyed_init,
  )
  assert_like_flax(*pair(False, 6, (7, 4), **kwargs), normal((24, 9, 3)), rtol=1e-3)


@pytest.mark.parametrize(("padding", "strides", "use_mask", "preferred"), FLAX_NNX_TRANSPOSE_CASES)
def test_flax_nnx_test_suites_conv_transpose_case_is_flax_linens(
  padding, strides, use_mask, preferred
):
  mask = jnp.tril(jnp.ones((7, 4, 3, 6))) if use_mask else None
  kwargs = dict(
    strides=strides,
    padding=padding,
    kernel_dilation=(2, 3),
    mask=mask,
    param_dtype=jnp.float16,
    precision=lax.Precision.HIGHEST,
    preferred_element_type=preferred,
    kernel_init=keyed_init,
  )
  assert_like_flax(*pair(True, 6, (7, 4), **kwargs), normal((24, 9, 3)), rtol=1e-3)


# --- mask, dtypes, precision --------------------------------------------------------------


@TRANSPOSED
def test_mask_is_flax_linens(transposed):
  shape = (3, 2, 4, 6) if transposed else (3, 2, 2, 6)
  mask = jnp.asarray(np.random.default_rng(5).integers(0, 2, shape), jnp.float32)
  kwargs = dict(strides=2, mask=mask, kernel_init=keyed_init)
  if not transposed:
    kwargs["feature_group_count"] = 2
  assert_like_flax(*pair(transposed, 6, (3, 2), **kwargs), normal((2, 8, 7, 4)))


def test_mask_is_in_the_modules_kernel_layout():
  x = normal((2, 8, 7, 4))
  mask = jnp.asarray(np.random.default_rng(5).integers(0, 2, (3, 2, 4, 6)), jnp.float32)
  theirs = nn.Conv(6, (3, 2), mask=mask, kernel_init=keyed_init)
  layer = fc.linen.Conv(
    6,
    (3, 2),
    convention="lasagne",
    kernel_init=keyed_init,
    mask=fc.convert_kernel(mask, "flax", "lasagne"),
  )
  params = randomize(theirs.init(KEY, x))
  kernel = fc.convert_kernel(params["params"]["kernel"], "flax", "lasagne")
  assert_close(
    layer.apply(
      {"params": {"kernel": kernel, "bias": params["params"]["bias"]}}, relayout(x, "NHWC", "NCHW")
    ),
    relayout(theirs.apply(params, x), "NHWC", "NCHW"),
  )
  with pytest.raises(ValueError, match=r"mask has shape \(3, 2, 4, 6\).*\(6, 4, 3, 2\)"):
    fc.linen.Conv(6, (3, 2), convention="lasagne", mask=mask, kernel_init=keyed_init).init(
      KEY, relayout(x, "NHWC", "NCHW")
    )


@pytest.mark.parametrize(
  ("param_dtype", "dtype"),
  [(jnp.bfloat16, jnp.float32), (jnp.float32, jnp.bfloat16), (jnp.bfloat16, None)],
)
@TRANSPOSED
def test_dtypes_are_flax_linens(transposed, param_dtype, dtype):
  x = normal((2, 8, 7, 4), 0, jnp.bfloat16 if dtype is None else jnp.float32)
  layer, theirs = pair(
    transposed, 6, (3, 2), strides=2, param_dtype=param_dtype, dtype=dtype, kernel_init=keyed_init
  )
  params = assert_like_flax(layer, theirs, x, rtol=1e-2)
  assert params["params"]["kernel"].dtype == param_dtype
  assert layer.apply(params, x).dtype == (dtype or jnp.bfloat16)


@pytest.mark.parametrize("precision", [lax.Precision.HIGHEST, "high"])
@TRANSPOSED
def test_precision_reaches_lax_as_in_flax_linen(transposed, precision):
  x = normal((2, 8, 7, 4))
  layer, theirs = pair(transposed, 6, (3, 2), precision=precision, kernel_init=keyed_init)
  params = assert_like_flax(layer, theirs, x)
  got = conv_eqn_params(jax.make_jaxpr(layer.apply)(params, x).jaxpr)
  want = conv_eqn_params(jax.make_jaxpr(theirs.apply)(params, x).jaxpr)
  assert len(got) == len(want) == 1
  assert got[0]["precision"] == want[0]["precision"]


def test_preferred_element_type_is_flax_linens():
  assert_like_flax(
    *pair(
      True,
      6,
      (3, 2),
      strides=2,
      param_dtype=jnp.bfloat16,
      preferred_element_type=jnp.float32,
      kernel_init=keyed_init,
    ),
    normal((2, 8, 7, 4), 0, jnp.bfloat16),
    rtol=1e-2,
  )


# --- batch axes ---------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [(), (2, 3)], ids=["unbatched", "two-batch-axes"])
@TRANSPOSED
def test_leading_batch_axes_are_flax_linens(transposed, batch):
  padding = "CIRCULAR"
  assert_like_flax(
    *pair(transposed, 5, (3, 2), strides=2, padding=padding, kernel_init=keyed_init),
    normal((*batch, 7, 6, 4)),
  )


@pytest.mark.parametrize("convention", ["pytorch", "equinox"])
@TRANSPOSED
def test_leading_batch_axes_in_a_channels_first_layout(transposed, convention):
  """(C, H, W) is one example and (B1, B2, C, H, W) a batch, as NHWC is in Flax."""
  layer = fc_layer(transposed, 5, (3, 2), strides=2, convention=convention, kernel_init=keyed_init)
  x = normal((2, 3, 4, 7, 6))
  params = randomize(layer.init(KEY, x[0, 0]))
  per_example = jax.vmap(jax.vmap(lambda e: layer.apply(params, e)))(x)
  assert_close(layer.apply(params, x), per_example)
  assert_close(layer.apply(params, x[0, 0]), per_example[0, 0])


# --- other conventions --------------------------------------------------------------------


def check_convention(convention: str, transposed: bool, n: int, padding: Any, **init: Any) -> None:
  """The same key gives the converted Flax kernel; the output is Flax's, re-laid-out."""
  c = fc.get_convention(convention)
  layout = nd(c.layout, n)
  kernel_layout = nd(c.transpose_kernel_layout if transposed else c.kernel_layout, n)
  kernel_size = (3, 2, 2)[:n]
  # flax.linen.ConvTranspose has no groups; Flax's kernel is (3, 2, 4, 6) in 2-D either way.
  groups, in_features = (1, 4) if transposed else (2, 8)
  kwargs = dict(strides=2, padding=padding, **init)
  if not transposed:
    kwargs["feature_group_count"] = groups
  layer, theirs = pair(transposed, 6, kernel_size, convention=convention, **kwargs)
  x = normal((2, *(7, 6, 5)[:n], in_features))
  flax_layout = "N" + LETTERS[n] + "C"
  x_ours = relayout(x, flax_layout, layout)
  p_theirs, p_ours = theirs.init(KEY, x), layer.init(KEY, x_ours)
  assert jax.tree.structure(p_ours) == jax.tree.structure(p_theirs)
  kernel = p_ours["params"]["kernel"]
  assert kernel.shape == expected_kernel_shape(
    kernel_layout, kernel_size, in_features, 6, groups, transposed
  )
  to_ours = lambda k: fc.convert_kernel(k, "flax", convention, transposed=transposed)
  chex.assert_trees_all_equal(kernel, to_ours(p_theirs["params"]["kernel"]))
  chex.assert_trees_all_equal(p_ours["params"]["bias"], p_theirs["params"]["bias"])

  params = randomize(p_theirs)
  ours_params = {
    "params": {"kernel": to_ours(params["params"]["kernel"]), "bias": params["params"]["bias"]}
  }
  assert_close(
    layer.apply(ours_params, x_ours), relayout(theirs.apply(params, x), flax_layout, layout)
  )


@pytest.mark.parametrize(
  ("transposed", "padding"),
  [(False, "SAME"), (True, "SAME"), (True, "VALID")],
  ids=["conv", "transpose-same", "transpose-valid"],
)
@pytest.mark.parametrize("convention", OTHER_CONVENTIONS)
def test_every_convention_is_the_flax_layer_relaid_out(convention, transposed, padding):
  """Default init; VALID with kernel (3, 2) and stride 2 has one size in every size rule."""
  check_convention(convention, transposed, 2, padding)


@TRANSPOSED
@pytest.mark.parametrize(
  ("convention", "n"),
  [("pytorch", 1), ("theano", 3), ("tflite", 1), ("tensorflow", 3), ("equinox", 1), ("equinox", 3)],
)
def test_every_convention_is_the_flax_layer_relaid_out_in_1d_and_3d(convention, n, transposed):
  check_convention(convention, transposed, n, "SAME", kernel_init=keyed_init)


@pytest.mark.parametrize(("convention", "transposed", "shape"), FRAMEWORK_KERNEL_SHAPES)
def test_the_kernel_has_the_frameworks_own_shape(convention, transposed, shape):
  in_features, groups = (4, 1) if transposed else (8, 2)
  layer = fc_layer(transposed, 6, (3, 2), feature_group_count=groups, convention=convention)
  layout = fc.get_convention(convention).layout
  x = jax.ShapeDtypeStruct(
    tuple(dict(N=2, C=in_features, H=7, W=6)[c] for c in layout), jnp.float32
  )
  assert jax.eval_shape(layer.init, KEY, x)["params"]["kernel"].shape == shape


def test_grouped_pytorch_conv_transpose_is_the_adjoint_of_the_grouped_conv():
  """flax.linen.ConvTranspose has no groups: the oracle is the transpose of a Conv."""
  layer = fc.linen.ConvTranspose(
    6,
    (3, 2),
    strides=2,
    padding=1,
    feature_group_count=2,
    convention="pytorch",
    kernel_init=keyed_init,
  )
  y = normal((2, 4, 5, 4))
  params = randomize(layer.init(KEY, y))
  kernel = params["params"]["kernel"]
  assert kernel.shape == (4, 3, 3, 2)  # (in, out / groups, kh, kw): torch's weight
  got = layer.apply(params, y)
  assert got.shape == (2, 6, 9, 6)  # (in - 1) * stride + k - 2 * padding
  forward = fc.linen.Conv(
    4, (3, 2), strides=2, padding=1, feature_group_count=2, convention="pytorch", use_bias=False
  )
  (want,) = jax.linear_transpose(
    lambda x: forward.apply({"params": {"kernel": kernel}}, x),
    jax.ShapeDtypeStruct(got.shape, jnp.float32),
  )(y)
  assert_close(got, want + params["params"]["bias"][:, None, None])


# --- initialisation: the layout does not change the distribution ---------------------------


@pytest.mark.parametrize("groups", [1, 2])
@TRANSPOSED
def test_default_init_has_flax_fan_in_in_a_torch_layout(transposed, groups):
  """lecun_normal: std 1/sqrt(fan_in), fan_in from Flax's kernel shape, not from OIHW's.

  The channel counts keep Flax's kernel shape at (5, 3, 16, 64) (one compile of
  jax.random); fan_in is in / groups * 15 for a conv, in * 15 for a transposed conv.
  """
  in_features, features = (16, 64 * groups) if transposed else (16 * groups, 64)
  layer = fc_layer(transposed, features, (5, 3), feature_group_count=groups, convention="pytorch")
  kernel = layer.init(KEY, jnp.zeros((1, in_features, 6, 6)))["params"]["kernel"]
  assert kernel.shape == ((16, 64, 5, 3) if transposed else (64, 16, 5, 3))
  fan_in = (in_features if transposed else in_features // groups) * 5 * 3
  np.testing.assert_allclose(float(jnp.std(kernel)), fan_in**-0.5, rtol=0.03)


@pytest.mark.parametrize(
  ("mode", "fan"),
  [("fan_in", lambda i, o: i), ("fan_out", lambda i, o: o), ("fan_avg", lambda i, o: (i + o) / 2)],
)
def test_variance_scaling_has_flax_fans_in_a_torch_layout(mode, fan):
  init = nn.initializers.variance_scaling(2.0, mode, "uniform")
  in_features, features = 16, 64
  x = jnp.zeros((1, in_features, 6, 6))
  kernel = fc.linen.Conv(features, (5, 3), convention="pytorch", kernel_init=init).init(KEY, x)[
    "params"
  ]["kernel"]
  std = (2.0 / fan(in_features * 15, features * 15)) ** 0.5
  np.testing.assert_allclose(float(jnp.std(kernel)), std, rtol=0.03)
  assert float(jnp.abs(kernel).max()) <= 3**0.5 * std * (1 + 1e-6)
  theirs = nn.Conv(features, (5, 3), kernel_init=init).init(KEY, relayout(x, "NCHW", "NHWC"))
  chex.assert_trees_all_equal(
    kernel, fc.convert_kernel(theirs["params"]["kernel"], "flax", "pytorch")
  )


def test_partitioning_names_the_axes_of_the_modules_own_layout():
  names = ("O", "I", None, None)
  layer = fc.linen.Conv(
    6, (3, 2), convention="pytorch", kernel_init=nn.with_partitioning(keyed_init, names)
  )
  x = normal((2, 4, 7, 6))
  boxed = layer.init(KEY, x)
  kernel = boxed["params"]["kernel"]
  assert isinstance(kernel, nn.Partitioned)
  assert kernel.names == names
  theirs = nn.Conv(6, (3, 2), kernel_init=keyed_init).init(KEY, relayout(x, "NCHW", "NHWC"))
  chex.assert_trees_all_equal(
    kernel.value, fc.convert_kernel(theirs["params"]["kernel"], "flax", "pytorch")
  )
  assert_close(layer.apply(boxed, x), layer.apply(nn.unbox(boxed), x))


# --- errors -------------------------------------------------------------------------------


def test_a_kernel_of_another_layout_is_refused_with_the_expected_shape():
  x = normal((2, 7, 6, 4))
  x_nchw = relayout(x, "NHWC", "NCHW")
  for transposed, needs in ((False, r"\(6, 4, 3, 2\)"), (True, r"\(4, 6, 3, 2\)")):
    layer, theirs = pair(transposed, 6, (3, 2), convention="pytorch", kernel_init=keyed_init)
    flax_params = theirs.init(KEY, x)
    with pytest.raises(ValueError, match=r"\(3, 2, 4, 6\).*needs " + needs + ".*convert_kernel"):
      layer.apply(flax_params, x_nchw)


BAD_ARGUMENTS = [
  pytest.param(dict(convention="pytroch"), ValueError, "pytroch", id="unknown-convention"),
  pytest.param(dict(convention=3), TypeError, "convention", id="convention-type"),
  pytest.param(dict(layout="nhwc"), ValueError, "layout 'nhwc'", id="lower-case-layout"),
  pytest.param(dict(layout="NHHC"), ValueError, "layout 'NHHC'", id="repeated-letter"),
  pytest.param(dict(layout="NHWO"), ValueError, "layout 'NHWO'", id="layout-without-c"),
  pytest.param(
    dict(kernel_layout="HWIC"), ValueError, "kernel_layout 'HWIC'", id="kernel-layout-letters"
  ),
  pytest.param(dict(layout="NWC"), ValueError, "layout 'NWC'.*kernel_size", id="layout-rank"),
  pytest.param(
    dict(kernel_layout="WIO"),
    ValueError,
    "kernel_layout 'WIO'.*kernel_size",
    id="kernel-layout-rank",
  ),
  pytest.param(dict(feature_group_count=3), ValueError, "feature_group_count", id="groups"),
  pytest.param(dict(feature_group_count=0), ValueError, "feature_group_count", id="groups-0"),
  pytest.param(dict(feature_group_count=2.0), TypeError, "feature_group_count", id="groups-float"),
  pytest.param(
    dict(features=5, feature_group_count=2), ValueError, "output features", id="features-groups"
  ),
  pytest.param(dict(method="fast"), ValueError, "method", id="unknown-method"),
  pytest.param(dict(flip="yes"), TypeError, "flip", id="flip-type"),
  pytest.param(dict(kernel_size="3"), TypeError, "kernel_size", id="kernel-size-type"),
  pytest.param(dict(strides=(1, 2, 3)), ValueError, "strides", id="strides-rank"),
]


@TRANSPOSED
@pytest.mark.parametrize(("kwargs", "error", "match"), BAD_ARGUMENTS)
def test_bad_arguments_name_the_argument(kwargs, error, match, transposed):
  kwargs = dict(features=6, kernel_size=(3, 2), kernel_init=keyed_init) | kwargs
  layer = fc_layer(transposed, **kwargs)
  with pytest.raises(error, match=match):
    layer.init(KEY, jnp.zeros((1, 7, 6, 4)))


def test_bad_pad_modes_name_the_argument():
  for kwargs in (dict(pad_mode="mirror"), dict(padding="CIRCULAR", pad_mode="reflect")):
    with pytest.raises(ValueError, match="pad_mode"):
      fc.linen.Conv(6, (3, 2), **kwargs).init(KEY, jnp.zeros((1, 7, 6, 4)))


def test_conv_transpose_bad_pad_modes_name_the_argument():
  """CIRCULAR/REFLECT work in ConvTranspose (tests/test_transpose_pad_mode.py); a clash does not."""
  for kwargs in (dict(pad_mode="mirror"), dict(padding="reflect", pad_mode="circular")):
    with pytest.raises(ValueError, match="pad_mode"):
      fc.linen.ConvTranspose(6, (3, 2), kernel_init=keyed_init, **kwargs).init(
        KEY, jnp.zeros((1, 7, 6, 4))
      )


# --- transformations ----------------------------------------------------------------------


@TRANSPOSED
def test_jit_of_apply_traces_once_per_shape(transposed):
  layer = fc_layer(transposed, 6, (3, 2), strides=2, convention="pytorch", kernel_init=keyed_init)
  x = normal((2, 4, 7, 6))
  params = layer.init(KEY, x)
  traces = []

  def apply(p, x):
    traces.append(None)
    return layer.apply(p, x)

  jitted = jax.jit(apply)
  assert_close(jitted(params, x), layer.apply(params, x))
  other = randomize(params)
  assert_close(jitted(other, x + 1), layer.apply(other, x + 1))
  assert len(traces) == 1
  jitted_apply = jax.jit(layer.apply)
  jitted_apply(params, x)
  jitted_apply(other, 2 * x)
  assert jitted_apply._cache_size() == 1


class _Block(nn.Module):
  conv: Any

  @nn.compact
  def __call__(self, x, _):
    return jnp.tanh(self.conv(4, (3, 2), kernel_init=keyed_init)(x)), None


class _Stack(nn.Module):
  conv: Any

  @nn.compact
  def __call__(self, x):
    scan = nn.scan(_Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=3)
    return scan(self.conv, name="blocks")(x, None)[0]


def test_scan_over_a_stack_is_the_loop_and_flax_linens_scan():
  x = normal((2, 7, 6, 4))
  params = assert_like_flax(_Stack(fc.linen.Conv), _Stack(nn.Conv), x)
  h = x
  for i in range(3):
    layer = jax.tree.map(lambda a, i=i: a[i], params["params"]["blocks"])
    h, _ = _Block(fc.linen.Conv).apply({"params": layer}, h, None)
  assert_close(_Stack(fc.linen.Conv).apply(params, x), h)


def test_remat_is_the_plain_module():
  x = normal((2, 7, 6, 4))
  plain = fc.linen.Conv(6, (3, 2), strides=2, kernel_init=keyed_init)
  remat = nn.remat(fc.linen.Conv)(6, (3, 2), strides=2, kernel_init=keyed_init)
  params = plain.init(KEY, x)
  chex.assert_trees_all_equal(remat.init(KEY, x), params)
  params = randomize(params)
  assert_close(remat.apply(params, x), plain.apply(params, x))
  loss = lambda layer: lambda p: jnp.sum(layer.apply(p, x) ** 2)
  chex.assert_trees_all_close(
    jax.grad(loss(remat))(params), jax.grad(loss(plain))(params), rtol=1e-5, atol=1e-5
  )


def test_fft_method_is_the_direct_method():
  x = normal((2, 4, 12, 10))
  kwargs = dict(strides=2, feature_group_count=2, convention="theano", kernel_init=keyed_init)
  direct, fft = fc.linen.Conv(6, (5, 4), **kwargs), fc.linen.Conv(6, (5, 4), method="fft", **kwargs)
  params = direct.init(KEY, x)
  chex.assert_trees_all_equal(fft.init(KEY, x), params)
  params = randomize(params)
  assert_close(fft.apply(params, x), direct.apply(params, x), rtol=1e-4)
