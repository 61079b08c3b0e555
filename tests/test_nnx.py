"""``fc.nnx.Conv`` and ``fc.nnx.ConvTranspose`` against flax.nnx, the oracle.

With the default ``convention="flax"`` the modules must be drop-in replacements
for ``flax.nnx.Conv`` / ``ConvTranspose``: the same ``nnx.Param`` state, the same
kernel and bias for the same ``nnx.Rngs(0)``, the same output for the same
parameters. For every other convention the same rngs must give the Flax kernel
converted by ``fc.convert_kernel``, and the output for the input laid out as that
convention lays it out must be the Flax output laid out the same way.

Cost: as in tests/test_linen.py, XLA's optimisations are off while these run,
inputs and parameters are NumPy draws, the default initialiser runs on two
kernel shapes only, and the grids initialise with :func:`keyed_init`.
"""

from __future__ import annotations

import inspect
import pydoc
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from jax import lax
from jax.sharding import PartitionSpec as P

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

nnx = pytest.importorskip("flax.nnx")
pytestmark = pytest.mark.usefixtures("cheap_compiles")  # tests/conftest.py


# --- helpers -----------------------------------------------------------------------------


def params_of(module: nnx.Module) -> Any:
  return nnx.state(module, nnx.Param)


def pair(transposed: bool, *args: Any, convention: str = "flax", **kwargs: Any):
  """A flipconv module and the flax.nnx module it should equal, both from ``nnx.Rngs(0)``."""
  if transposed:
    return (
      fc.nnx.ConvTranspose(*args, convention=convention, rngs=nnx.Rngs(0), **kwargs),
      nnx.ConvTranspose(*args, rngs=nnx.Rngs(0), **kwargs),
    )
  return (
    fc.nnx.Conv(*args, convention=convention, rngs=nnx.Rngs(0), **kwargs),
    nnx.Conv(*args, rngs=nnx.Rngs(0), **kwargs),
  )


def fc_layer(transposed: bool, *args: Any, **kwargs: Any) -> nnx.Module:
  cls = fc.nnx.ConvTranspose if transposed else fc.nnx.Conv
  return cls(*args, **{"rngs": nnx.Rngs(0), **kwargs})


def assert_like_flax(ours: nnx.Module, theirs: nnx.Module, x: Any, rtol: float = 1e-5) -> Any:
  """Same Param state, bit-identical init, same output once given the same (random) params.

  Returns the parameters the outputs were compared with.
  """
  p_ours, p_theirs = params_of(ours), params_of(theirs)
  assert jax.tree.structure(p_ours) == jax.tree.structure(p_theirs)
  chex.assert_trees_all_equal_shapes_and_dtypes(p_ours, p_theirs)
  chex.assert_trees_all_equal(p_ours, p_theirs)
  nnx.update(theirs, randomize(p_theirs))
  nnx.update(ours, params_of(theirs))
  want, got = theirs(x), ours(x)
  assert got.dtype == want.dtype
  assert_close(got, want, rtol)
  return params_of(theirs)


# --- convention="flax" is flax.nnx --------------------------------------------------------


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
def test_default_init_is_flax_nnxs_bit_for_bit(transposed, in_features, features, kwargs):
  """Flax's kernel shape is (3, 2, 4, 6) in every case (one compile of jax.random)."""
  ours, theirs = pair(transposed, in_features, features, (3, 2), **kwargs)
  assert (ours.bias is None) == (theirs.bias is None) == (not kwargs.get("use_bias", True))
  assert_like_flax(ours, theirs, normal((2, 7, 6, in_features)))


def test_rngs_are_drawn_in_flax_nnxs_order():
  """Kernel, then bias, and nothing else: a shared Rngs stays in step with Flax's."""
  bias_init = lambda key, shape, dtype: keyed_init(key, shape, dtype)
  rngs_ours, rngs_theirs = nnx.Rngs(3), nnx.Rngs(3)
  for _ in range(2):
    ours = fc.nnx.Conv(4, 6, (3, 2), kernel_init=keyed_init, bias_init=bias_init, rngs=rngs_ours)
    theirs = nnx.Conv(4, 6, (3, 2), kernel_init=keyed_init, bias_init=bias_init, rngs=rngs_theirs)
    chex.assert_trees_all_equal(params_of(ours), params_of(theirs))


