"""``fc.linen`` / ``fc.nnx`` modules against the frameworks' own layers, weights unchanged.

Each framework's layer is the oracle for the flipconv module that holds its parameters
exactly as the framework stores them (no transpose, no flip, no copy into another layout):

* PyTorch: ``nn.Conv{1,2,3}d`` and ``nn.ConvTranspose{1,2,3}d`` with their seeded default
  init; ``weight`` and ``bias`` (as NumPy) become the module's ``kernel`` and ``bias`` with
  ``convention="pytorch"``, the same NCHW input goes through both, float32, tolerance scaled
  with the fan-in.
* Lasagne: the committed PyTensor 2.18.6 runs in ``tests/fixtures/theano/lasagne_*.npz``
  (fields in the README there). ``W`` becomes the kernel of ``convention="lasagne"``
  (``"lasagne-mm"`` for ``Conv2DMMLayer``), compared in float64 at 1e-10. Lasagne's
  ``pad``/``crop`` map to flipconv paddings: ``'same'`` -> ``"HALF"``, ``'full'`` ->
  ``"FULL"``, ``'valid'`` -> ``"VALID"``, ints and pairs as they are; a
  ``TransposedConv2DLayer``'s ``output_size`` becomes ``output_padding`` above Lasagne's
  default size. The fixtures hold no bias (``b``), so the Lasagne modules run without one.
* A negative control: the same Lasagne ``W``, only transposed to HWIO, in a plain
  ``flax.linen.Conv`` misses the fixture by far, and the comparison used above says so.
"""

from __future__ import annotations

import ast
import warnings
import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import flipconv as fc
from _theano_fixtures import FILES, MISSING, TOL, cases, ints, lasagne_padding, load, x64

FAMILIES = ["linen", "nnx"]
# Full float32 on every backend (no TF32/bf16 passes on GPU), as PyTorch's CPU kernels.
HIGHEST = jax.lax.Precision.HIGHEST


@pytest.fixture(scope="module")
def torch():
  """PyTorch, or a skip with the reason (only the PyTorch tests need it)."""
  return pytest.importorskip("torch")


def linen_apply(
  layer: nn.Module, x: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None
) -> np.ndarray:
  """``layer`` applied (jitted) with ``kernel``/``bias`` as given, after checking that they
  have the shapes of the params it creates."""
  params = {"kernel": kernel} if bias is None else {"kernel": kernel, "bias": bias}
  shapes = jax.eval_shape(layer.init, jax.random.key(0), x)["params"]
  assert {k: v.shape for k, v in shapes.items()} == {k: v.shape for k, v in params.items()}
  return np.asarray(jax.jit(layer.apply)({"params": params}, x))


def nnx_apply(
  layer: nnx.Module, x: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None
) -> np.ndarray:
  """``layer`` called (jitted) after ``kernel``/``bias`` are assigned to its params as they
  are."""
  assert layer.kernel.shape == kernel.shape
  layer.kernel[...] = kernel
  if bias is None:
    assert layer.bias is None
  else:
    assert layer.bias.shape == bias.shape
    layer.bias[...] = bias
  return np.asarray(nnx.jit(lambda m, v: m(v))(layer, x))


def nnx_init() -> dict:
  """``rngs`` and initialisers for an nnx module whose parameters are then overwritten (zeros
  spare compiling a random initialiser for every kernel shape)."""
  zeros = nnx.initializers.zeros_init()
  return dict(kernel_init=zeros, bias_init=zeros, rngs=nnx.Rngs(0))


def assert_close(out: np.ndarray, expected: np.ndarray, tol: float) -> None:
  assert out.dtype == expected.dtype
  assert out.shape == expected.shape
  np.testing.assert_allclose(out, expected, rtol=tol, atol=tol)


def float32_tolerance(fan_in: int) -> float:
  """A float32 sum of ``fan_in`` products of O(1) inputs and O(1/sqrt(fan_in)) weights:
  rounding grows like sqrt(fan_in) ulps (the errors seen are ~25 times smaller)."""
  return 1e-6 * max(1.0, float(np.sqrt(fan_in)))


