"""What tests/test_linen.py and tests/test_nnx.py share: cases, inputs, cheap initialisers.

The two files test the linen and the nnx layers against their Flax twins on the
same cases; the cases and the helpers that do not depend on the module family
live here, once.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume
from hypothesis import strategies as st

LETTERS = {1: "W", 2: "HW", 3: "DHW"}


OTHER_CONVENTIONS = (
  "pytorch",
  "lasagne",
  "theano",
  "tensorflow",
  "tflite",
  "equinox",
  "onnx",
  "caffe",
  "lasagne-mm",
  "haiku",
)


def nd(layout: str, n: int) -> str:
  """A registry layout (written for 2-D) for ``n`` spatial dimensions."""
  return layout.replace("HW", LETTERS[n])


def relayout(x: Any, src: str, dst: str) -> jax.Array:
  """``x`` laid out as ``src`` moved to ``dst``; a ``dst`` without N takes example 0."""
  x = jnp.asarray(x)
  if "N" not in dst:
    x, src = x[0], src.replace("N", "")
  return jnp.transpose(x, [src.index(c) for c in dst])


def normal(shape: tuple[int, ...], seed: int = 0, dtype: Any = jnp.float32) -> jax.Array:
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def randomize(tree: Any, seed: int = 1) -> Any:
  """Random values in the tree's shapes and dtypes (a zero bias would hide a misplaced one)."""
  leaves, treedef = jax.tree.flatten(tree)
  return jax.tree.unflatten(
    treedef, [normal(leaf.shape, seed + i, leaf.dtype) for i, leaf in enumerate(leaves)]
  )


def keyed_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
  """A cheap initialiser whose values show the key it got and each element's place."""
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  tag = (key.ravel()[-1] % 251).astype(jnp.float32)
  flat = tag * 4096 + jnp.arange(math.prod(shape), dtype=jnp.float32)
  return flat.reshape(shape).astype(dtype)


def assert_close(got: Any, want: Any, rtol: float = 1e-5) -> None:
  got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(1.0, float(np.abs(want).max())))


