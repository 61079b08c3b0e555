"""flipconv against ONNX Runtime: one-node ``ConvTranspose`` and ``Conv`` models.

Each model is built here with ``onnx.helper``, checked with ``onnx.checker`` and run
on ONNX Runtime's CPU provider; the weights go to flipconv exactly as ONNX holds
them (``convention="onnx"``). ONNX Runtime runs these ops in float32 only, so the
comparisons are at 1e-5.

ONNX attribute -> flipconv argument:

* ``pads = [b1, b2, ..., e1, e2, ...]`` -> ``padding=((b1, e1), (b2, e2), ...)``;
* ``auto_pad="SAME_UPPER"`` -> ``"SAME"``, ``"SAME_LOWER"`` -> ``"SAME_LOWER"``
  (ONNX Runtime 1.32 follows the ONNX spec: the odd extra padding goes at the end
  for SAME_UPPER, at the start for SAME_LOWER, in Conv *and* ConvTranspose);
* ``ConvTranspose(output_shape=N)`` computes its pads from N (spec: total
  ``s * (m - 1) + k_eff - N``, the odd extra at the start unless SAME_UPPER), which
  for ``(m - 1) * s < N <= m * s`` is flipconv's ``"SAME_LOWER"`` (``"SAME"`` with
  SAME_UPPER) with ``output_shape=N``.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import flipconv as fc

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

TOL = 1e-5


def run_onnx(op: str, x: np.ndarray, w: np.ndarray, **attrs) -> np.ndarray:
  """Builds, checks and runs a one-node model ``Y = op(X, W, **attrs)``."""
  io = lambda name, shape: helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
  node = helper.make_node(op, ["X", "W"], ["Y"], **attrs)
  graph = helper.make_graph(
    [node], op.lower(), [io("X", x.shape), io("W", w.shape)], [io("Y", [None] * x.ndim)]
  )
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
  onnx.checker.check_model(model)
  session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
  return session.run(None, {"X": x, "W": w})[0]


def pairs(pads: list[int]) -> tuple[tuple[int, int], ...]:
  """ONNX ``pads`` (all begins, then all ends) as flipconv ``(low, high)`` pairs."""
  n = len(pads) // 2
  return tuple((pads[i], pads[n + i]) for i in range(n))


def arrays(x_shape, w_shape, seed=0):
  rng = np.random.default_rng(seed)
  return (
    rng.standard_normal(x_shape).astype(np.float32),
    rng.standard_normal(w_shape).astype(np.float32),
  )


# --- ConvTranspose -------------------------------------------------------------------------

CT_CASES = {
  # name: (x shape, W shape (C, M/group, k...), ONNX attributes)
  "1d-pads": ((1, 2, 5), (2, 3, 3), dict(strides=[2], pads=[1, 0])),
  "2d-group-dilation-output-padding": (
    (2, 4, 4, 5),
    (4, 2, 3, 2),
    dict(strides=[2, 3], pads=[1, 0, 0, 1], dilations=[2, 1], group=2, output_padding=[1, 2]),
  ),
  "2d-depthwise": ((1, 3, 4, 4), (3, 2, 3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1], group=3)),
  "2d-dilated-output-padding": (
    (1, 2, 4, 3),
    (2, 2, 2, 2),
    dict(strides=[3, 2], dilations=[3, 1], output_padding=[2, 1]),
  ),
  "3d": (
    (1, 2, 3, 3, 2),
    (2, 2, 2, 3, 2),
    dict(strides=[1, 2, 2], pads=[0, 1, 0, 1, 0, 1], output_padding=[0, 1, 1]),
  ),
}


@pytest.mark.parametrize("case", list(CT_CASES.values()), ids=list(CT_CASES))
def test_conv_transpose_with_pads_equals_onnxruntime(case):
  x_shape, w_shape, attrs = case
  x, w = arrays(x_shape, w_shape)
  expected = run_onnx("ConvTranspose", x, w, **attrs)
  n = x.ndim - 2
  out = fc.conv_transpose(
    x,
    w,
    convention="onnx",
    strides=attrs["strides"],
    padding=pairs(attrs.get("pads", [0] * 2 * n)),
    dilation=attrs.get("dilations", 1),
    groups=attrs.get("group", 1),
    output_padding=attrs.get("output_padding"),
  )
  assert out.shape == expected.shape
  np.testing.assert_allclose(out, expected, rtol=TOL, atol=TOL)


AUTO_PAD = {"SAME_UPPER": "SAME", "SAME_LOWER": "SAME_LOWER", "VALID": "VALID"}


@pytest.mark.parametrize("auto_pad", list(AUTO_PAD))
def test_conv_transpose_auto_pad_equals_onnxruntime(auto_pad):
  x, _ = arrays((1, 2, 3, 4), (1,))
  m = np.array(x.shape[2:])
  for kernel, strides, dilations in [
    ((3, 4), (2, 2), (1, 1)),
    ((2, 3), (2, 1), (2, 2)),
    ((4, 1), (2, 1), (1, 1)),
    ((3, 2), (1, 2), (2, 1)),
  ]:
    w = arrays((1,), (2, 3, *kernel), seed=1)[1]
    k_eff = (np.array(kernel) - 1) * dilations + 1
    assert all(k_eff >= strides)  # for k_eff < stride see the next test
    expected = run_onnx(
      "ConvTranspose", x, w, strides=list(strides), dilations=list(dilations), auto_pad=auto_pad
    )
    out = fc.conv_transpose(
      x, w, convention="onnx", strides=strides, dilation=dilations, padding=AUTO_PAD[auto_pad]
    )
    if auto_pad != "VALID":
      assert out.shape[2:] == tuple(m * strides)  # the spec: output = input * stride
    assert out.shape == expected.shape, (kernel, strides, dilations)
    np.testing.assert_allclose(out, expected, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
def test_onnxruntime_same_transpose_is_cut_short_where_the_kernel_is_smaller_than_the_stride(
  auto_pad,
):
  """ONNX Runtime 1.32 (and onnx's shape inference) give (m - 1) * s + k_eff there, not the
  spec's m * s (which onnx.reference's evaluator and flipconv give): the values agree, and
  flipconv's extra elements are zeros (no input reaches them)."""
  x, _ = arrays((1, 2, 3, 4), (1,))
  m = np.array(x.shape[2:])
  for kernel, strides, dilations in [
    ((2, 3), (3, 1), (1, 2)),
    ((1, 1), (3, 2), (1, 1)),
    ((1, 2), (2, 3), (1, 1)),
  ]:
    w = arrays((1,), (2, 3, *kernel), seed=1)[1]
    k_eff = (np.array(kernel) - 1) * dilations + 1
    expected = run_onnx(
      "ConvTranspose", x, w, strides=list(strides), dilations=list(dilations), auto_pad=auto_pad
    )
    short = tuple(np.where(k_eff < strides, (m - 1) * strides + k_eff, m * strides))
    assert expected.shape[2:] == short
    kw = dict(convention="onnx", strides=strides, dilation=dilations, padding=AUTO_PAD[auto_pad])
    np.testing.assert_allclose(
      fc.conv_transpose(x, w, **kw, output_shape=short), expected, rtol=TOL, atol=TOL
    )
    full = np.asarray(fc.conv_transpose(x, w, **kw))
    assert full.shape[2:] == tuple(m * strides)
    np.testing.assert_allclose(full[:, :, : short[0], : short[1]], expected, rtol=TOL, atol=TOL)
    assert not full[:, :, short[0] :].any() and not full[:, :, :, short[1] :].any()