# --------------------------------------------------------------------------------- PyTorch

# name: torch constructor arguments (in_channels, out_channels, kernel_size, ...) and the
# input's spatial size. Values are passed to flipconv in the same form (int or tuple).
TORCH_CONV = {
  "1d-int-pad-stride2": dict(size=(11,), c_in=3, c_out=4, k=3, stride=2, padding=1),
  "1d-tuple-pad-dilation-groups": dict(
    size=(12,), c_in=6, c_out=9, k=3, padding=(2,), dilation=2, groups=3
  ),
  "1d-valid-no-bias": dict(size=(9,), c_in=2, c_out=3, k=4, padding="valid", bias=False),
  "1d-same-even": dict(size=(10,), c_in=3, c_out=2, k=4, padding="same"),
  "1d-same-even-dilation3": dict(size=(13,), c_in=2, c_out=3, k=4, padding="same", dilation=3),
  "1d-reflect": dict(size=(9,), c_in=2, c_out=3, k=5, padding=2, padding_mode="reflect"),
  "1d-circular-stride3": dict(
    size=(10,), c_in=2, c_out=2, k=3, stride=3, padding=2, padding_mode="circular"
  ),
  "2d-default": dict(size=(7, 8), c_in=3, c_out=4, k=3),
  "2d-stride-tuple-pad": dict(
    size=(9, 8), c_in=3, c_out=5, k=(3, 2), stride=(2, 1), padding=(1, 2)
  ),
  "2d-dilation-groups": dict(
    size=(10, 9), c_in=4, c_out=6, k=3, dilation=(2, 1), padding=(2, 1), groups=2
  ),
  "2d-depthwise-stride2": dict(size=(9, 9), c_in=4, c_out=8, k=3, stride=2, padding=1, groups=4),
  "2d-same-odd": dict(size=(7, 6), c_in=3, c_out=4, k=3, padding="same"),
  "2d-same-even": dict(size=(7, 6), c_in=2, c_out=3, k=(4, 2), padding="same"),
  "2d-same-even-dilation-groups": dict(
    size=(8, 7), c_in=4, c_out=4, k=(2, 3), padding="same", dilation=(3, 2), groups=2
  ),
  "2d-reflect-tuple-pad": dict(
    size=(8, 7), c_in=2, c_out=3, k=3, padding=(1, 2), padding_mode="reflect"
  ),
  "2d-replicate-stride2": dict(
    size=(7, 8), c_in=3, c_out=2, k=(3, 4), stride=2, padding=2, padding_mode="replicate"
  ),
  "2d-circular-dilation": dict(
    size=(8, 8), c_in=2, c_out=3, k=3, padding=(2, 1), dilation=2, padding_mode="circular"
  ),
  "2d-same-even-reflect": dict(
    size=(7, 6), c_in=2, c_out=3, k=(4, 3), padding="same", padding_mode="reflect"
  ),
  "2d-same-even-circular": dict(
    size=(6, 7), c_in=2, c_out=2, k=(2, 4), padding="same", padding_mode="circular"
  ),
  "3d-int-pad-stride": dict(size=(6, 5, 7), c_in=2, c_out=3, k=3, stride=(2, 1, 2), padding=1),
  "3d-groups-dilation": dict(
    size=(7, 6, 6), c_in=4, c_out=6, k=(2, 3, 2), dilation=(2, 1, 2), padding=(1, 0, 2), groups=2
  ),
  "3d-same-even": dict(size=(5, 6, 5), c_in=2, c_out=3, k=(2, 3, 4), padding="same"),
  "3d-replicate": dict(
    size=(5, 5, 6), c_in=2, c_out=2, k=3, padding=(1, 2, 1), padding_mode="replicate"
  ),
  "3d-circular-no-bias": dict(
    size=(5, 6, 5), c_in=3, c_out=2, k=(3, 2, 3), padding=1, padding_mode="circular", bias=False
  ),
}

