"""The frameworks' convolution conventions: flip and axis layouts.

Each :class:`Convention` says what a framework's conv layers compute and how
they store their kernels, in the terms of :func:`flipconv.conv`:

* ``flip``: ``True`` if the forward layer is a true convolution (the kernel
  reversed along every spatial axis), ``False`` for cross-correlation;
* ``layout``/``kernel_layout``: the axes of the data and of the forward kernel;
* ``transpose_kernel_layout``: the transposed-conv layer's stored kernel, named
  with the letters of the forward conv it is the adjoint of (``O`` = that
  forward conv's output channels = the channels the transposed layer reads);
* ``transpose_flip``: the flip of that forward conv;
* ``linear_layout``: the dense kernel, ``"OI"`` or ``"IO"``;
* ``transpose_output_size``: the default output size of the transposed layer,
  ``"pytorch"`` (smallest size) or ``"tensorflow"`` (``in * stride`` for
  SAME, ``in * stride + max(k_eff - stride, 0)`` for VALID).

Layouts are written for 2-D and generalised to other ranks by
:func:`flipconv._layouts.generalize`. Where each fact was checked is in
``docs/conventions.md`` and in the tests named ``test_against_<framework>``.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any

from flipconv._layouts import check_letters
from flipconv._validate import did_you_mean

_OUTPUT_SIZE_RULES = ("pytorch", "tensorflow")
_LINEAR_LAYOUTS = ("OI", "IO")


@dataclasses.dataclass(frozen=True)
class Convention:
  """What one framework's conv layers compute and how they store kernels.

  Attributes:
    name: the registry name.
    layout: forward conv input/output layout, e.g. ``"NCHW"`` (no ``N``:
      the framework's layers take unbatched inputs).
    kernel_layout: forward conv kernel layout, e.g. ``"OIHW"``.
    flip: forward conv: ``True`` = true convolution.
    transpose_kernel_layout: transposed-conv kernel, in forward-conv letters.
    transpose_flip: the transposed conv is the adjoint of ``conv(flip=...)``.
    linear_layout: dense kernel, ``"OI"`` (PyTorch) or ``"IO"`` (Flax).
    transpose_output_size: ``"pytorch"`` or ``"tensorflow"``.
    description: which layers of the framework this describes.
  """

  name: str
  layout: str
  kernel_layout: str
  flip: bool
  transpose_kernel_layout: str
  transpose_flip: bool
  linear_layout: str
  transpose_output_size: str = "pytorch"
  description: str = ""

  def __post_init__(self) -> None:
    where = f"Convention({self.name!r})"
    if not isinstance(self.name, str) or not self.name:
      raise TypeError(f"Convention: name must be a non-empty string, got {self.name!r}.")
    check_letters(self.layout, "layout", where, "NC")
    check_letters(self.kernel_layout, "kernel_layout", where, "OI")
    check_letters(self.transpose_kernel_layout, "transpose_kernel_layout", where, "OI")
    for field in ("flip", "transpose_flip"):
      if not isinstance(getattr(self, field), bool):
        raise TypeError(f"{where}: {field} must be True or False, got {getattr(self, field)!r}.")
    if self.linear_layout not in _LINEAR_LAYOUTS:
      raise ValueError(f"{where}: linear_layout must be 'OI' or 'IO', got {self.linear_layout!r}.")
    if self.transpose_output_size not in _OUTPUT_SIZE_RULES:
      raise ValueError(f"{where}: transpose_output_size must be 'pytorch' or 'tensorflow', "
                       f"got {self.transpose_output_size!r}.")


def _c(**kw: Any) -> Convention:
  return Convention(**kw)


_FLAX = _c(
    name="flax", layout="NHWC", kernel_layout="HWIO", flip=False,
    transpose_kernel_layout="HWOI", transpose_flip=True, linear_layout="IO",
    transpose_output_size="tensorflow",
    description="flax.linen/nnx Conv and ConvTranspose(transpose_kernel=False), Dense; "
                "lax.conv_general_dilated and lax.conv_transpose",
)
_HAIKU = _c(
    name="haiku", layout="NHWC", kernel_layout="HWIO", flip=False,
    transpose_kernel_layout="HWIO", transpose_flip=True, linear_layout="IO",
    transpose_output_size="tensorflow",
    description="hk.ConvND / hk.ConvNDTranspose (w: kernel + (out, in)), hk.Linear",
)
_TENSORFLOW = _c(
    name="tensorflow", layout="NHWC", kernel_layout="HWIO", flip=False,
    transpose_kernel_layout="HWIO", transpose_flip=False, linear_layout="IO",
    transpose_output_size="tensorflow",
    description="tf.nn.conv2d / conv2d_transpose, Keras ConvND / ConvNDTranspose, Dense",
)
_TFLITE = _c(
    name="tflite", layout="NHWC", kernel_layout="OHWI", flip=False,
    transpose_kernel_layout="IHWO", transpose_flip=False, linear_layout="OI",
    transpose_output_size="tensorflow",
    description="TFLite CONV_2D, TRANSPOSE_CONV, FULLY_CONNECTED",
)
_PYTORCH = _c(
    name="pytorch", layout="NCHW", kernel_layout="OIHW", flip=False,
    transpose_kernel_layout="OIHW", transpose_flip=False, linear_layout="OI",
    description="torch.nn.ConvNd / ConvTransposeNd, nn.Linear",
)
_ONNX = _c(
    name="onnx", layout="NCHW", kernel_layout="OIHW", flip=False,
    transpose_kernel_layout="OIHW", transpose_flip=False, linear_layout="OI",
    description="ONNX Conv, ConvTranspose, Gemm(transB=1) as exporters write it",
)
_CAFFE = _c(
    name="caffe", layout="NCHW", kernel_layout="OIHW", flip=False,
    transpose_kernel_layout="OIHW", transpose_flip=False, linear_layout="OI",
    description="Caffe Convolution, Deconvolution, InnerProduct",
)
_THEANO = _c(
    name="theano", layout="NCHW", kernel_layout="OIHW", flip=True,
    transpose_kernel_layout="OIHW", transpose_flip=True, linear_layout="IO",
    description="theano.tensor.nnet.conv2d/conv3d (filter_flip=True), "
                "conv2d_grad_wrt_inputs",
)
_LASAGNE = _c(
    name="lasagne", layout="NCHW", kernel_layout="OIHW", flip=True,
    transpose_kernel_layout="OIHW", transpose_flip=True, linear_layout="IO",
    description="lasagne Conv2DLayer (flip_filters=True), TransposedConv2DLayer, DenseLayer",
)
_LASAGNE_MM = _c(
    name="lasagne-mm", layout="NCHW", kernel_layout="OIHW", flip=False,
    transpose_kernel_layout="OIHW", transpose_flip=True, linear_layout="IO",
    description="lasagne Conv2DMMLayer / Conv2DDNNLayer / Conv2DCCLayer (flip_filters=False)",
)
_EQUINOX = _c(
    name="equinox", layout="CHW", kernel_layout="OIHW", flip=False,
    transpose_kernel_layout="IOHW", transpose_flip=True, linear_layout="OI",
    description="eqx.nn.Conv / ConvTranspose (unbatched; vmap for a batch), eqx.nn.Linear",
)

_ALIASES = {"jax": _FLAX, "keras": _TENSORFLOW, "tf": _TENSORFLOW, "torch": _PYTORCH}

conventions: Mapping[str, Convention] = types.MappingProxyType(
    {c.name: c for c in (_FLAX, _HAIKU, _TENSORFLOW, _TFLITE, _PYTORCH, _ONNX, _CAFFE, _THEANO,
                         _LASAGNE, _LASAGNE_MM, _EQUINOX)} | _ALIASES
)
"""Read-only mapping from every registered name (aliases included) to its convention."""


def get_convention(convention: str | Convention) -> Convention:
  """Looks up a convention by name, or passes a :class:`Convention` through.

  Args:
    convention: a registry name (case-insensitive, ``_`` and ``-`` alike) or a
      :class:`Convention`.

  Returns:
    The :class:`Convention`.

  Examples:
    >>> import flipconv as fc
    >>> fc.get_convention("pytorch").kernel_layout
    'OIHW'
    >>> fc.get_convention("keras") is fc.get_convention("tensorflow")
    True
  """
  if isinstance(convention, Convention):
    return convention
  if not isinstance(convention, str):
    raise TypeError(f"get_convention: convention must be a name or a flipconv.Convention, got "
                    f"{convention!r}.")
  key = convention.lower().replace("_", "-")
  if key in conventions:
    return conventions[key]
  raise ValueError(f"get_convention: unknown convention {convention!r}"
                   f"{did_you_mean(key, conventions)}. Known: {', '.join(sorted(conventions))}.")