def test_conv_transpose_same_upper_and_lower_differ_where_the_padding_is_odd():
  """The auto_pad test can tell the two apart: with an odd total they give other values."""
  x, w = arrays((1, 1, 4), (1, 1, 3))  # total padding k - s = 1 with stride 2
  upper = run_onnx("ConvTranspose", x, w, strides=[2], auto_pad="SAME_UPPER")
  lower = run_onnx("ConvTranspose", x, w, strides=[2], auto_pad="SAME_LOWER")
  assert upper.shape == lower.shape == (1, 1, 8)
  assert not np.allclose(upper, lower)
  # SAME_UPPER drops the odd extra at the end, SAME_LOWER at the start (the spec's words).
  full = fc.conv_transpose(x, w, convention="onnx", strides=2, padding=0)  # size 9
  np.testing.assert_allclose(upper, full[..., :8], rtol=TOL, atol=TOL)
  np.testing.assert_allclose(lower, full[..., 1:], rtol=TOL, atol=TOL)


@pytest.mark.parametrize("auto_pad", ["NOTSET", "SAME_UPPER", "SAME_LOWER"])
def test_conv_transpose_output_shape_equals_onnxruntime(auto_pad):
  x, _ = arrays((2, 2, 4, 3), (1,))
  padding = "SAME" if auto_pad == "SAME_UPPER" else "SAME_LOWER"
  for kernel, strides in [((3, 3), (3, 2)), ((4, 2), (2, 2))]:  # k >= s: no negative pads
    w = arrays((1,), (2, 3, *kernel), seed=2)[1]
    m = np.array(x.shape[2:])
    sizes = [range(lo, hi + 1) for lo, hi in zip((m - 1) * strides + 1, m * strides, strict=True)]
    for shape in itertools.product(*sizes):  # every N with (m - 1) * s < N <= m * s
      expected = run_onnx(
        "ConvTranspose",
        x,
        w,
        strides=list(strides),
        output_shape=list(shape),
        **({} if auto_pad == "NOTSET" else {"auto_pad": auto_pad}),
      )
      out = fc.conv_transpose(
        x, w, convention="onnx", strides=strides, padding=padding, output_shape=shape
      )
      assert out.shape == expected.shape == (2, 3, *shape)
      np.testing.assert_allclose(out, expected, rtol=TOL, atol=TOL)
    if strides == (3, 2):  # a size ONNX accepts (it pads more) but no SAME input has
      with pytest.raises(ValueError, match=r"output_shape \(9, 5\).* sizes 10\.\.12"):
        fc.conv_transpose(
          x, w, convention="onnx", strides=strides, padding=padding, output_shape=(9, 5)
        )


