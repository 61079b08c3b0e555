"""Torch tensors, ``requires_grad`` ones included, work wherever an array is accepted.

The oracle is PyTorch itself: a layer's own parameters go into flipconv as
they are, and the result is compared with what the layer computes.
"""

from __future__ import annotations

import numpy as np
import pytest

import flipconv as fc

torch = pytest.importorskip("torch")


def _np(t):
  return t.detach().numpy()


def test_conv_takes_a_conv2d_parameter_and_a_tensor_input():
  torch.manual_seed(0)
  layer = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
  x = torch.randn(2, 3, 9, 9, requires_grad=True)
  y = fc.conv(x, layer.weight, convention="pytorch", strides=2, padding=1)
  y = np.asarray(y) + _np(layer.bias)[:, None, None]
  np.testing.assert_allclose(y, _np(layer(x)), rtol=1e-5, atol=1e-5)


def test_convolve_correlate_and_flip_kernel_take_parameters():
  torch.manual_seed(1)
  w = torch.nn.Parameter(torch.randn(4, 3, 3, 3))
  x = torch.randn(1, 3, 7, 7)
  ref = torch.nn.functional.conv2d(x, w).detach().numpy()
  kw = {"layout": "NCHW", "kernel_layout": "OIHW"}
  np.testing.assert_allclose(fc.correlate(x, w, **kw), ref, rtol=1e-5, atol=1e-5)
  flipped = fc.flip_kernel(w, "OIHW")
  np.testing.assert_allclose(fc.convolve(x, flipped, **kw), ref, rtol=1e-5, atol=1e-5)


def test_conv_transpose_takes_a_conv_transpose2d_parameter():
  torch.manual_seed(2)
  layer = torch.nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1, bias=False)
  y = torch.randn(2, 4, 5, 5)
  z = fc.conv_transpose(y, layer.weight, convention="pytorch", strides=2, padding=1)
  np.testing.assert_allclose(z, _np(layer(y)), rtol=1e-5, atol=1e-5)


def test_kernel_converters_take_parameters_as_numpy_views():
  torch.manual_seed(3)
  conv = torch.nn.Conv2d(3, 4, 3)
  linear = torch.nn.Linear(4 * 2 * 2, 5)
  depthwise = torch.nn.Conv2d(4, 8, 3, groups=4)
  w = _np(conv.weight)
  np.testing.assert_array_equal(
    fc.convert_kernel(conv.weight, "pytorch", "flax"), w.transpose(2, 3, 1, 0)
  )
  same = fc.convert_kernel(conv.weight, "pytorch", "onnx")  # nothing to do: no copy
  assert np.shares_memory(same, w)
  dense = fc.convert_linear_kernel(linear.weight, "pytorch", "flax", feature_shape=(4, 2, 2))
  np.testing.assert_array_equal(
    dense, fc.convert_linear_kernel(_np(linear.weight), "pytorch", "flax", feature_shape=(4, 2, 2))
  )
  # In NumPy: torch's (out, C*H*W) rows, their inputs re-ordered (H, W, C), as (in, out).
  want = _np(linear.weight).reshape(5, 4, 2, 2).transpose(0, 2, 3, 1).reshape(5, 16).T
  np.testing.assert_array_equal(dense, want)
  dw = fc.convert_depthwise_kernel(depthwise.weight, "pytorch", "keras", groups=4)
  np.testing.assert_array_equal(
    dw, fc.convert_depthwise_kernel(_np(depthwise.weight), "pytorch", "keras", groups=4)
  )
  # Keras' (H, W, C, multiplier) from torch's (C * multiplier, 1, H, W): channel c * 2 + m.
  np.testing.assert_array_equal(dw, _np(depthwise.weight).reshape(4, 2, 3, 3).transpose(2, 3, 0, 1))
