"""``fc.conv(convention="pytorch")`` against PyTorch's forward convolutions.

The arrays are passed exactly as torch holds them (NC... input, OI... weight) with
torch's meaning of stride, padding, dilation, groups and ``padding_mode``. Torch
computes in float64; flipconv in float32, compared at a tolerance scaled by the
number of products in each output (``I * prod(kernel)``).
"""

from __future__ import annotations

import functools
import math

import jax
import numpy as np
import pytest

import flipconv as fc

torch = pytest.importorskip("torch")
F = torch.nn.functional
TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
TORCH_MODULE = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}


@functools.partial(jax.jit, static_argnames=("kw",))
def _fc_pytorch(x, w, kw):
  return fc.conv(x, w, convention="pytorch", **dict(kw))


def fc_pytorch(x, w, **kw):
  """``fc.conv(x, w, convention="pytorch", **kw)``, jitted (kwargs as hashable tuples)."""
  frozen = {name: tuple(v) if isinstance(v, list) else v for name, v in kw.items()}
  return np.asarray(_fc_pytorch(x, w, tuple(sorted(frozen.items()))))


def tolerance(w: np.ndarray) -> float:
  """Absolute tolerance for float32 sums of ``n = I * prod(k)`` products of standard normals.

  Each rounding costs at most 6e-8 relative to partial sums of size ~sqrt(n); ``1e-6 * n``
  bounds that generously, while a wrong term (an error of size ~1) is far above it.
  """
  return 1e-6 * math.prod(w.shape[1:])


def arrays(x_shape, w_shape, seed=0):
  rng = np.random.default_rng(seed)
  return rng.standard_normal(x_shape), rng.standard_normal(w_shape)


CASES = {
  # name: (x shape, w shape (O, I/groups, *k), stride, padding, dilation, groups)
  "1d": ((2, 3, 11), (4, 3, 3), 1, 0, 1, 1),
  "1d-strided-padded": ((1, 2, 10), (3, 2, 4), 3, 2, 1, 1),
  "1d-dilated-groups": ((2, 4, 12), (6, 2, 3), 2, 1, 3, 2),
  "1d-depthwise": ((1, 3, 9), (6, 1, 5), 1, 2, 1, 3),
  "2d": ((2, 3, 7, 8), (5, 3, 3, 2), 1, 0, 1, 1),
  "2d-per-dim": ((1, 4, 9, 7), (4, 2, 3, 3), (2, 1), (1, 2), (1, 2), 2),
  "2d-depthwise": ((2, 4, 6, 6), (4, 1, 3, 3), 2, 1, 1, 4),
  "3d": ((1, 2, 5, 6, 4), (3, 2, 2, 3, 2), 1, 0, 1, 1),
  "3d-groups-strided": ((1, 4, 6, 5, 5), (4, 2, 3, 2, 2), (2, 1, 2), (1, 0, 1), (1, 2, 1), 2),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_conv_equals_torch_functional_conv(case):
  x_shape, w_shape, stride, padding, dilation, groups = case
  x, w = arrays(x_shape, w_shape)
  expected = TORCH_CONV[len(x_shape) - 2](
    torch.from_numpy(x),
    torch.from_numpy(w),
    stride=stride,
    padding=padding,
    dilation=dilation,
    groups=groups,
  ).numpy()
  out = fc_pytorch(
    x.astype(np.float32),
    w.astype(np.float32),
    strides=stride,
    padding=padding,
    dilation=dilation,
    groups=groups,
  )
  assert out.shape == expected.shape
  np.testing.assert_allclose(out, expected, rtol=0, atol=tolerance(w))


SAME_CASES = {
  # name: (x shape, w shape, dilation, groups): odd, even and mixed kernel sizes.
  "1d-odd": ((1, 2, 9), (3, 2, 3), 1, 1),
  "1d-even": ((2, 2, 8), (3, 2, 4), 1, 1),
  "1d-even-dilated": ((1, 2, 9), (2, 2, 2), 3, 1),
  "2d-even-odd": ((1, 4, 7, 6), (4, 2, 2, 3), (1, 2), 2),
  "2d-even-even": ((1, 3, 5, 6), (2, 3, 4, 2), 1, 1),
  "3d-even": ((1, 2, 4, 5, 3), (2, 2, 2, 3, 2), 1, 1),
}


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize("case", list(SAME_CASES.values()), ids=list(SAME_CASES))
def test_padding_same_equals_torch_same(case):
  # torch puts the odd element of an even total at the end, as flipconv's SAME does.
  x_shape, w_shape, dilation, groups = case
  x, w = arrays(x_shape, w_shape, seed=1)
  expected = TORCH_CONV[len(x_shape) - 2](
    torch.from_numpy(x), torch.from_numpy(w), padding="same", dilation=dilation, groups=groups
  ).numpy()
  out = fc_pytorch(
    x.astype(np.float32), w.astype(np.float32), padding="SAME", dilation=dilation, groups=groups
  )
  assert out.shape == expected.shape == x_shape[:1] + w_shape[:1] + x_shape[2:]
  np.testing.assert_allclose(out, expected, rtol=0, atol=tolerance(w))


MODULE_CASES = {
  # name: (x shape, w shape, stride, padding, dilation, groups)
  "1d": ((2, 2, 7), (3, 2, 3), 1, 2, 1, 1),
  "1d-strided-dilated": ((1, 2, 9), (2, 1, 3), 2, 3, 2, 2),
  "2d": ((1, 3, 5, 6), (2, 3, 3, 3), 1, 1, 1, 1),
  "2d-per-dim": ((2, 2, 6, 5), (4, 2, 3, 2), (2, 1), (2, 1), 1, 1),
  "3d": ((1, 2, 4, 4, 5), (2, 2, 2, 3, 3), 1, (1, 2, 1), 1, 1),
}


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("case", list(MODULE_CASES.values()), ids=list(MODULE_CASES))
def test_pad_mode_equals_torch_padding_mode(case, padding_mode):
  x_shape, w_shape, stride, padding, dilation, groups = case
  n = len(x_shape) - 2
  module = TORCH_MODULE[n](
    x_shape[1],
    w_shape[0],
    w_shape[2:],
    stride=stride,
    padding=padding,
    dilation=dilation,
    groups=groups,
    bias=False,
    padding_mode=padding_mode,
  ).double()
  x, w = arrays(x_shape, w_shape, seed=2)
  with torch.no_grad():
    module.weight.copy_(torch.from_numpy(w))
    expected = module(torch.from_numpy(x)).numpy()
  out = fc_pytorch(
    x.astype(np.float32),
    w.astype(np.float32),
    strides=stride,
    padding=padding,
    dilation=dilation,
    groups=groups,
    pad_mode=padding_mode,
  )
  assert out.shape == expected.shape
  np.testing.assert_allclose(out, expected, rtol=0, atol=tolerance(w))


def test_float64_under_x64_matches_torch_to_rounding():
  x, w = arrays((2, 4, 7, 6), (6, 2, 3, 2), seed=3)
  expected = F.conv2d(
    F.pad(torch.from_numpy(x), (1, 1, 2, 2), mode="reflect"),
    torch.from_numpy(w),
    dilation=(2, 1),
    groups=2,
  ).numpy()
  with jax.enable_x64(True):
    out = fc.conv(
      x, w, convention="pytorch", padding=(2, 1), dilation=(2, 1), groups=2, pad_mode="reflect"
    )
    assert out.dtype == np.float64
  np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