def test_onnxruntime_refuses_output_padding_between_stride_and_dilation():
  """The ONNX spec (like PyTorch and flipconv) allows output_padding < max(stride, dilation);
  ONNX Runtime 1.32 refuses output_padding >= stride at run time."""
  x, w = arrays((1, 2, 4), (2, 2, 2))
  with pytest.raises(Exception, match=r"output_padding \(2\) may be too large for stride"):
    run_onnx("ConvTranspose", x, w, strides=[1], dilations=[3], output_padding=[2])
  out = fc.conv_transpose(x, w, convention="onnx", dilation=3, output_padding=2)
  assert out.shape == (1, 2, (4 - 1) + 3 * (2 - 1) + 1 + 2)


def test_onnxruntime_conv_transpose_equals_pytorch_default_size():
  """ONNX ConvTranspose without output_shape has PyTorch's default size (CONVENTIONS.md)."""
  x, w = arrays((1, 2, 5, 4), (2, 3, 3, 2))
  expected = run_onnx("ConvTranspose", x, w, strides=[3, 2], pads=[1, 0, 1, 0])
  assert expected.shape == (1, 3, (5 - 1) * 3 + 3 - 2, (4 - 1) * 2 + 2)
  out = fc.conv_transpose(x, w, convention="onnx", strides=(3, 2), padding=(1, 0))
  np.testing.assert_allclose(out, expected, rtol=TOL, atol=TOL)


# --- Conv ----------------------------------------------------------------------------------

CONV_CASES = {
  "1d-pads": ((1, 2, 9), (3, 2, 3), dict(strides=[2], pads=[2, 1])),
  "2d-pads-group-dilation": (
    (2, 4, 7, 8),
    (6, 2, 3, 2),
    dict(strides=[1, 2], pads=[1, 2, 0, 1], dilations=[2, 1], group=2),
  ),
  "2d-depthwise-valid": ((1, 3, 6, 5), (6, 1, 3, 3), dict(group=3, auto_pad="VALID")),
  "2d-same-upper-even-kernel": (
    (1, 2, 7, 8),
    (3, 2, 4, 2),
    dict(strides=[2, 2], auto_pad="SAME_UPPER"),
  ),
  "2d-same-lower-even-kernel": (
    (1, 2, 7, 8),
    (3, 2, 4, 2),
    dict(strides=[2, 2], auto_pad="SAME_LOWER"),
  ),
  # (ONNX Runtime 1.32 refuses dilations with auto_pad SAME_* in Conv, not in ConvTranspose.)
  "2d-same-lower-strides": (
    (1, 2, 6, 9),
    (3, 2, 2, 4),
    dict(strides=[2, 3], auto_pad="SAME_LOWER"),
  ),
  "3d-same-upper-group": (
    (1, 4, 5, 4, 6),
    (4, 2, 2, 3, 2),
    dict(strides=[2, 1, 2], group=2, auto_pad="SAME_UPPER"),
  ),
}


@pytest.mark.parametrize("case", list(CONV_CASES.values()), ids=list(CONV_CASES))
def test_conv_equals_onnxruntime(case):
  x_shape, w_shape, attrs = case
  x, w = arrays(x_shape, w_shape)
  expected = run_onnx("Conv", x, w, **attrs)
  n = x.ndim - 2
  padding = (
    AUTO_PAD[attrs["auto_pad"]] if "auto_pad" in attrs else pairs(attrs.get("pads", [0] * 2 * n))
  )
  out = fc.conv(
    x,
    w,
    convention="onnx",
    strides=attrs.get("strides", 1),
    padding=padding,
    dilation=attrs.get("dilations", 1),
    groups=attrs.get("group", 1),
  )
  assert out.shape == expected.shape
  np.testing.assert_allclose(out, expected, rtol=TOL, atol=TOL)
  if attrs.get("auto_pad", "").startswith("SAME"):  # the other SAME gives other values here
    other = "SAME_LOWER" if padding == "SAME" else "SAME"
    assert not np.allclose(
      fc.conv(
        x,
        w,
        convention="onnx",
        strides=attrs.get("strides", 1),
        padding=other,
        dilation=attrs.get("dilations", 1),
        groups=attrs.get("group", 1),
      ),
      expected,
      atol=1e-3,
    )