# name: torch ConvTranspose constructor arguments and the input's spatial size.
TORCH_CONV_TRANSPOSE = {
  "1d-stride2-pad-output-padding": dict(
    size=(7,), c_in=3, c_out=4, k=4, stride=2, padding=1, output_padding=1
  ),
  "1d-dilation-groups": dict(
    size=(6,), c_in=4, c_out=6, k=3, stride=3, padding=2, dilation=2, groups=2, output_padding=2
  ),
  "1d-default-no-bias": dict(size=(5,), c_in=2, c_out=3, k=3, bias=False),
  "2d-stride-tuple-pad-output-padding": dict(
    size=(5, 6), c_in=3, c_out=4, k=(3, 2), stride=(2, 3), padding=(1, 0), output_padding=(1, 2)
  ),
  "2d-stride2-pad1-even": dict(size=(4, 5), c_in=3, c_out=2, k=4, stride=2, padding=1),
  "2d-groups-dilation": dict(
    size=(4, 5),
    c_in=6,
    c_out=3,
    k=(2, 3),
    stride=(3, 1),
    padding=(2, 1),
    dilation=(2, 2),
    groups=3,
    output_padding=(2, 1),
  ),
  "2d-depthwise": dict(
    size=(5, 5),
    c_in=4,
    c_out=8,
    k=3,
    stride=2,
    padding=1,
    dilation=(1, 2),
    groups=4,
    output_padding=1,
  ),
  "3d": dict(
    size=(3, 4, 3),
    c_in=2,
    c_out=3,
    k=(2, 3, 2),
    stride=(1, 2, 2),
    padding=(0, 1, 1),
    output_padding=(0, 1, 0),
  ),
  "3d-groups": dict(
    size=(3, 3, 4),
    c_in=4,
    c_out=2,
    k=(3, 2, 2),
    stride=2,
    padding=(1, 0, 1),
    dilation=(1, 2, 1),
    groups=2,
    output_padding=1,
  ),
}


def torch_layer(torch, spec: dict, transposed: bool, seed: int):
  """The seeded torch layer of ``spec`` and a float32 NCHW input for it."""
  args = {k: v for k, v in spec.items() if k not in ("size", "c_in", "c_out", "k")}
  n = len(spec["size"])
  cls = getattr(torch.nn, f"ConvTranspose{n}d" if transposed else f"Conv{n}d")
  torch.manual_seed(seed)
  layer = cls(spec["c_in"], spec["c_out"], spec["k"], dtype=torch.float32, **args)
  x = np.random.default_rng(seed).standard_normal((2, spec["c_in"], *spec["size"]))
  return layer, x.astype(np.float32)


def torch_params(layer) -> tuple[np.ndarray, np.ndarray | None]:
  weight = layer.weight.detach().numpy()
  bias = None if layer.bias is None else layer.bias.detach().numpy()
  return weight, bias


def flipconv_padding(padding):
  """PyTorch's ``padding`` in flipconv's spelling (strings are case-insensitive there)."""
  return padding.upper() if isinstance(padding, str) else padding


def seed_of(name: str) -> int:
  """A seed of its own for every case (stable across runs and processes)."""
  return zlib.crc32(name.encode())