def conv_eqn_params(jaxpr: Any) -> list[dict[str, Any]]:
  """The parameters of every ``conv_general_dilated`` in a jaxpr, sub-jaxprs included."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "conv_general_dilated":
      found.append(eqn.params)
    for value in eqn.params.values():
      for sub in value if isinstance(value, tuple | list) else (value,):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          found += conv_eqn_params(inner)
  return found


TRANSPOSED = pytest.mark.parametrize("transposed", [False, True], ids=["conv", "transpose"])


CONV_CASES = [
  # spatial, in_features, features, kernel_size, keyword arguments
  pytest.param((9,), 3, 4, (3,), {}, id="1d-same"),
  pytest.param((9,), 3, 4, (4,), dict(strides=2, padding="VALID"), id="1d-valid-stride"),
  pytest.param((9,), 3, 4, (3,), dict(padding="CAUSAL", kernel_dilation=2), id="1d-causal"),
  pytest.param((9,), 3, 4, 4, dict(padding="CIRCULAR"), id="1d-circular-int-kernel"),
  pytest.param((9,), 3, 4, (3,), dict(padding="REFLECT", strides=2), id="1d-reflect-stride"),
  pytest.param((8, 7), 4, 6, (3, 2), dict(strides=(2, 1)), id="2d-same-strides"),
  pytest.param((8, 7), 4, 6, (3, 2), dict(padding="VALID", strides=2), id="2d-valid"),
  pytest.param((8, 7), 4, 6, (3, 2), dict(padding=1), id="2d-int"),
  pytest.param((8, 7), 4, 6, (3, 2), dict(padding=(2, 0)), id="2d-per-dim-ints"),
  pytest.param((8, 7), 4, 6, (3, 2), dict(padding=((1, 0), (2, 1)), strides=2), id="2d-pairs"),
  pytest.param((8, 7), 4, 6, (3, 2), dict(padding=[1, (0, 2)]), id="2d-int-and-pair"),
  pytest.param(
    (8, 7),
    4,
    6,
    (3, 2),
    dict(strides=None, input_dilation=None, kernel_dilation=None),
    id="2d-none-for-1",
  ),
  pytest.param(
    (8, 7), 4, 6, (3, 4), dict(padding="CIRCULAR", kernel_dilation=(1, 2)), id="2d-circular-dilated"
  ),
  pytest.param((8, 7), 4, 6, (2, 3), dict(padding="REFLECT", strides=(1, 2)), id="2d-reflect"),
  pytest.param((8, 7), 4, 6, (3, 3), dict(feature_group_count=2), id="2d-groups"),
  pytest.param((8, 7), 4, 8, (3, 3), dict(feature_group_count=4), id="2d-depthwise"),
  pytest.param((8, 7), 4, 6, (2, 3), dict(kernel_dilation=(2, 3)), id="2d-kernel-dilation"),
  pytest.param(
    (6, 5),
    4,
    6,
    (3, 2),
    dict(input_dilation=(2, 1), padding=((1, 2), (0, 1))),
    id="2d-input-dilation",
  ),
  pytest.param(
    (6, 5),
    4,
    6,
    (3, 3),
    dict(input_dilation=2, padding=0, strides=2),
    id="2d-input-dilation-stride",
  ),
  pytest.param((8, 7), 4, 6, (3, 2), dict(use_bias=False), id="2d-no-bias"),
  pytest.param((5, 6, 4), 2, 4, (3, 2, 2), dict(strides=2), id="3d-same-stride"),
  pytest.param(
    (5, 6, 4),
    4,
    6,
    (2, 3, 2),
    dict(padding="VALID", feature_group_count=2, kernel_dilation=(2, 1, 1)),
    id="3d-valid-groups-dilated",
  ),
  pytest.param((5, 6, 4), 2, 4, (3, 2, 2), dict(padding=((1, 0), (0, 2), (1, 1))), id="3d-pairs"),
  # Flax's CIRCULAR/REFLECT pads of any width wrap/reflect as jnp.pad does (kernel 9 on 1: 9).
  pytest.param((1,), 3, 2, (9,), dict(padding="CIRCULAR"), id="1d-circular-wider-than-input"),
  pytest.param((2,), 3, 2, (9,), dict(padding="REFLECT"), id="1d-reflect-wider-than-input"),
  pytest.param(
    (3, 2), 2, 3, (4, 9), dict(padding="CIRCULAR", strides=(1, 2)), id="2d-circular-wide"
  ),
  pytest.param(
    (3, 1), 2, 3, (3, 3), dict(padding="REFLECT", kernel_dilation=2), id="2d-reflect-wide-dilated"
  ),
]


@st.composite
def conv_configs(draw):
  n = draw(st.integers(1, 3))
  dims = lambda lo, hi: tuple(draw(st.lists(st.integers(lo, hi), min_size=n, max_size=n)))
  kernel_size = dims(1, 3)
  kwargs: dict[str, Any] = dict(
    strides=draw(st.one_of(st.integers(1, 3), st.just(dims(1, 3)))),
    kernel_dilation=draw(st.one_of(st.just(1), st.just(dims(1, 2)))),
  )
  names = ["SAME", "VALID", "CIRCULAR", "REFLECT"] + (["CAUSAL"] if n == 1 else [])
  padding = draw(st.sampled_from([*names, "int", "ints", "pairs"]))
  if padding == "int":
    padding = draw(st.integers(0, 2))
  elif padding == "ints":
    padding = dims(0, 2)
  elif padding == "pairs":
    padding = tuple(zip(dims(0, 2), dims(0, 2), strict=True))
  kwargs["padding"] = padding
  if not isinstance(padding, str):  # lax (and so Flax) refuses string padding with it
    kwargs["input_dilation"] = draw(st.one_of(st.just(1), st.just(dims(1, 2))))
  groups = draw(st.sampled_from([1, 2, 4]))  # 4 = in_features: depthwise
  kwargs["feature_group_count"] = groups
  kwargs["use_bias"] = draw(st.booleans())
  return dims(5, 7), groups * draw(st.integers(1, 2)), kernel_size, kwargs


CONV_TRANSPOSE_CASES = [
  pytest.param((7,), (2,), dict(strides=3, padding="VALID"), id="1d-valid-small-kernel"),
  pytest.param((7,), (5,), dict(strides=2, padding="SAME"), id="1d-same-large-kernel"),
  pytest.param(
    (7,),
    4,
    dict(strides=2, padding="VALID", transpose_kernel=True),
    id="1d-int-kernel-transpose-kernel",
  ),
  pytest.param((5, 4), (3, 2), dict(strides=2, kernel_dilation=(2, 1)), id="2d-dilated"),
  pytest.param(
    (5, 4),
    (3, 2),
    dict(strides=(1, 3), padding="VALID", kernel_dilation=2, transpose_kernel=True),
    id="2d-dilated-transpose-kernel",
  ),
  pytest.param((5, 4), (3, 3), dict(strides=2, use_bias=False), id="2d-no-bias"),
  pytest.param((5, 4), (3, 3), dict(strides=None, kernel_dilation=None), id="2d-none-for-1"),
  pytest.param((3, 4, 3), (2, 3, 2), dict(strides=2, padding="SAME"), id="3d-same"),
  pytest.param(
    (3, 4, 3),
    (2, 3, 4),
    dict(strides=(3, 1, 2), padding="VALID", transpose_kernel=True),
    id="3d-valid",
  ),
  # Numeric padding means Flax's: the padding of the stride-dilated input.
  pytest.param((7,), (3,), dict(strides=2, padding=1), id="1d-int-padding"),
  pytest.param(
    (5, 4), (3, 2), dict(strides=2, padding=(2, 0), transpose_kernel=True), id="2d-ints-padding"
  ),
  pytest.param(
    (5, 4), (3, 4), dict(strides=(2, 3), padding=((1, 0), (3, 1))), id="2d-pairs-padding"
  ),
  pytest.param((5, 4), (3, 2), dict(strides=2, padding=[1, (0, 2)]), id="2d-int-and-pair-padding"),
  pytest.param(
    (24, 9), (7, 4), dict(strides=None, padding=(4, 2), kernel_dilation=(2, 3)), id="flax-4-2"
  ),
  pytest.param(
    (5, 4), (3, 2), dict(strides=2, padding=((4, 5), (3, 0))), id="2d-padding-beyond-the-kernel"
  ),
  pytest.param((6, 5), (3, 3), dict(strides=2, padding=((-1, 0), (1, -2))), id="2d-negative"),
  pytest.param(
    (3, 4, 3), (2, 3, 2), dict(strides=(1, 2, 3), padding=1, kernel_dilation=2), id="3d-int"
  ),
]


@st.composite
def conv_transpose_configs(draw):
  n = draw(st.integers(1, 3))
  dims = lambda lo, hi: tuple(draw(st.lists(st.integers(lo, hi), min_size=n, max_size=n)))
  spatial, kernel_size = dims(2, 5), dims(1, 5)
  kwargs = dict(
    strides=draw(st.one_of(st.integers(1, 3), st.just(dims(1, 3)))),
    padding=draw(
      st.one_of(
        st.sampled_from(["SAME", "VALID"]),
        st.integers(0, 3),
        st.just(tuple(zip(dims(0, 4), dims(0, 4), strict=True))),
      )
    ),
    kernel_dilation=draw(st.one_of(st.just(1), st.just(dims(1, 2)))),
    transpose_kernel=draw(st.booleans()),
    use_bias=draw(st.booleans()),
  )
  if not isinstance(kwargs["padding"], str):  # Flax's numeric padding: a non-empty output
    per_dim = lambda v: (v,) * n if isinstance(v, int) else v
    pads = per_dim(kwargs["padding"])
    pads = tuple((p, p) if isinstance(p, int) else p for p in pads)
    for m, k, s, d, (lo, hi) in zip(
      spatial,
      kernel_size,
      per_dim(kwargs["strides"]),
      per_dim(kwargs["kernel_dilation"]),
      pads,
      strict=True,
    ):
      assume((m - 1) * s + lo + hi - (k - 1) * d + 1 >= 1)
  return spatial, kernel_size, kwargs


# flax's tests/nnx/nn/conv_test.py's kind of case: float16 params, 3 groups, a mask, input
# and kernel dilation, precision and preferred_element_type, on a (24, 9, 3) input.
FLAX_NNX_CASES = [
  pytest.param("VALID", None, False, None, id="valid"),
  pytest.param("CIRCULAR", (2, 3), True, None, id="circular-strided-masked"),
  pytest.param("REFLECT", None, True, jnp.float32, id="reflect-masked-preferred"),
  pytest.param((4, 2), (2, 3), False, jnp.float32, id="ints-strided-preferred"),
]
# ConvTranspose: no REFLECT in Flax.
FLAX_NNX_TRANSPOSE_CASES = [
  *[c for c in FLAX_NNX_CASES if c.values[0] != "REFLECT"],
  pytest.param((4, 2), None, True, None, id="ints-masked"),
]


def expected_kernel_shape(
  kernel_layout: str,
  kernel_size: tuple[int, ...],
  in_features: int,
  features: int,
  groups: int,
  transposed: bool,
) -> tuple[int, ...]:
  """From shared/API.md: O and I are the forward conv's (transposed: O is its input)."""
  sizes = dict(zip(LETTERS[len(kernel_size)], kernel_size, strict=True))
  if transposed:
    sizes.update(O=in_features, I=features // groups)
  else:
    sizes.update(O=features, I=in_features // groups)
  return tuple(sizes[c] for c in kernel_layout)


# Each framework's own kernel shape for Conv(8 -> 6, groups 2) and ConvTranspose(4 -> 6), (3, 2).
FRAMEWORK_KERNEL_SHAPES = [
  ("pytorch", False, (6, 4, 3, 2)),  # Conv2d.weight: (out, in / groups, kh, kw)
  ("pytorch", True, (4, 6, 3, 2)),  # ConvTranspose2d.weight: (in, out / groups, kh, kw)
  ("onnx", True, (4, 6, 3, 2)),  # ConvTranspose W: (C, M / group, kh, kw)
  ("lasagne", True, (4, 6, 3, 2)),  # TransposedConv2DLayer W: (in, filters, fh, fw)
  ("tensorflow", False, (3, 2, 4, 6)),  # Conv2D kernel: (kh, kw, in / groups, filters)
  ("tensorflow", True, (3, 2, 6, 4)),  # Conv2DTranspose kernel: (kh, kw, filters, in)
  ("tflite", False, (6, 3, 2, 4)),  # CONV_2D filter: (out, kh, kw, in / groups)
  ("tflite", True, (6, 3, 2, 4)),  # TRANSPOSE_CONV filter: (out, kh, kw, in)
  ("equinox", False, (6, 4, 3, 2)),  # Conv.weight: (out, in / groups, kh, kw)
  ("equinox", True, (6, 4, 3, 2)),  # ConvTranspose.weight: (out, in / groups, kh, kw)
  ("haiku", True, (3, 2, 6, 4)),  # Conv2DTranspose w: (kh, kw, out, in)
]
