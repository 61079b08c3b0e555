"""Bad arguments to ``fc.conv`` / ``convolve`` / ``correlate`` / ``flip_kernel``.

Each class of mistake raises ``ValueError`` or ``TypeError`` before lax sees
anything, with a message that names the argument (and never an XLA error).
"""

from __future__ import annotations

import re

import jax
import numpy as np
import pytest
from jax import lax

import flipconv as fc

X = np.ones((2, 4, 6, 5), np.float32)  # NCHW
K = np.ones((6, 4, 3, 2), np.float32)  # OIHW
NCHW = dict(layout="NCHW", kernel_layout="OIHW")


def conv(x=X, k=K, **kw):
  kw = {"flip": False, **NCHW, **kw}
  return lambda: fc.conv(x, k, **kw)


CASES = {
  # name: (exception, pattern the message must match, the failing call)
  "no-flip-no-convention": (
    ValueError,
    r"flip=True.*flip=False.*convention=",
    lambda: fc.conv(X, K, **NCHW),
  ),
  "flip-not-bool": (TypeError, r"flip must be True or False, got 'yes'", conv(flip="yes")),
  "flip-passed-to-convolve": (
    TypeError,
    r"convolve: flip",
    lambda: fc.convolve(X, K, flip=False, **NCHW),
  ),
  "flip-passed-to-correlate": (
    TypeError,
    r"correlate: flip",
    lambda: fc.correlate(X, K, flip=True, **NCHW),
  ),
  "unknown-convention": (
    ValueError,
    r"unknown convention 'pytroch'.*pytorch",
    lambda: fc.conv(X, K, convention="pytroch"),
  ),
  "x-rank-vs-layout": (ValueError, r"x has rank 3 .*layout 'NCHW' has 4 axes", conv(x=X[0])),
  "x-rank-vs-default-layout": (
    ValueError,
    r"x has rank 5 .*layout",
    lambda: fc.conv(X[None], np.ones((3, 2, 4, 6)), flip=True),
  ),
  "kernel-rank-vs-kernel-layout": (
    ValueError,
    r"kernel has rank 3 .*kernel_layout 'OIHW'",
    conv(k=K[0]),
  ),
  "kernel-rank-below-3": (
    ValueError,
    r"kernel must have rank >= 3",
    lambda: fc.conv(X, np.ones((4, 6)), flip=False),
  ),
  "channel-mismatch": (
    ValueError,
    r"kernel has 3 input channels per group but x has 4 channels with groups=1",
    conv(k=np.ones((6, 3, 3, 2))),
  ),
  "groups-do-not-divide-x": (
    ValueError,
    r"x has 4 channels, which groups=3 does not divide",
    conv(k=np.ones((6, 1, 3, 2)), groups=3),
  ),
  "groups-do-not-divide-kernel-o": (
    ValueError,
    r"kernel has 5 output channels, which groups=2",
    conv(k=np.ones((5, 2, 3, 2)), groups=2),
  ),
  "groups-float": (TypeError, r"groups must be a positive int, got 2\.0", conv(groups=2.0)),
  "groups-bool": (TypeError, r"groups must be a positive int, got True", conv(groups=True)),
  "groups-zero": (ValueError, r"groups must be >= 1, got 0", conv(groups=0)),
  "groups-negative": (ValueError, r"groups must be >= 1, got -2", conv(groups=-2)),
  "layout-not-a-string": (TypeError, r"layout must be a layout string", conv(layout=4)),
  "layout-digit": (ValueError, r"layout 'NCH1' must be upper-case letters", conv(layout="NCH1")),
  "layout-lower-case": (
    ValueError,
    r"layout 'NChw' must be upper-case letters",
    conv(layout="NChw"),
  ),
  "kernel-layout-symbol": (
    ValueError,
    r"kernel_layout 'OI-W' must be upper-case letters",
    conv(kernel_layout="OI-W"),
  ),
  "layout-repeats-letter": (
    ValueError,
    r"layout 'NCHH' repeats the letter\(s\) H",
    conv(layout="NCHH"),
  ),
  "kernel-layout-repeats-letter": (
    ValueError,
    r"kernel_layout 'OOHW' repeats",
    conv(kernel_layout="OOHW"),
  ),
  "layout-without-c": (ValueError, r"layout 'NXHW' lacks C", conv(layout="NXHW")),
  "kernel-layout-without-o": (
    ValueError,
    r"kernel_layout 'CIHW'.*lacks O",
    conv(kernel_layout="CIHW"),
  ),
  "layout-with-kernel-letters": (ValueError, r"layout 'NCHI' .*I", conv(layout="NCHI")),
  "spatial-rank-differs": (
    ValueError,
    r"same spatial axes.*layout 'NCHW'.*kernel_layout 'OIW'",
    conv(kernel_layout="OIW"),
  ),
  "spatial-letters-differ": (
    ValueError,
    r"same spatial axes.*kernel_layout 'OIHD'",
    conv(kernel_layout="OIHD"),
  ),
  "out-layout-letters-differ": (
    ValueError,
    r"same spatial axes.*out_layout 'NCDW'",
    conv(out_layout="NCDW"),
  ),
  "out-layout-drops-batch": (
    ValueError,
    r"out_layout 'CHW' must both have a batch axis",
    conv(out_layout="CHW"),
  ),
  "dimension-numbers-with-kernel-layout": (
    ValueError,
    r"do not pass kernel_layout or out_layout",
    lambda: fc.conv(X, K, flip=False, layout=("NCHW", "OIHW", "NCHW"), kernel_layout="OIHW"),
  ),
  "dimension-numbers-not-a-permutation": (
    ValueError,
    r"layout ConvDimensionNumbers.*lhs_spec \(0, 1, 2, 2\)",
    lambda: fc.conv(
      X, K, flip=False, layout=lax.ConvDimensionNumbers((0, 1, 2, 2), (0, 1, 2, 3), (0, 1, 2, 3))
    ),
  ),
  "dimension-numbers-out-of-range": (
    ValueError,
    r"layout ConvDimensionNumbers.*out_spec \(0, 1, 2, 7\)",
    lambda: fc.conv(
      X, K, flip=False, layout=lax.ConvDimensionNumbers((0, 1, 2, 3), (0, 1, 2, 3), (0, 1, 2, 7))
    ),
  ),
  "strides-zero": (ValueError, r"strides must be >= 1", conv(strides=0)),
  "strides-negative": (ValueError, r"strides must be >= 1.*\(1, -1\)", conv(strides=(1, -1))),
  "strides-float": (
    TypeError,
    r"strides must be an int or a sequence of 2 ints",
    conv(strides=1.5),
  ),
  "dilation-zero": (ValueError, r"dilation must be >= 1", conv(dilation=(0, 1))),
  "dilation-negative": (ValueError, r"dilation must be >= 1", conv(dilation=-1)),
  "input-dilation-zero": (ValueError, r"input_dilation must be >= 1", conv(input_dilation=0)),
  "strides-count": (
    ValueError,
    r"strides has 3 values .*2 spatial dimensions",
    conv(strides=(1, 1, 1)),
  ),
  "dilation-count": (
    ValueError,
    r"dilation has 1 values .*2 spatial dimensions",
    conv(dilation=(2,)),
  ),
  "input-dilation-count": (
    ValueError,
    r"input_dilation has 3 values",
    conv(input_dilation=(1, 2, 1)),
  ),
  "padding-count": (
    ValueError,
    r"padding \(1, 1, 1\) has 3 entries .*2 spatial",
    conv(padding=(1, 1, 1)),
  ),
  "padding-pairs-count": (
    ValueError,
    r"padding \(\(1, 1\),\) has 1 entries",
    conv(padding=((1, 1),)),
  ),
  "padding-bad-pair": (
    TypeError,
    r"padding .* is not a padding name",
    conv(padding=((1, 2, 3), (0, 0))),
  ),
  "padding-float": (TypeError, r"padding 1\.5 is not a padding name", conv(padding=1.5)),
  "padding-unknown-name": (
    ValueError,
    r"unknown padding 'SMAE'; did you mean 'same'",
    conv(padding="SMAE"),
  ),
  "padding-negative-int": (ValueError, r"padding must not be negative", conv(padding=-1)),
  "padding-negative-per-dim": (ValueError, r"padding must not be negative", conv(padding=(1, -1))),
  "padding-negative-pair": (
    ValueError,
    r"padding must not be negative",
    conv(padding=((0, 0), (2, -1))),
  ),
  "kernel-larger-than-input": (
    ValueError,
    r"kernel is larger than the padded input in spatial dimension 0 \(H\)",
    conv(k=np.ones((6, 4, 7, 2))),
  ),
  "dilated-kernel-larger-than-input": (
    ValueError,
    r"kernel is larger .*dimension 1 \(W\).*"
    r"dilation 5",
    conv(dilation=(1, 5)),
  ),
  "kernel-larger-even-with-padding": (
    ValueError,
    r"kernel is larger .*padding \(1, 0\)",
    conv(k=np.ones((6, 4, 8, 2)), padding=((1, 0), (0, 0))),
  ),
  "empty-x-spatial-axis": (
    ValueError,
    r"x has an empty spatial axis",
    conv(x=np.ones((2, 4, 0, 5))),
  ),
  "empty-kernel-axis": (ValueError, r"kernel has an empty axis", conv(k=np.ones((6, 4, 0, 2)))),
  "pad-mode-unknown": (
    ValueError,
    r"unknown pad_mode 'mirror'",
    conv(padding=1, pad_mode="mirror"),
  ),
  "pad-mode-not-a-string": (
    TypeError,
    r"pad_mode must be a string",
    conv(padding=1, pad_mode=None),
  ),
  "pad-mode-with-input-dilation": (
    ValueError,
    r"pad_mode='replicate' with input_dilation",
    conv(padding=1, pad_mode="replicate", input_dilation=2),
  ),
  "x-bool": (TypeError, r"x has dtype bool", conv(x=X > 0)),
  "kernel-bool": (TypeError, r"kernel has dtype bool", conv(k=K > 0)),
  "x-strings": (TypeError, r"x has dtype <U1", conv(x=np.full(X.shape, "a"))),
  "x-objects": (TypeError, r"x has dtype object", conv(x=X.astype(object))),
  "x-a-string": (TypeError, r"x must be an array, got str", conv(x="abc")),
  "method-unknown": (ValueError, r"unknown method 'winograd'", conv(method="winograd")),
  "method-not-a-string": (TypeError, r"method must be a string", conv(method=1)),
  "flip-kernel-rank": (
    ValueError,
    r"flip_kernel: kernel has rank 4 .*kernel_layout 'OIH'",
    lambda: fc.flip_kernel(K, "OIH"),
  ),
  "flip-kernel-layout-missing": (
    TypeError,
    r"flip_kernel: kernel_layout must be a layout",
    lambda: fc.flip_kernel(K, None),
  ),
  "flip-kernel-data-layout": (
    ValueError,
    r"flip_kernel: kernel_layout 'NCHW'",
    lambda: fc.flip_kernel(K, "NCHW"),
  ),
  "flip-kernel-bool": (
    TypeError,
    r"flip_kernel: kernel has dtype bool",
    lambda: fc.flip_kernel(K > 0, "OIHW"),
  ),
}