@pytest.mark.parametrize(
  ("spatial", "in_features", "features", "kernel_size", "kwargs"), CONV_CASES
)
def test_conv_is_flax_nnx_conv(spatial, in_features, features, kernel_size, kwargs):
  assert_like_flax(
    *pair(False, in_features, features, kernel_size, kernel_init=keyed_init, **kwargs),
    normal((2, *spatial, in_features)),
  )


@settings(max_examples=6)
@given(conv_configs())
def test_conv_is_flax_nnx_conv_on_a_grid(config):
  spatial, features, kernel_size, kwargs = config
  assert_like_flax(
    *pair(False, 4, features, kernel_size, kernel_init=keyed_init, **kwargs),
    normal((2, *spatial, 4), 3),
  )


@pytest.mark.parametrize("transpose_kernel", [False, True])
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("strides", [1, 2, 3])
def test_conv_transpose_is_flax_nnx_conv_transpose(strides, padding, transpose_kernel):
  """Kernel (2, 5): smaller than, equal to and larger than the stride."""
  assert_like_flax(
    *pair(
      True,
      3,
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
def test_conv_transpose_is_flax_nnx_conv_transpose_in_every_rank(spatial, kernel_size, kwargs):
  assert_like_flax(
    *pair(True, 3, 4, kernel_size, kernel_init=keyed_init, **kwargs), normal((2, *spatial, 3))
  )


@settings(max_examples=6)
@given(conv_transpose_configs())
def test_conv_transpose_is_flax_nnx_conv_transpose_on_a_grid(config):
  spatial, kernel_size, kwargs = config
  assert_like_flax(
    *pair(True, 3, 2, kernel_size, kernel_init=keyed_init, **kwargs), normal((2, *spatial, 3), 4)
  )


def test_numeric_conv_transpose_padding_is_flax_nnxs():
  """Flax pads the stride-dilated input: (4, 2) with kernel (7, 4) dilated (2, 3) on (24, 9)."""
  kwargs = dict(padding=(4, 2), kernel_dilation=(2, 3), kernel_init=keyed_init)
  ours, theirs = pair(True, 3, 6, (7, 4), **kwargs)
  assert_like_flax(ours, theirs, normal((1, 24, 9, 3)))
  assert ours(normal((1, 24, 9, 3))).shape == (1, 20, 4, 6)


def test_padding_meaning_forward_is_the_forward_convs():
  """``padding_meaning="forward"``: flipconv.conv_transpose's (PyTorch's) meaning."""
  k, pads, out_pad = (3, 4), ((1, 0), (2, 1)), (1, 0)
  flax_pads = tuple(
    (kk - 1 - lo, kk - 1 - hi + op) for kk, (lo, hi), op in zip(k, pads, out_pad, strict=True)
  )
  ours = lambda padding, meaning: fc.nnx.ConvTranspose(
    3,
    4,
    k,
    strides=2,
    padding=padding,
    output_padding=out_pad,
    padding_meaning=meaning,
    kernel_init=keyed_init,
    rngs=nnx.Rngs(0),
  )
  theirs = lambda padding: nnx.ConvTranspose(
    3, 4, k, strides=2, padding=padding, kernel_init=keyed_init, rngs=nnx.Rngs(0)
  )
  for meaning in ("forward", "pytorch"):
    assert_like_flax(ours(pads, meaning), theirs(flax_pads), normal((2, 5, 4, 3)))
  # Flax's meaning spelled out: Flax's padding, output_padding adding at the high end.
  layer = ours(flax_pads, "dilated_input")
  more = tuple((lo, hi + op) for (lo, hi), op in zip(flax_pads, out_pad, strict=True))
  assert_like_flax(layer, theirs(more), normal((2, 5, 4, 3)))
  with pytest.raises(ValueError, match="padding_meaning 'input'"):
    fc.nnx.ConvTranspose(3, 4, k, padding_meaning="input", rngs=nnx.Rngs(0))


# --- Flax's own arguments: promote_dtype, conv_general_dilated, out_sharding --------------


def doubled_conv(*args: Any, **kwargs: Any) -> jax.Array:
  """A stand-in for a replacement conv (a quantised one, say) whose effect shows."""
  return 2 * lax.conv_general_dilated(*args, **kwargs)


def to_bfloat16(args: tuple[Any, ...], /, *, dtype: Any = None) -> tuple[Any, ...]:
  """nnx's ``promote_dtype`` takes one tuple; this one ignores ``dtype`` (so it shows)."""
  return tuple(None if a is None else jnp.asarray(a, jnp.bfloat16) for a in args)


def test_signature_is_the_real_one():
  for ours, theirs in ((fc.nnx.Conv, nnx.Conv), (fc.nnx.ConvTranspose, nnx.ConvTranspose)):
    sig = inspect.signature(ours)
    flax_names = list(inspect.signature(theirs.__init__).parameters)[1:]
    # Flax's arguments in Flax's order (and kind), then flipconv's own.
    assert list(sig.parameters)[: len(flax_names)] == flax_names
    for name in flax_names:
      want = inspect.signature(theirs.__init__).parameters[name]
      assert sig.parameters[name].kind == want.kind
      if name not in ("kernel_init", "bias_init", "promote_dtype"):
        assert sig.parameters[name].default == want.default or name in (
          "strides",
          "kernel_dilation",
        )
    assert "convention" in sig.parameters and "convention" in pydoc.render_doc(ours)


def test_conv_general_dilated_replaces_lax_as_in_flax_nnx():
  x = normal((2, 7, 6, 4))
  kwargs = dict(strides=2, feature_group_count=2, padding="CIRCULAR", kernel_init=keyed_init)
  ours, theirs = pair(False, 4, 6, (3, 2), conv_general_dilated=doubled_conv, **kwargs)
  params = assert_like_flax(ours, theirs, x)
  plain = fc.nnx.Conv(4, 6, (3, 2), rngs=nnx.Rngs(0), **kwargs)
  nnx.update(plain, params)
  assert_close(ours(x), 2 * plain(x) - params["bias"][...])
  with pytest.raises(ValueError, match=r"conv_general_dilated.*method='fft'"):
    fc.nnx.Conv(4, 6, (3, 2), conv_general_dilated=doubled_conv, method="fft", rngs=nnx.Rngs(0))(x)


def test_conv_general_dilated_is_called_as_flax_nnx_calls_it():
  """With the call's out_sharding, as Flax passes it, and nothing Flax does not pass."""
  if "out_sharding" not in inspect.signature(nnx.Conv.__call__).parameters:
    pytest.skip("flax < 0.12.3 passes no out_sharding; flipconv follows 0.12.3+")
  calls = {}

  def recording(name):
    def conv(*args, **kwargs):
      calls.setdefault(name, []).append((len(args), sorted(kwargs)))
      return lax.conv_general_dilated(*args, **kwargs)

    return conv

  x = normal((2, 7, 6, 4))
  for preferred in (None, jnp.float32):
    for name, cls in (("ours", fc.nnx.Conv), ("theirs", nnx.Conv)):
      layer = cls(
        4,
        6,
        (3, 2),
        conv_general_dilated=recording(name),
        preferred_element_type=preferred,
        rngs=nnx.Rngs(0),
      )
      layer(x)
      layer(x, out_sharding=None)
  assert calls["ours"] == calls["theirs"]
  with pytest.raises(ValueError, match=r"out_sharding.*method='fft'"):
    fc.nnx.Conv(4, 6, (3, 2), method="fft", rngs=nnx.Rngs(0))(x, out_sharding=P())


@pytest.mark.parametrize("convention", ["lasagne", "pytorch"])
def test_conv_general_dilated_in_a_flipped_or_relaid_out_convention(convention):
  """The replacement gets the kernel flipped and the layouts the module has: Flax's result."""
  check_convention(
    convention, False, 2, "REFLECT", kernel_init=keyed_init, conv_general_dilated=doubled_conv
  )


@TRANSPOSED
def test_promote_dtype_is_flax_nnxs(transposed):
  x = normal((2, 8, 7, 4))
  ours, theirs = pair(
    transposed, 4, 6, (3, 2), strides=2, promote_dtype=to_bfloat16, kernel_init=keyed_init
  )
  assert_like_flax(ours, theirs, x, rtol=1e-2)
  assert ours(x).dtype == jnp.bfloat16


@pytest.mark.parametrize(("padding", "strides", "use_mask", "preferred"), FLAX_NNX_CASES)
def test_flax_nnx_test_suites_conv_case_is_flax_nnxs(padding, strides, use_mask, preferred):
  """flax's nnx/linen equivalence case: float16 params, 3 groups, mask, both dilations."""
  kwargs = dict(
    padding=padding,
    input_dilation=1 if isinstance(padding, str) else (2, 3),  # lax: string pads need 1
    kernel_dilation=(2, 1) if padding == "VALID" else (2, 3),  # (2, 3) is wider than 9
    feature_group_count=3,
    mask=jnp.tril(jnp.ones((7, 4, 1, 6))) if use_mask else None,
    param_dtype=jnp.float16,
    precision=lax.Precision.HIGHEST,
    preferred_element_type=preferred,
    kernel_init=keyed_init,
  )
  assert_like_flax(*pair(False, 3, 6, (7, 4), strides, **kwargs), normal((24, 9, 3)), rtol=1e-3)


@pytest.mark.parametrize(("padding", "strides", "use_mask", "preferred"), FLAX_NNX_TRANSPOSE_CASES)
def test_flax_nnx_test_suites_conv_transpose_case_is_flax_nnxs(
  padding, strides, use_mask, preferred
):
  kwargs = dict(
    padding=padding,
    kernel_dilation=(2, 3),
    mask=jnp.tril(jnp.ones((7, 4, 3, 6))) if use_mask else None,
    param_dtype=jnp.float16,
    precision=lax.Precision.HIGHEST,
    preferred_element_type=preferred,
    kernel_init=keyed_init,
  )
  assert_like_flax(*pair(True, 3, 6, (7, 4), strides, **kwargs), normal((24, 9, 3)), rtol=1e-3)


# --- mask, dtypes, precision --------------------------------------------------------------


@TRANSPOSED
def test_mask_is_flax_nnxs(transposed):
  shape = (3, 2, 4, 6) if transposed else (3, 2, 2, 6)
  mask = jnp.asarray(np.random.default_rng(5).integers(0, 2, shape), jnp.float32)
  kwargs = dict(strides=2, mask=mask, kernel_init=keyed_init)
  if not transposed:
    kwargs["feature_group_count"] = 2
  assert_like_flax(*pair(transposed, 4, 6, (3, 2), **kwargs), normal((2, 8, 7, 4)))


def test_mask_is_in_the_modules_kernel_layout():
  x = normal((2, 8, 7, 4))
  mask = jnp.asarray(np.random.default_rng(5).integers(0, 2, (3, 2, 4, 6)), jnp.float32)
  theirs = nnx.Conv(4, 6, (3, 2), mask=mask, rngs=nnx.Rngs(0), kernel_init=keyed_init)
  layer = fc.nnx.Conv(
    4,
    6,
    (3, 2),
    convention="pytorch",
    kernel_init=keyed_init,
    mask=fc.convert_kernel(mask, "flax", "pytorch"),
    rngs=nnx.Rngs(0),
  )
  nnx.update(theirs, randomize(params_of(theirs)))
  layer.kernel.set_value(fc.convert_kernel(theirs.kernel[...], "flax", "pytorch"))
  layer.bias.set_value(theirs.bias[...])
  assert_close(layer(relayout(x, "NHWC", "NCHW")), relayout(theirs(x), "NHWC", "NCHW"))
  bad = fc.nnx.Conv(
    4, 6, (3, 2), convention="pytorch", mask=mask, kernel_init=keyed_init, rngs=nnx.Rngs(0)
  )
  with pytest.raises(ValueError, match=r"mask has shape \(3, 2, 4, 6\).*\(6, 4, 3, 2\)"):
    bad(relayout(x, "NHWC", "NCHW"))


@pytest.mark.parametrize(
  ("param_dtype", "dtype"),
  [(jnp.bfloat16, jnp.float32), (jnp.float32, jnp.bfloat16), (jnp.bfloat16, None)],
)
@TRANSPOSED
def test_dtypes_are_flax_nnxs(transposed, param_dtype, dtype):
  x = normal((2, 8, 7, 4), 0, jnp.bfloat16 if dtype is None else jnp.float32)
  layer, theirs = pair(
    transposed,
    4,
    6,
    (3, 2),
    strides=2,
    param_dtype=param_dtype,
    dtype=dtype,
    kernel_init=keyed_init,
  )
  assert layer.kernel[...].dtype == param_dtype
  assert_like_flax(layer, theirs, x, rtol=1e-2)
  assert layer(x).dtype == (dtype or jnp.bfloat16)


@pytest.mark.parametrize("precision", [lax.Precision.HIGHEST, "high"])
@TRANSPOSED
def test_precision_reaches_lax_as_in_flax_nnx(transposed, precision):
  x = normal((2, 8, 7, 4))
  layer, theirs = pair(transposed, 4, 6, (3, 2), precision=precision, kernel_init=keyed_init)
  assert_like_flax(layer, theirs, x)
  got = conv_eqn_params(jax.make_jaxpr(lambda x: layer(x))(x).jaxpr)
  want = conv_eqn_params(jax.make_jaxpr(lambda x: theirs(x))(x).jaxpr)
  assert len(got) == len(want) == 1
  assert got[0]["precision"] == want[0]["precision"]


@TRANSPOSED
def test_preferred_element_type_is_flax_nnxs(transposed):
  assert_like_flax(
    *pair(
      transposed,
      4,
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
def test_leading_batch_axes_are_flax_nnxs(transposed, batch):
  padding = "CIRCULAR"
  assert_like_flax(
    *pair(transposed, 4, 5, (3, 2), strides=2, padding=padding, kernel_init=keyed_init),
    normal((*batch, 7, 6, 4)),
  )


@pytest.mark.parametrize("convention", ["pytorch", "equinox"])
@TRANSPOSED
def test_leading_batch_axes_in_a_channels_first_layout(transposed, convention):
  """(C, H, W) is one example and (B1, B2, C, H, W) a batch, as NHWC is in Flax."""
  layer = fc_layer(
    transposed, 4, 5, (3, 2), strides=2, convention=convention, kernel_init=keyed_init
  )
  nnx.update(layer, randomize(params_of(layer)))
  x = normal((2, 3, 4, 7, 6))
  graphdef, state = nnx.split(layer)
  per_example = jax.vmap(jax.vmap(lambda e: nnx.merge(graphdef, state)(e)))(x)
  assert_close(layer(x), per_example)
  assert_close(layer(x[0, 0]), per_example[0, 0])


# --- other conventions --------------------------------------------------------------------


def check_convention(convention: str, transposed: bool, n: int, padding: Any, **init: Any) -> None:
  """The same rngs give the converted Flax kernel; the output is Flax's, re-laid-out."""
  c = fc.get_convention(convention)
  layout = nd(c.layout, n)
  kernel_layout = nd(c.transpose_kernel_layout if transposed else c.kernel_layout, n)
  kernel_size = (3, 2, 2)[:n]
  # flax.nnx.ConvTranspose has no groups; Flax's kernel is (3, 2, 4, 6) in 2-D either way.
  groups, in_features = (1, 4) if transposed else (2, 8)
  kwargs = dict(strides=2, padding=padding, **init)
  if not transposed:
    kwargs["feature_group_count"] = groups
  layer, theirs = pair(transposed, in_features, 6, kernel_size, convention=convention, **kwargs)
  assert jax.tree.structure(params_of(layer)) == jax.tree.structure(params_of(theirs))
  assert layer.kernel.shape == expected_kernel_shape(
    kernel_layout, kernel_size, in_features, 6, groups, transposed
  )
  to_ours = lambda k: fc.convert_kernel(k, "flax", convention, transposed=transposed)
  chex.assert_trees_all_equal(layer.kernel[...], to_ours(theirs.kernel[...]))
  chex.assert_trees_all_equal(layer.bias[...], theirs.bias[...])

  nnx.update(theirs, randomize(params_of(theirs)))
  layer.kernel.set_value(to_ours(theirs.kernel[...]))
  layer.bias.set_value(theirs.bias[...])
  x = normal((2, *(7, 6, 5)[:n], in_features))
  flax_layout = "N" + LETTERS[n] + "C"
  assert_close(layer(relayout(x, flax_layout, layout)), relayout(theirs(x), flax_layout, layout))


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
  [("pytorch", 3), ("theano", 1), ("tflite", 3), ("tensorflow", 1), ("equinox", 1), ("equinox", 3)],
)
def test_every_convention_is_the_flax_layer_relaid_out_in_1d_and_3d(convention, n, transposed):
  check_convention(convention, transposed, n, "SAME", kernel_init=keyed_init)


@pytest.mark.parametrize(("convention", "transposed", "shape"), FRAMEWORK_KERNEL_SHAPES)
def test_the_kernel_has_the_frameworks_own_shape(convention, transposed, shape):
  in_features, groups = (4, 1) if transposed else (8, 2)
  layer = nnx.eval_shape(
    lambda: fc_layer(
      transposed, in_features, 6, (3, 2), feature_group_count=groups, convention=convention
    )
  )
  assert layer.kernel.shape == shape


def test_grouped_pytorch_conv_transpose_is_the_adjoint_of_the_grouped_conv():
  """flax.nnx.ConvTranspose has no groups: the oracle is the transpose of a Conv."""
  layer = fc.nnx.ConvTranspose(
    4,
    6,
    (3, 2),
    strides=2,
    padding=1,
    feature_group_count=2,
    convention="pytorch",
    kernel_init=keyed_init,
    rngs=nnx.Rngs(0),
  )
  nnx.update(layer, randomize(params_of(layer)))
  assert layer.kernel.shape == (4, 3, 3, 2)  # (in, out / groups, kh, kw): torch's weight
  y = normal((2, 4, 5, 4))
  got = layer(y)
  assert got.shape == (2, 6, 9, 6)  # (in - 1) * stride + k - 2 * padding
  forward = fc.nnx.Conv(
    6,
    4,
    (3, 2),
    strides=2,
    padding=1,
    feature_group_count=2,
    convention="pytorch",
    use_bias=False,
    rngs=nnx.Rngs(1),
  )
  forward.kernel.set_value(layer.kernel[...])
  (want,) = jax.linear_transpose(forward, jax.ShapeDtypeStruct(got.shape, jnp.float32))(y)
  assert_close(got, want + layer.bias[...][:, None, None])


# --- initialisation: the layout does not change the distribution ---------------------------


@pytest.mark.parametrize(
  ("transposed", "groups"), [(False, 2), (True, 1)], ids=["conv-groups", "transpose"]
)
def test_default_init_has_flax_fan_in_in_a_torch_layout(transposed, groups):
  """lecun_normal: std 1/sqrt(fan_in), fan_in from Flax's kernel shape, not from OIHW's.

  Flax's kernel shape is (5, 3, 16, 64) in both cases (tests/test_linen.py draws the
  same): fan_in is in / groups * 15 for a conv, in * 15 for a transposed conv.
  """
  in_features = 16 * groups
  layer = fc_layer(
    transposed, in_features, 64, (5, 3), feature_group_count=groups, convention="pytorch"
  )
  assert layer.kernel.shape == ((16, 64, 5, 3) if transposed else (64, 16, 5, 3))
  fan_in = (in_features if transposed else in_features // groups) * 5 * 3
  np.testing.assert_allclose(float(jnp.std(layer.kernel[...])), fan_in**-0.5, rtol=0.03)


def test_variance_scaling_has_flax_fans_in_a_torch_layout():
  init = nnx.initializers.variance_scaling(2.0, "fan_out", "uniform")
  layer = fc.nnx.Conv(16, 64, (5, 3), convention="pytorch", kernel_init=init, rngs=nnx.Rngs(0))
  std = (2.0 / (64 * 15)) ** 0.5
  np.testing.assert_allclose(float(jnp.std(layer.kernel[...])), std, rtol=0.03)
  theirs = nnx.Conv(16, 64, (5, 3), kernel_init=init, rngs=nnx.Rngs(0))
  chex.assert_trees_all_equal(
    layer.kernel[...], fc.convert_kernel(theirs.kernel[...], "flax", "pytorch")
  )


# --- errors -------------------------------------------------------------------------------


@TRANSPOSED
def test_a_kernel_of_another_layout_is_refused_with_the_expected_shape(transposed):
  needs = r"\(4, 6, 3, 2\)" if transposed else r"\(6, 4, 3, 2\)"
  layer, theirs = pair(transposed, 4, 6, (3, 2), convention="pytorch", kernel_init=keyed_init)
  nnx.update(layer, params_of(theirs))  # a Flax HWIO kernel, as a user might load it
  with pytest.raises(ValueError, match=r"\(3, 2, 4, 6\).*needs " + needs + ".*convert_kernel"):
    layer(normal((2, 4, 7, 6)))


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
  pytest.param(
    dict(out_features=5, feature_group_count=2), ValueError, "output features", id="features-groups"
  ),
  pytest.param(dict(method="fast"), ValueError, "method", id="unknown-method"),
  pytest.param(dict(flip="yes"), TypeError, "flip", id="flip-type"),
  pytest.param(dict(kernel_size="3"), TypeError, "kernel_size", id="kernel-size-type"),
]


@TRANSPOSED
@pytest.mark.parametrize(("kwargs", "error", "match"), BAD_ARGUMENTS)
def test_bad_arguments_are_refused_at_construction(kwargs, error, match, transposed):
  kwargs = dict(in_features=4, out_features=6, kernel_size=(3, 2), kernel_init=keyed_init) | kwargs
  with pytest.raises(error, match=match):
    fc_layer(transposed, **kwargs)


def test_bad_call_time_arguments_name_the_argument():
  x = jnp.zeros((1, 7, 6, 4))
  cases = [
    (fc.nnx.Conv, dict(pad_mode="mirror"), "pad_mode"),
    (fc.nnx.Conv, dict(padding="CIRCULAR", pad_mode="reflect"), "pad_mode"),
    (fc.nnx.Conv, dict(strides=(1, 2, 3)), "strides"),
    (fc.nnx.ConvTranspose, dict(pad_mode="mirror"), "pad_mode"),
    (fc.nnx.ConvTranspose, dict(padding="REFLECT", pad_mode="circular"), "pad_mode"),
  ]
  for cls, kwargs, match in cases:
    layer = cls(4, 6, (3, 2), kernel_init=keyed_init, rngs=nnx.Rngs(0), **kwargs)
    with pytest.raises(ValueError, match=match):
      layer(x)


# --- transformations ----------------------------------------------------------------------


@TRANSPOSED
def test_split_merge_round_trip(transposed):
  layer = fc_layer(
    transposed, 4, 6, (3, 2), strides=2, convention="lasagne", kernel_init=keyed_init
  )
  nnx.update(layer, randomize(params_of(layer)))
  x = normal((2, 4, 7, 6))
  graphdef, state = nnx.split(layer)
  merged = nnx.merge(graphdef, state)
  assert type(merged) is type(layer)
  chex.assert_trees_all_equal(params_of(merged), params_of(layer))
  assert_close(merged(x), layer(x))
  # The functional form: jax.jit over (graphdef, state).
  apply = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))
  assert_close(apply(state, x), layer(x))


@TRANSPOSED
def test_nnx_jit_traces_once_per_shape(transposed):
  layer = fc_layer(
    transposed, 4, 6, (3, 2), strides=2, convention="pytorch", kernel_init=keyed_init
  )
  x = normal((2, 4, 7, 6))
  want = layer(x)
  traces = []

  @nnx.jit
  def apply(module, x):
    traces.append(None)
    return module(x)

  assert_close(apply(layer, x), want)
  nnx.update(layer, randomize(params_of(layer)))
  assert_close(apply(layer, x + 1), layer(x + 1))
  assert len(traces) == 1


def test_nnx_jit_trains_like_flax_nnx():
  """One SGD step under nnx.jit moves both modules' params identically."""
  layer, theirs = pair(False, 4, 6, (3, 2), strides=2, kernel_init=keyed_init)
  nnx.update(theirs, randomize(params_of(theirs)))
  nnx.update(layer, params_of(theirs))
  x = normal((2, 7, 6, 4))

  @nnx.jit
  def step(module, x):
    grads = nnx.grad(lambda m: jnp.sum(jnp.tanh(m(x))))(module)
    nnx.update(module, jax.tree.map(lambda p, g: p - 0.1 * g, params_of(module), grads))

  step(layer, x)
  step(theirs, x)
  chex.assert_trees_all_close(params_of(layer), params_of(theirs), rtol=1e-5, atol=1e-5)


def test_fft_method_is_the_direct_method():
  x = normal((2, 4, 12, 10))
  kwargs = dict(strides=2, feature_group_count=2, convention="theano", kernel_init=keyed_init)
  direct = fc.nnx.Conv(4, 6, (5, 4), rngs=nnx.Rngs(0), **kwargs)
  fft = fc.nnx.Conv(4, 6, (5, 4), method="fft", rngs=nnx.Rngs(0), **kwargs)
  chex.assert_trees_all_equal(params_of(fft), params_of(direct))
  nnx.update(direct, randomize(params_of(direct)))
  nnx.update(fft, params_of(direct))
  assert_close(fft(x), direct(x), rtol=1e-4)


def test_input_with_the_wrong_channel_count_names_in_features():
  layer = fc.nnx.Conv(3, 4, (3, 3), convention="pytorch", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"5 channels .*in_features=3"):
    layer(jnp.ones((2, 5, 8, 8)))
