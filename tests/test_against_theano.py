"""flipconv against Theano's and Lasagne's convolutions, through committed PyTensor fixtures.

Theano no longer installs; ``tests/fixtures/make_theano_fixtures.py`` ran PyTensor 2.18.6
(Theano's successor, same ``abstract_conv`` ops) and stored each case in
``tests/fixtures/theano/*.npz``: ``x``, ``kernel`` exactly as Theano/Lasagne hold them
(NCHW input, OIHW filters; Lasagne's ``TransposedConv2DLayer.W`` as
``(num_input_channels, num_filters, fh, fw)``), PyTensor's float64 output ``y`` and the
arguments. Each case is called here with the public API only (``fc.conv`` /
``fc.conv_transpose`` with ``convention="theano"``, ``"lasagne"`` or ``"lasagne-mm"``) and
compared at 1e-10 in float64. The fixtures are committed, so a missing directory fails.

Argument mapping:

* ``conv2d``/``conv3d``: ``border_mode`` ``valid``/``full``/``half`` -> ``"VALID"``/
  ``"FULL"``/``"HALF"``, an int or tuple as it is; ``subsample`` -> ``strides``;
  ``filter_dilation`` -> ``dilation``; ``num_groups`` -> ``groups``; ``filter_flip=False``
  -> ``flip=False`` (``True`` is the convention's own flip).
* ``conv*_grad_wrt_inputs(g, kernel, input_shape, ...)`` -> ``fc.conv_transpose(g, kernel,
  ..., output_shape=input_shape[2:])`` with the same mapping.
* Lasagne ``Conv2DLayer(pad, flip_filters, stride, num_groups)`` -> ``convention="lasagne"``
  (``Conv2DMMLayer``: ``"lasagne-mm"``), ``pad='same'`` -> ``"HALF"``; a non-default
  ``flip_filters`` is passed as ``flip``.
* Lasagne ``TransposedConv2DLayer(crop, flip_filters, stride, output_size)`` ->
  ``fc.conv_transpose(x, W, convention="lasagne", padding=crop, ...)`` with ``W`` as
  stored; ``flip_filters=True`` (Theano ``filter_flip=False``) -> ``flip=False``; the output
  size is flipconv's default unless the layer was given ``output_size``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import jax
import numpy as np
import pytest

import flipconv as fc

FIXTURE_DIR = Path(__file__).parent / "fixtures" / "theano"
FILES = sorted(FIXTURE_DIR.glob("*.npz"))
MISSING = (
  f"no Theano fixtures in {FIXTURE_DIR}: they are committed; regenerate them with "
  "`python tests/fixtures/make_theano_fixtures.py`"
)
TOL = 1e-10


def load(path: Path) -> dict:
  """The arrays and arguments of one fixture (no pickles: every entry is a plain array)."""
  with np.load(path, allow_pickle=False) as data:
    return {k: data[k] for k in data.files}


def kind(path: Path) -> str:
  """Which test a fixture belongs to, from its stored ``op`` and Lasagne layer."""
  with np.load(path, allow_pickle=False) as data:
    if "lasagne_layer" in data.files:
      return str(data["lasagne_layer"])
    return str(data["op"])


def cases(*kinds: str) -> list:
  """One pytest param per fixture of ``kinds``; a failing placeholder if there are none."""
  found = [pytest.param(p, id=p.stem) for p in FILES if kind(p) in kinds]
  return found or [pytest.param(None, id="missing-fixtures")]


@pytest.fixture(autouse=True)
def x64():
  """Run every test here in float64, as the fixtures were made."""
  if hasattr(jax, "enable_x64"):
    ctx = jax.enable_x64(True)
  else:  # jax before the top-level context manager
    from jax.experimental import enable_x64

    ctx = enable_x64()
  with ctx:
    yield


def theano_padding(border_mode: str):
  """flipconv's ``padding`` for Theano's ``border_mode`` (stored as a string)."""
  if border_mode in ("valid", "full", "half"):
    return border_mode.upper()
  value = ast.literal_eval(border_mode)  # an int, a tuple of ints or of (low, high) pairs
  return value if isinstance(value, int) else tuple(value)


def lasagne_padding(pad_repr: str):
  """flipconv's ``padding`` for Lasagne's ``pad``/``crop`` (stored as its Python literal)."""
  pad = ast.literal_eval(pad_repr)
  if isinstance(pad, str):
    # Lasagne 'same' pads filter_size // 2 on both sides: Theano's 'half'.
    return {"valid": "VALID", "full": "FULL", "same": "HALF"}[pad]
  return pad


def ints(a) -> tuple[int, ...]:
  return tuple(int(v) for v in np.atleast_1d(a))


def check(out, case: dict) -> None:
  """flipconv's output ``out`` equals the fixture's PyTensor output, shape and values."""
  out = np.asarray(out)
  assert out.dtype == np.float64
  assert out.shape == case["y"].shape
  np.testing.assert_allclose(out, case["y"], rtol=TOL, atol=TOL)


def test_fixtures_are_committed_and_cover_the_cases():
  assert FIXTURE_DIR.is_dir() and FILES, MISSING
  kinds = [kind(p) for p in FILES]
  for op in (
    "conv2d",
    "conv3d",
    "conv2d_grad_wrt_inputs",
    "conv3d_grad_wrt_inputs",
    "Conv2DLayer",
    "Conv2DMMLayer",
    "TransposedConv2DLayer",
  ):
    assert op in kinds, f"no fixture for {op} in {FIXTURE_DIR}"
  for path in FILES:
    case = load(path)
    assert str(case["pytensor_version"]) == "2.18.6", path.name
    assert case["y"].dtype == np.float64, path.name


@pytest.mark.parametrize("path", cases("conv2d", "conv3d"))
def test_conv_equals_theano_conv(path):
  assert path is not None, MISSING
  case = load(path)
  kw = {"flip": False} if not case["filter_flip"] else {}
  out = fc.conv(
    case["x"],
    case["kernel"],
    convention="theano",
    padding=theano_padding(str(case["border_mode"])),
    strides=ints(case["subsample"]),
    dilation=ints(case["filter_dilation"]),
    groups=int(case["num_groups"]),
    **kw,
  )
  check(out, case)


@pytest.mark.parametrize("path", cases("conv2d_grad_wrt_inputs", "conv3d_grad_wrt_inputs"))
def test_conv_transpose_equals_theano_grad_wrt_inputs(path):
  assert path is not None, MISSING
  case = load(path)
  kw = {"flip": False} if not case["filter_flip"] else {}
  out = fc.conv_transpose(
    case["x"],
    case["kernel"],
    convention="theano",
    padding=theano_padding(str(case["border_mode"])),
    strides=ints(case["subsample"]),
    dilation=ints(case["filter_dilation"]),
    groups=int(case["num_groups"]),
    output_shape=ints(case["input_shape"])[2:],
    **kw,
  )
  check(out, case)


@pytest.mark.parametrize("path", cases("Conv2DLayer", "Conv2DMMLayer"))
def test_conv_equals_lasagne_conv2d_layer(path):
  assert path is not None, MISSING
  case = load(path)
  mm = str(case["lasagne_layer"]) == "Conv2DMMLayer"
  convention = fc.get_convention("lasagne-mm" if mm else "lasagne")
  flip_filters = bool(case["lasagne_flip_filters"])
  # Only a flip_filters other than the layer's default is passed: the rest is the convention.
  kw = {"flip": flip_filters} if flip_filters != convention.flip else {}
  out = fc.conv(
    case["x"],
    case["kernel"],
    convention=convention.name,
    padding=lasagne_padding(str(case["lasagne_pad"])),
    strides=ints(case["lasagne_stride"]),
    groups=int(case["lasagne_num_groups"]),
    **kw,
  )
  check(out, case)


@pytest.mark.parametrize("path", cases("TransposedConv2DLayer"))
def test_conv_transpose_equals_lasagne_transposed_conv2d_layer(path):
  assert path is not None, MISSING
  case = load(path)
  # The layer runs Theano's gradInputs with filter_flip = not flip_filters.
  kw = {"flip": False} if bool(case["lasagne_flip_filters"]) else {}
  output_size = ints(case["lasagne_output_size"]) if case["lasagne_output_size"].size else None
  out = fc.conv_transpose(
    case["x"],
    case["kernel"],
    convention="lasagne",
    padding=lasagne_padding(str(case["lasagne_crop"])),
    strides=ints(case["lasagne_stride"]),
    output_shape=output_size,
    **kw,
  )
  check(out, case)
