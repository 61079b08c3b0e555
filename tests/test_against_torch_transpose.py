"""``fc.conv_transpose(convention="pytorch")`` against PyTorch's transposed convolutions.

PyTorch's weight ``(in_t, out_t / groups, *k)`` is passed exactly as torch holds it;
strides, padding, dilation, groups and output_padding are passed with torch's meaning.
float64 on both sides (jax under ``enable_x64``), compared at 1e-10; grouped strided
cases in float32 at 1e-5 (see ``precision``).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import flipconv as fc

torch = pytest.importorskip("torch")
F = torch.nn.functional
TORCH_FN = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def precision(groups: int, stride) -> tuple[type, float]:
  """float64 at 1e-10; float32 at 1e-5 for grouped strided convs, where XLA's CPU compiler
  (jax 0.10.2) aborts on some float64 shapes (see test_transpose.precision)."""
  if groups > 1 and any(s > 1 for s in np.atleast_1d(stride)):
    return np.float32, 1e-5
  return np.float64, 1e-10


def torch_vs_flipconv(y, w, *, stride, padding, dilation, groups, output_padding):
  """(flipconv's output, torch's output, tolerance) for the same arrays and arguments."""
  dtype, tol = precision(groups, stride)
  y, w = y.astype(dtype), w.astype(dtype)
  expected = TORCH_FN[y.ndim - 2](
    torch.from_numpy(y),
    torch.from_numpy(w),
    stride=stride,
    padding=padding,
    output_padding=output_padding,
    groups=groups,
    dilation=dilation,
  ).numpy()
  with jax.enable_x64(True):
    out = fc.conv_transpose(
      y,
      w,
      convention="pytorch",
      strides=stride,
      padding=padding,
      dilation=dilation,
      groups=groups,
      output_padding=output_padding,
    )
  assert out.dtype == dtype
  return np.asarray(out), expected, tol


CASES = {
  # name: (y shape NC..., w shape (in_t, out_t/groups, k...), stride, padding, dilation,
  #        groups, output_padding)
  "1d": ((2, 3, 7), (3, 2, 4), 2, 1, 1, 1, 1),
  "1d-dilated-groups": ((1, 4, 6), (4, 3, 3), 3, 2, 2, 2, 2),
  "1d-output-padding-below-dilation": ((1, 2, 5), (2, 3, 3), 1, 1, 3, 1, 2),
  "2d": ((2, 3, 5, 6), (3, 4, 3, 2), (2, 3), (1, 0), 1, 1, (1, 2)),
  "2d-depthwise": ((1, 4, 5, 5), (4, 2, 3, 3), 2, 1, (1, 2), 4, 1),
  "2d-groups-dilation": ((2, 6, 4, 5), (6, 1, 2, 3), (3, 1), (2, 1), (2, 2), 3, (2, 1)),
  "3d": ((1, 2, 3, 4, 3), (2, 3, 2, 3, 2), (1, 2, 2), (0, 1, 1), 1, 1, (0, 1, 0)),
  "3d-groups": ((1, 4, 3, 3, 4), (4, 1, 3, 2, 2), 2, (1, 0, 1), (1, 2, 1), 2, 1),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_conv_transpose_equals_torch(case):
  y_shape, w_shape, stride, padding, dilation, groups, output_padding = case
  rng = np.random.default_rng(0)
  y, w = rng.standard_normal(y_shape), rng.standard_normal(w_shape)
  out, expected, tol = torch_vs_flipconv(
    y,
    w,
    stride=stride,
    padding=padding,
    dilation=dilation,
    groups=groups,
    output_padding=output_padding,
  )
  assert out.shape == expected.shape
  np.testing.assert_allclose(out, expected, rtol=tol, atol=tol)


@st.composite
def torch_cases(draw):
  n = draw(st.integers(1, 3))
  ints = lambda lo, hi: st.tuples(*[st.integers(lo, hi)] * n)
  k = draw(ints(1, 3 if n < 3 else 2))
  stride, dilation = draw(ints(1, 3)), draw(ints(1, 2))
  groups = draw(st.sampled_from([1, 2, 3]))
  in_per, out_per = draw(st.integers(1, 2)), draw(st.integers(1, 2))
  output_padding = tuple(
    draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation, strict=True)
  )
  # torch needs a non-empty output, so keep the padding below what would empty it.
  m = draw(ints(1, 4 if n < 3 else 3))
  padding = tuple(
    draw(st.integers(0, max(0, min(2, ((mm - 1) * s + d * (kk - 1) + op) // 2))))
    for mm, s, d, kk, op in zip(m, stride, dilation, k, output_padding, strict=True)
  )
  return dict(
    y_shape=(draw(st.integers(1, 2)), in_per * groups, *m),
    w_shape=(in_per * groups, out_per, *k),
    stride=stride,
    padding=padding,
    dilation=dilation,
    groups=groups,
    output_padding=output_padding,
    seed=draw(st.integers(0, 2**16)),
  )


@given(torch_cases())
def test_conv_transpose_equals_torch_everywhere(case):
  rng = np.random.default_rng(case.pop("seed"))
  y, w = rng.standard_normal(case.pop("y_shape")), rng.standard_normal(case.pop("w_shape"))
  out, expected, tol = torch_vs_flipconv(y, w, **case)
  assert out.shape == expected.shape
  np.testing.assert_allclose(out, expected, rtol=tol, atol=tol)


def test_conv_transpose_equals_torch_in_float32():
  rng = np.random.default_rng(1)
  y = rng.standard_normal((2, 4, 6, 5)).astype(np.float32)
  w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
  expected = F.conv_transpose2d(
    torch.from_numpy(y), torch.from_numpy(w), stride=2, padding=1, output_padding=1
  ).numpy()
  out = fc.conv_transpose(y, w, convention="pytorch", strides=2, padding=1, output_padding=1)
  assert out.dtype == np.float32
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("output_size", [(9, 12), (10, 13), (10, 14), (9, 15)])
def test_conv_transpose2d_module_with_output_size(output_size):
  """nn.ConvTranspose2d(padding_mode="zeros")(y, output_size=...) == output_shape + bias."""
  torch.manual_seed(0)
  layer = torch.nn.ConvTranspose2d(
    4,
    6,
    (3, 4),
    stride=(2, 3),
    padding=(1, 2),
    dilation=(1, 2),
    groups=2,
    bias=True,
    padding_mode="zeros",
  )
  y = torch.randn(2, 4, 5, 4)  # float32: grouped and strided (see precision)
  weight, bias = layer.weight.detach().numpy(), layer.bias.detach().numpy()
  kw = dict(convention="pytorch", strides=(2, 3), padding=(1, 2), dilation=(1, 2), groups=2)
  if output_size[1] > 14:  # out of the valid range: both refuse, both say the range
    with pytest.raises(ValueError, match=r"from \[9, 12\] to \[10, 14\]"):
      layer(y, output_size=output_size)
    with pytest.raises(ValueError, match=r"output_shape \(9, 15\) .* sizes 12\.\.14"):
      fc.conv_transpose(y.numpy(), weight, **kw, output_shape=output_size)
    return
  with torch.no_grad():
    expected = layer(y, output_size=output_size).numpy()
  out = fc.conv_transpose(y.numpy(), weight, **kw, output_shape=output_size)
  out = np.asarray(out) + bias[:, None, None]
  assert out.shape == expected.shape == (2, 6, *output_size)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_torch_conv_transpose_is_the_gradient_of_its_conv():
  """The fact behind transpose_flip=False and the OIHW transposed weight (CONVENTIONS.md)."""
  rng = np.random.default_rng(2)
  w = torch.from_numpy(rng.standard_normal((4, 3, 3, 2)))  # ConvTranspose weight (in_t, out_t)
  x = torch.zeros(1, 3, 8, 7, dtype=torch.float64, requires_grad=True)
  y = F.conv2d(x, w, stride=2, padding=1)  # forward conv with the same tensor as OIHW
  g = torch.from_numpy(rng.standard_normal(tuple(y.shape)))
  (grad,) = torch.autograd.grad(y, x, g)
  with jax.enable_x64(True):
    out = fc.conv_transpose(
      g.numpy(), w.numpy(), convention="pytorch", strides=2, padding=1, output_shape=(8, 7)
    )
  np.testing.assert_allclose(out, grad.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
  "kw,name",
  [
    (dict(stride=2, dilation=1, output_padding=2), "output_padding"),
    (dict(stride=2, dilation=3, output_padding=3), "output_padding"),
    (dict(stride=1, padding=4), "padding"),
    (dict(groups=3), "groups"),
  ],
)
def test_torch_and_flipconv_reject_the_same_arguments(kw, name):
  y, w = np.ones((1, 4, 3)), np.ones((4, 2, 3))
  kw = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1, "output_padding": 0, **kw}
  with pytest.raises(RuntimeError):
    F.conv_transpose1d(torch.from_numpy(y), torch.from_numpy(w), **kw)
  with pytest.raises(ValueError, match=name):
    fc.conv_transpose(
      y,
      w,
      convention="pytorch",
      strides=kw["stride"],
      padding=kw["padding"],
      dilation=kw["dilation"],
      groups=kw["groups"],
      output_padding=kw["output_padding"],
    )
