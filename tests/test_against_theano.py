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

import numpy as np
import pytest

import flipconv as fc
from _theano_fixtures import (
  FILES,
  FIXTURE_DIR,
  MISSING,
  TOL,
  cases,
  ints,
  kind,
  lasagne_padding,
  load,
  theano_padding,
  x64,
)


@pytest.fixture(autouse=True)
def _float64():
  """Run every test here in float64, as the fixtures were made."""
  with x64():
    yield


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