def assert_no_xla(message: str) -> None:
  assert "XLA" not in message and "RET_CHECK" not in message, message


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_bad_argument_raises_a_clear_error(case):
  exc, pattern, call = case
  with pytest.raises(exc, match=pattern) as info:
    call()
  assert type(info.value) is exc  # not a subclass from deeper down
  message = str(info.value)
  assert_no_xla(message)
  # Every message says which public function complained.
  assert re.match(r"^(conv|convolve|correlate|flip_kernel|get_convention): ", message), message


@pytest.mark.parametrize(
  ("k_shape", "kw", "pattern"),
  [
    ((6, 3, 3, 2), dict(), r"input channels per group"),
    ((6, 4, 3, 2), dict(padding="SMAE"), r"unknown padding"),
    ((6, 4, 7, 2), dict(), r"kernel is larger than the padded input"),
    (
      (6, 4, 3, 2),
      dict(padding=1, pad_mode="reflect", input_dilation=2),
      r"pad_mode='reflect' with input_dilation",
    ),
  ],
  ids=["channels", "padding-name", "kernel-size", "pad-mode-input-dilation"],
)
def test_errors_are_raised_at_trace_time_under_jit(k_shape, kw, pattern):
  f = jax.jit(lambda a, b: fc.conv(a, b, flip=True, **NCHW, **kw))
  with pytest.raises(ValueError, match=pattern) as info:
    f(X, np.ones(k_shape, np.float32))
  assert_no_xla(str(info.value))


def test_valid_neighbours_of_the_error_cases_are_accepted():
  # The limits are where the errors say: each of these is one step inside them.
  assert fc.conv(X, np.ones((6, 4, 6, 2)), **NCHW, flip=False).shape == (2, 6, 1, 4)
  assert fc.conv(X, K, **NCHW, flip=False, dilation=(1, 4)).shape == (2, 6, 4, 1)
  assert fc.conv(X, K, **NCHW, flip=False, padding=(0, 4), pad_mode="reflect").shape == (
    2,
    6,
    4,
    12,
  )
  assert fc.conv(X, K, **NCHW, flip=False, padding=((6, 0), (0, 5)), pad_mode="circular").shape == (
    2,
    6,
    10,
    9,
  )
  assert fc.conv(X, np.ones((6, 2, 3, 2)), **NCHW, flip=False, groups=2).shape == (2, 6, 4, 4)
  assert fc.conv(X, K, **NCHW, flip=False, padding=1, pad_mode="zeros", input_dilation=2).shape == (
    2,
    6,
    11,
    10,
  )