def torch_vs_module(
  torch, spec: dict, family: str, *, transposed: bool, seed: int, unbatched: bool = False
) -> None:
  """The torch layer of ``spec`` and the flipconv module holding its weight and bias
  unchanged give the same output for the same input."""
  layer, x = torch_layer(torch, spec, transposed, seed)
  if unbatched:
    x = x[0]  # (C, *spatial): both take an input without a batch axis
  with torch.no_grad(), warnings.catch_warnings():
    # torch's note that 'same' with an even kernel copies the input; nothing to act on.
    warnings.filterwarnings("ignore", "Using padding='same'", UserWarning)
    expected = layer(torch.from_numpy(x)).numpy()
  weight, bias = torch_params(layer)
  groups, k = spec.get("groups", 1), layer.kernel_size
  kw = dict(
    strides=spec.get("stride", 1),
    kernel_dilation=spec.get("dilation", 1),
    feature_group_count=groups,
    use_bias=bias is not None,
    precision=HIGHEST,
    convention="pytorch",
  )
  if transposed:
    # (in, out / groups, k...): the forward conv's OIHW with O = the transposed layer's input.
    assert weight.shape == (spec["c_in"], spec["c_out"] // groups, *k)
    kw.update(padding=spec.get("padding", 0), output_padding=spec.get("output_padding", 0))
    cls = fc.linen.ConvTranspose if family == "linen" else fc.nnx.ConvTranspose
  else:
    assert weight.shape == (spec["c_out"], spec["c_in"] // groups, *k)
    kw.update(
      padding=flipconv_padding(spec.get("padding", 0)), pad_mode=spec.get("padding_mode", "zeros")
    )
    cls = fc.linen.Conv if family == "linen" else fc.nnx.Conv
  if family == "linen":
    out = linen_apply(cls(spec["c_out"], k, **kw), x, weight, bias)
  else:
    out = nnx_apply(cls(spec["c_in"], spec["c_out"], k, **nnx_init(), **kw), x, weight, bias)
  # Each output sums over at most in / groups * prod(k) products.
  fan_in = spec["c_in"] // groups * int(np.prod(k))
  assert_close(out, expected, float32_tolerance(fan_in))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", list(TORCH_CONV))
def test_conv_module_holds_torch_conv_weight_unchanged(torch, name, family):
  torch_vs_module(torch, TORCH_CONV[name], family, transposed=False, seed=seed_of(name))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", list(TORCH_CONV_TRANSPOSE))
def test_conv_transpose_module_holds_torch_conv_transpose_weight_unchanged(torch, name, family):
  torch_vs_module(torch, TORCH_CONV_TRANSPOSE[name], family, transposed=True, seed=seed_of(name))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("transposed", [False, True], ids=["conv", "conv_transpose"])
def test_modules_take_unbatched_input_as_torch_does(torch, transposed, family):
  spec = dict(size=(6, 7), c_in=4, c_out=6, k=(3, 2), stride=2, padding=1, groups=2)
  if transposed:
    spec["output_padding"] = 1
  torch_vs_module(torch, spec, family, transposed=transposed, seed=3, unbatched=True)


# --------------------------------------------------------------------------------- Lasagne

LASAGNE_FILES = [p for p in FILES if p.stem.startswith("lasagne_")]


def lasagne_crop_sizes(crop_repr: str, filter_size: tuple[int, ...]) -> tuple[int, ...]:
  """The crop per axis that Lasagne's TransposedConv2DLayer uses for its default size."""
  crop = ast.literal_eval(crop_repr)
  if isinstance(crop, str):
    return tuple({"valid": 0, "full": f - 1, "same": f // 2}[crop] for f in filter_size)
  return tuple(crop) if isinstance(crop, tuple) else (crop,) * len(filter_size)


def test_lasagne_fixtures_are_committed_and_cover_the_layers():
  assert LASAGNE_FILES, MISSING
  layers = {str(load(p)["lasagne_layer"]) for p in LASAGNE_FILES}
  assert layers == {"Conv2DLayer", "Conv2DMMLayer", "TransposedConv2DLayer"}


def lasagne_conv_module(case: dict, family: str):
  """The flipconv module that stands for the fixture's Conv2DLayer / Conv2DMMLayer."""
  mm = str(case["lasagne_layer"]) == "Conv2DMMLayer"
  convention = fc.get_convention("lasagne-mm" if mm else "lasagne")
  # Lasagne's defaults are flip_filters=True for Conv2DLayer, False for Conv2DMMLayer.
  assert convention.flip is (not mm)
  flip_filters = bool(case["lasagne_flip_filters"])
  kw = dict(
    strides=ints(case["lasagne_stride"]),
    padding=lasagne_padding(str(case["lasagne_pad"])),
    feature_group_count=int(case["lasagne_num_groups"]),
    flip=None if flip_filters == convention.flip else flip_filters,
    use_bias="b" in case,
    convention=convention.name,
  )
  features, size = int(case["lasagne_num_filters"]), ints(case["lasagne_filter_size"])
  if family == "linen":
    return fc.linen.Conv(features, size, **kw)
  return fc.nnx.Conv(
    case["x"].shape[1], features, size, param_dtype=jnp.float64, **nnx_init(), **kw
  )


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("path", cases("Conv2DLayer", "Conv2DMMLayer"))
def test_conv_module_holds_lasagne_W_unchanged(path, family):
  assert path is not None, MISSING
  case = load(path)
  assert case["kernel"].shape[0] == int(case["lasagne_num_filters"])
  with x64():
    module = lasagne_conv_module(case, family)
    run = linen_apply if family == "linen" else nnx_apply
    out = run(module, case["x"], case["kernel"], case.get("b"))
  assert_close(out, case["y"], TOL)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("path", cases("TransposedConv2DLayer"))
def test_conv_transpose_module_holds_lasagne_W_unchanged(path, family):
  assert path is not None, MISSING
  case = load(path)
  w, x = case["kernel"], case["x"]
  size, stride = ints(case["lasagne_filter_size"]), ints(case["lasagne_stride"])
  features = int(case["lasagne_num_filters"])
  # W is (num_input_channels, num_filters, fh, fw), as the layer holds it.
  assert w.shape == (x.shape[1], features, *size)
  crop = lasagne_crop_sizes(str(case["lasagne_crop"]), size)
  default = ints((np.array(x.shape[2:]) - 1) * stride - 2 * np.array(crop) + size)
  if case["lasagne_output_size"].size:
    output_padding = ints(np.array(ints(case["lasagne_output_size"])) - default)
    assert min(output_padding) >= 0 and max(output_padding) > 0
  else:
    output_padding = 0
    assert case["y"].shape[2:] == default  # Lasagne's default size, which flipconv must give
  # flip_filters=True runs Theano's gradInputs with filter_flip=False.
  kw = dict(
    strides=stride,
    padding=lasagne_padding(str(case["lasagne_crop"])),
    output_padding=output_padding,
    flip=False if bool(case["lasagne_flip_filters"]) else None,
    use_bias="b" in case,
    convention="lasagne",
  )
  with x64():
    if family == "linen":
      out = linen_apply(fc.linen.ConvTranspose(features, size, **kw), x, w, case.get("b"))
    else:
      module = fc.nnx.ConvTranspose(
        x.shape[1], features, size, param_dtype=jnp.float64, **nnx_init(), **kw
      )
      out = nnx_apply(module, x, w, case.get("b"))
  assert_close(out, case["y"], TOL)


# ------------------------------------------------------------------------ negative control

# Every forward fixture of a true convolution (flip_filters=True, either layer class).
FLIPPING = [
  p
  for p in cases("Conv2DLayer", "Conv2DMMLayer")
  if p.values[0] is not None and bool(load(p.values[0])["lasagne_flip_filters"])
]


@pytest.mark.parametrize("path", FLIPPING or [pytest.param(None, id="missing-fixtures")])
def test_lasagne_W_only_transposed_into_flax_conv_is_wrong(path):
  """Lasagne's W read as a Flax kernel without the flip misses the fixture by far (so the
  comparison above can fail); with the flip the same Flax layer matches."""
  assert path is not None, MISSING
  case = load(path)
  pads = tuple(tuple(int(v) for v in pair) for pair in case["pads"])  # (low, high) per axis
  layer = nn.Conv(
    int(case["lasagne_num_filters"]),
    ints(case["lasagne_filter_size"]),
    strides=ints(case["lasagne_stride"]),
    padding=pads,
    feature_group_count=int(case["lasagne_num_groups"]),
    use_bias=False,
  )
  x_nhwc = case["x"].transpose(0, 2, 3, 1)

  def flax_out(kernel_oihw: np.ndarray) -> np.ndarray:
    hwio = np.ascontiguousarray(kernel_oihw.transpose(2, 3, 1, 0))
    with x64():
      return linen_apply(layer, x_nhwc, hwio, None).transpose(0, 3, 1, 2)

  w, y = case["kernel"], case["y"]
  wrong = flax_out(w)
  assert wrong.shape == y.shape
  assert np.max(np.abs(wrong - y)) > 0.1 * np.max(np.abs(y))
  with pytest.raises(AssertionError):
    assert_close(wrong, y, TOL)
  assert_close(flax_out(w[:, :, ::-1, ::-1]), y, TOL)
