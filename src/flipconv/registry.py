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

Layouts are written for 2-D and generalised to other ranks (``"OIHW"`` is
``"OIW"`` for 1-D and ``"OIDHW"`` for 3-D). Where each fact was checked is recorded
next to the entries in ``VERIFICATION`` (one :class:`Check` per group of
fields: the framework version and the ``test_against_<framework>`` test, or
the source lines), from which ``docs/conventions.md`` is generated.
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
    depthwise_kernel_layout: the framework's own depthwise kernel layout, where
      it differs from a grouped kernel in ``kernel_layout``: letters ``O``/``I``
      (grouped, ``I = 1``) or ``C``/``M`` (input channel, multiplier) with the
      spatial letters, e.g. ``"HWCM"`` (Keras); ``""``: the grouped kernel.
      See :func:`flipconv.convert_depthwise_kernel`.
    description: which layers of the framework this describes.

  Examples:
    >>> import numpy as np, flipconv as fc
    >>> fc.conventions["pytorch"].kernel_layout, fc.conventions["pytorch"].flip
    ('OIHW', False)
    >>> mine = fc.Convention(name="mine", layout="NCHW", kernel_layout="OIHW", flip=True,
    ...                      transpose_kernel_layout="OIHW", transpose_flip=True,
    ...                      linear_layout="OI")   # a true-convolution framework of your own
    >>> x = np.arange(1.0, 6.0).reshape(1, 1, 5)   # N C W
    >>> k = np.array([1.0, 2.0, 0.0]).reshape(1, 1, 3)   # O I W
    >>> fc.conv(x, k, convention=mine)
    Array([[[ 7., 10., 13.]]], dtype=float32)
    >>> fc.convert_kernel(k, mine, "pytorch")   # the kernel that computes it in PyTorch
    array([[[0., 2., 1.]]])
  """

  name: str
  layout: str
  kernel_layout: str
  flip: bool
  transpose_kernel_layout: str
  transpose_flip: bool
  linear_layout: str
  transpose_output_size: str = "pytorch"
  depthwise_kernel_layout: str = ""
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
    if self.depthwise_kernel_layout:
      _check_depthwise(self.depthwise_kernel_layout, self.kernel_layout, where)
    if self.transpose_output_size not in _OUTPUT_SIZE_RULES:
      raise ValueError(
        f"{where}: transpose_output_size must be 'pytorch' or 'tensorflow', "
        f"got {self.transpose_output_size!r}."
      )


def _check_depthwise(layout: Any, kernel_layout: str, where: str) -> None:
  name = "depthwise_kernel_layout"
  if not isinstance(layout, str) or not layout.isalpha() or not layout.isupper():
    raise TypeError(
      f"{where}: {name} must be a string of upper-case letters such as 'HWCM', got {layout!r}."
    )
  if len(set(layout)) != len(layout):
    raise ValueError(f"{where}: {name} {layout!r} repeats a letter.")
  pair = "OI" if "O" in layout or "I" in layout else "CM"
  spatial = sorted(set(layout) - set(pair))
  if not set(pair) <= set(layout) or spatial != sorted(set(kernel_layout) - set("OI")):
    raise ValueError(
      f"{where}: {name} {layout!r} must hold O and I (a grouped kernel) or C and M (input "
      f"channel and multiplier), plus the spatial letters of kernel_layout "
      f"{kernel_layout!r}."
    )


def _c(**kw: Any) -> Convention:
  return Convention(**kw)


_FLAX = _c(
  name="flax",
  layout="NHWC",
  kernel_layout="HWIO",
  flip=False,
  transpose_kernel_layout="HWOI",
  transpose_flip=True,
  linear_layout="IO",
  transpose_output_size="tensorflow",
  description="flax.linen/nnx Conv and ConvTranspose(transpose_kernel=False), Dense; "
  "lax.conv_general_dilated and lax.conv_transpose",
)
_HAIKU = _c(
  name="haiku",
  layout="NHWC",
  kernel_layout="HWIO",
  flip=False,
  transpose_kernel_layout="HWIO",
  transpose_flip=True,
  linear_layout="IO",
  transpose_output_size="tensorflow",
  description="hk.ConvND / hk.ConvNDTranspose (w: kernel + (out, in)), hk.Linear",
)
_TENSORFLOW = _c(
  name="tensorflow",
  layout="NHWC",
  kernel_layout="HWIO",
  flip=False,
  transpose_kernel_layout="HWIO",
  transpose_flip=False,
  linear_layout="IO",
  transpose_output_size="tensorflow",
  depthwise_kernel_layout="HWCM",
  description="tf.nn.conv2d / conv2d_transpose, Keras ConvND / ConvNDTranspose, "
  "DepthwiseConv2D, Dense",
)
_TFLITE = _c(
  name="tflite",
  layout="NHWC",
  kernel_layout="OHWI",
  flip=False,
  transpose_kernel_layout="IHWO",
  transpose_flip=False,
  linear_layout="OI",
  transpose_output_size="tensorflow",
  depthwise_kernel_layout="IHWO",
  description="TFLite CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV, FULLY_CONNECTED",
)
_PYTORCH = _c(
  name="pytorch",
  layout="NCHW",
  kernel_layout="OIHW",
  flip=False,
  transpose_kernel_layout="OIHW",
  transpose_flip=False,
  linear_layout="OI",
  description="torch.nn.ConvNd / ConvTransposeNd, nn.Linear",
)
_ONNX = _c(
  name="onnx",
  layout="NCHW",
  kernel_layout="OIHW",
  flip=False,
  transpose_kernel_layout="OIHW",
  transpose_flip=False,
  linear_layout="OI",
  description="ONNX Conv, ConvTranspose, Gemm(transB=1) as exporters write it",
)
_CAFFE = _c(
  name="caffe",
  layout="NCHW",
  kernel_layout="OIHW",
  flip=False,
  transpose_kernel_layout="OIHW",
  transpose_flip=False,
  linear_layout="OI",
  description="Caffe Convolution, Deconvolution, InnerProduct",
)
_THEANO = _c(
  name="theano",
  layout="NCHW",
  kernel_layout="OIHW",
  flip=True,
  transpose_kernel_layout="OIHW",
  transpose_flip=True,
  linear_layout="IO",
  description="theano.tensor.nnet.conv2d/conv3d (filter_flip=True), conv2d_grad_wrt_inputs",
)
_LASAGNE = _c(
  name="lasagne",
  layout="NCHW",
  kernel_layout="OIHW",
  flip=True,
  transpose_kernel_layout="OIHW",
  transpose_flip=True,
  linear_layout="IO",
  description="lasagne Conv2DLayer (flip_filters=True), TransposedConv2DLayer, DenseLayer",
)
_LASAGNE_MM = _c(
  name="lasagne-mm",
  layout="NCHW",
  kernel_layout="OIHW",
  flip=False,
  transpose_kernel_layout="OIHW",
  transpose_flip=True,
  linear_layout="IO",
  description="lasagne Conv2DMMLayer / Conv2DDNNLayer / Conv2DCCLayer (flip_filters=False)",
)
_EQUINOX = _c(
  name="equinox",
  layout="CHW",
  kernel_layout="OIHW",
  flip=False,
  transpose_kernel_layout="IOHW",
  transpose_flip=True,
  linear_layout="OI",
  description="eqx.nn.Conv / ConvTranspose (unbatched; vmap for a batch), eqx.nn.Linear",
)

_ALIASES = {"jax": _FLAX, "keras": _TENSORFLOW, "tf": _TENSORFLOW, "torch": _PYTORCH}


class _Conventions(Mapping[str, Convention]):
  """Every registered convention by name, aliases included; read-only.

  ``fc.conventions[name]`` is the :class:`Convention` of that name; the aliases
  ``"jax"``, ``"keras"``, ``"tf"`` and ``"torch"`` are the same objects as
  ``"flax"``, ``"tensorflow"`` and ``"pytorch"``. :func:`get_convention` also
  takes other spellings (``"PyTorch"``, ``"lasagne_mm"``). A ``Convention(...)``
  of your own works wherever a name does, without being registered.

  Examples:
    >>> import flipconv as fc
    >>> sorted(fc.conventions)[:5]
    ['caffe', 'equinox', 'flax', 'haiku', 'jax']
    >>> fc.conventions["torch"] is fc.conventions["pytorch"]
    True
    >>> fc.conventions["lasagne"].flip, fc.conventions["lasagne"].kernel_layout
    (True, 'OIHW')
  """

  def __init__(self, entries: Mapping[str, Convention]) -> None:
    self._entries = types.MappingProxyType(dict(entries))

  def __getitem__(self, name: str) -> Convention:
    return self._entries[name]

  def __iter__(self):
    return iter(self._entries)

  def __len__(self) -> int:
    return len(self._entries)

  def __repr__(self) -> str:
    return f"flipconv.conventions({', '.join(self._entries)})"


conventions: Mapping[str, Convention] = _Conventions(
  {
    c.name: c
    for c in (
      _FLAX,
      _HAIKU,
      _TENSORFLOW,
      _TFLITE,
      _PYTORCH,
      _ONNX,
      _CAFFE,
      _THEANO,
      _LASAGNE,
      _LASAGNE_MM,
      _EQUINOX,
    )
  }
  | _ALIASES
)
"""Read-only mapping from every registered name (aliases included) to its convention."""


# ---------------------------------------------------------------------------
# Where each fact was checked. docs/conventions.md is generated from these
# records (flipconv._conventions_doc); tests/test_registry.py checks that every
# contract field of every entry is covered and that every cited test exists.


@dataclasses.dataclass(frozen=True)
class Check:
  """One piece of evidence for some fields of a registry entry.

  Attributes:
    fields: the :class:`Convention` fields it establishes.
    layers: the framework's layers or ops it concerns.
    version: the framework (and version) the test ran against; ``""`` for source.
    test: ``"tests/<file>.py::<test>"`` comparing the framework's output with
      flipconv's; ``""`` when the fact is read from source only.
    source: a link to the source lines the fact was read from.
    note: what a user porting weights must know beyond the fields.
  """

  fields: tuple[str, ...]
  layers: str
  version: str = ""
  test: str = ""
  source: str = ""
  note: str = ""

  @property
  def status(self) -> str:
    return "verified" if self.test else "source"


_FWD = ("layout", "kernel_layout", "flip")
_T = ("transpose_kernel_layout", "transpose_flip")
_SIZE = ("transpose_output_size",)
_LIN = ("linear_layout",)
_DW = ("depthwise_kernel_layout",)
_CAFFE_SRC = "https://github.com/BVLC/caffe/blob/9b891540183ddc834a02b2bd81b31afae71b2153/"
_THEANO_SRC = (
  "https://github.com/Theano/Theano/blob/7505f23edd66fcdbbe04953f53c650b4d7cec4dd/"
  "theano/tensor/nnet/abstract_conv.py"
)
_LASAGNE_SRC = "https://github.com/Lasagne/Lasagne/blob/5d3c63cb315c50b1cbd27a6bc8664b406f34dd99/"
_FLAX_V, _HAIKU_V, _KERAS_V = "flax 0.12.8", "dm-haiku 0.0.17", "keras 3.15.1 (jax backend)"
_TFLITE_V, _TORCH_V = "ai-edge-litert 2.3.0 (TFLite interpreter)", "torch 2.13.0"
_ORT_V, _EQX_V = "onnxruntime 1.32.0 (onnx 1.23.2)", "equinox 0.13.8"
# Theano's ops run through PyTensor (its successor, same abstract_conv ops); the
# Lasagne fixtures call them exactly as Lasagne's source (cited) does.
_PYTENSOR_V = "pytensor 2.18.6 (Theano's abstract_conv ops), fixtures in tests/fixtures/theano"
_THEANO_TESTS = "tests/test_against_theano.py::"
_LASAGNE_T = Check(
  _T,
  "TransposedConv2DLayer: W (num_input_channels, num_filters, fh, fw), flip_filters=False "
  "by default, passed to Theano as filter_flip=not flip_filters",
  _PYTENSOR_V,
  _THEANO_TESTS + "test_conv_transpose_equals_lasagne_transposed_conv2d_layer",
  source=_LASAGNE_SRC + "lasagne/layers/conv.py#L946-L975",
)
_LASAGNE_SIZE = Check(
  _SIZE,
  "TransposedConv2DLayer output size: conv_input_length, the smallest size",
  _PYTENSOR_V,
  _THEANO_TESTS + "test_conv_transpose_equals_lasagne_transposed_conv2d_layer",
  source=_LASAGNE_SRC + "lasagne/layers/conv.py#L951-L966",
)
_LASAGNE_LIN = Check(
  _LIN,
  "DenseLayer: W (num_inputs, num_units)",
  source=_LASAGNE_SRC + "lasagne/layers/dense.py#L103",
)

VERIFICATION: Mapping[str, tuple[Check, ...]] = types.MappingProxyType(
  {
    "flax": (
      Check(
        _FWD,
        "flax.linen.Conv, 1-D/2-D/3-D, SAME with even kernels, groups, dilation",
        _FLAX_V,
        "tests/test_against_flax.py::test_conv_is_the_flax_convention",
      ),
      Check(
        _T + _SIZE,
        "flax.linen.ConvTranspose(transpose_kernel=False), 1-D/2-D/3-D, "
        "SAME/VALID, strides 1-3 (default sizes)",
        _FLAX_V,
        "tests/test_against_flax.py::test_conv_transpose_is_the_flax_convention",
        note="ConvTranspose(transpose_kernel=True) stores forward HWIO with "
        "transpose_flip=False: the 'tensorflow' transposed kernel (tested by "
        "test_conv_transpose_with_transpose_kernel_is_the_tensorflow_convention). "
        "Numeric padding of flax ConvTranspose pads the dilated input, unlike "
        "flipconv's.",
      ),
      Check(
        _LIN, "flax.linen.Dense", _FLAX_V, "tests/test_against_flax.py::test_dense_kernel_is_io"
      ),
    ),
    "haiku": (
      Check(
        _FWD,
        "hk.ConvND, 1-D/2-D/3-D, SAME/VALID, strides",
        _HAIKU_V,
        "tests/test_against_haiku.py::test_conv_is_the_haiku_convention",
      ),
      Check(
        _T + _SIZE,
        "hk.Conv2DTranspose: w = kernel + (output_channels, input_channels)",
        _HAIKU_V,
        "tests/test_against_haiku.py::test_conv2d_transpose_is_hwio_with_transpose_flip",
        note="Not an alias of flax: the same array is HWIO here and HWOI in "
        "flax.linen.ConvTranspose.",
      ),
      Check(_LIN, "hk.Linear", _HAIKU_V, "tests/test_against_haiku.py::test_linear_is_io"),
      Check(
        _DW,
        "hk.DepthwiseConv2D: w (kh, kw, 1, C * multiplier), a grouped HWIO kernel",
        _HAIKU_V,
        "tests/test_against_haiku.py::test_depthwise_conv2d_is_a_grouped_hwio_kernel",
      ),
    ),
    "tensorflow": (
      Check(
        _FWD,
        "keras.layers.Conv1D/2D/3D, SAME/VALID with even kernels, strides, groups, dilation",
        _KERAS_V,
        "tests/test_against_keras.py::test_conv_nd_is_the_keras_convention",
      ),
      Check(
        _T,
        "keras.layers.Conv1DTranspose/2D/3D, SAME/VALID, strides 1-3, output_padding, dilation",
        _KERAS_V,
        "tests/test_against_keras.py::test_conv_nd_transpose_is_the_keras_convention",
        note="With padding='same' and an explicit output_padding p Keras pads the "
        "forward conv by (2 * (k_eff // 2) - p) in total, low half first: pass "
        "those pads to flipconv. With an even kernel and p = 0 its output, "
        "(in - 1) * stride, is no SAME conv's input size at all.",
      ),
      Check(
        _SIZE,
        "keras.layers.Conv2DTranspose without output_padding",
        _KERAS_V,
        "tests/test_against_keras.py::test_default_transpose_size_is_the_tensorflow_rule",
      ),
      Check(
        _LIN,
        "keras.layers.Dense",
        _KERAS_V,
        "tests/test_against_keras.py::test_dense_kernel_is_io_and_converts_to_torch_linear",
      ),
      Check(
        _DW,
        "keras.layers.DepthwiseConv2D: kernel (kh, kw, C, multiplier), output "
        "channel c * multiplier + m",
        _KERAS_V,
        "tests/test_against_keras.py::"
        "test_depthwise_conv2d_is_a_grouped_conv_with_channel_c_times_mult_plus_m",
      ),
    ),
    "tflite": (
      Check(
        _FWD,
        "CONV_2D: filter (out, kh, kw, in), SAME/VALID with an even kernel, strides, dilation",
        _TFLITE_V,
        "tests/test_against_tflite.py::test_conv_2d_is_the_tflite_convention",
      ),
      Check(
        _T,
        "TRANSPOSE_CONV: filter (out_t, kh, kw, in_t), SAME/VALID, strides",
        _TFLITE_V,
        "tests/test_against_tflite.py::test_transpose_conv_is_ihwo_without_flip",
      ),
      Check(
        _SIZE,
        "TRANSPOSE_CONV reads its output shape from input 0 (kOutputShapeTensor); "
        "the converter writes the size TensorFlow computed",
        source="https://github.com/tensorflow/tensorflow/blob/master/tensorflow/lite/"
        "kernels/transpose_conv.cc",
      ),
      Check(
        _LIN,
        "FULLY_CONNECTED: weights (out, in)",
        _TFLITE_V,
        "tests/test_against_tflite.py::test_fully_connected_weights_are_oi",
      ),
      Check(
        _DW,
        "DEPTHWISE_CONV_2D: filter (1, kh, kw, C * multiplier)",
        _TFLITE_V,
        "tests/test_against_tflite.py::"
        "test_depthwise_conv_2d_is_ihwo_grouped_and_converts_to_keras",
      ),
    ),
    "pytorch": (
      Check(
        _FWD,
        "torch.nn.functional.conv1d/2d/3d weights moved to flax.linen.Conv",
        _TORCH_V,
        "tests/test_convert.py::test_torch_weights_run_in_flax_after_conversion",
      ),
      Check(
        _T,
        "torch.nn.functional.conv_transpose1d/2d/3d, groups, dilation, output_padding",
        _TORCH_V,
        "tests/test_against_torch_transpose.py::test_conv_transpose_equals_torch",
      ),
      Check(
        _SIZE,
        "conv_transpose output size (output_padding 0 is the default)",
        _TORCH_V,
        "tests/test_against_torch_transpose.py::test_conv_transpose_equals_torch_everywhere",
      ),
      Check(
        _LIN,
        "torch.nn.Linear: weight (out, in)",
        _TORCH_V,
        "tests/test_convert.py::test_torch_linear_weight_is_oi",
        note="A Linear after torch.flatten of NCHW features reads them in (c, h, w) "
        "order: convert_linear_kernel(..., feature_shape=(C, H, W)) permutes its "
        "inputs for an NHWC flatten.",
      ),
    ),
    "onnx": (
      Check(
        _FWD,
        "Conv: X NCHW, W (M, C/group, kh, kw), pads, auto_pad",
        _ORT_V,
        "tests/test_against_onnx.py::test_conv_equals_onnxruntime",
      ),
      Check(
        _T,
        "ConvTranspose: W (C, M/group, kh, kw), pads, output_padding",
        _ORT_V,
        "tests/test_against_onnx.py::test_conv_transpose_with_pads_equals_onnxruntime",
      ),
      Check(
        _SIZE,
        "ConvTranspose without output_shape",
        _ORT_V,
        "tests/test_against_onnx.py::test_onnxruntime_conv_transpose_equals_pytorch_default_size",
      ),
      Check(
        _LIN,
        "Gemm(transB=1): B (N, K), as torch.onnx exports nn.Linear",
        _ORT_V,
        "tests/test_convert.py::test_onnx_gemm_with_trans_b_takes_an_oi_weight",
      ),
    ),
    "caffe": (
      Check(
        _FWD,
        "Convolution: weight (num_output, channels / group, kh, kw); im2col reads "
        "input_row = -pad_h + kernel_row * dilation_h + ..., no flip",
        source=_CAFFE_SRC
        + "src/caffe/layers/base_conv_layer.cpp#L134-L138 and "
        + _CAFFE_SRC
        + "src/caffe/util/im2col.cpp#L33",
      ),
      Check(
        _T,
        "Deconvolution: the same weight blob with conv_out_channels_ = channels_ "
        "(reverse_dimensions), forward pass = the convolution's backward_cpu_gemm",
        source=_CAFFE_SRC
        + "src/caffe/layers/base_conv_layer.cpp#L124-L126 and "
        + _CAFFE_SRC
        + "src/caffe/layers/deconv_layer.cpp#L32",
      ),
      Check(
        _SIZE,
        "Deconvolution output: stride * (in - 1) + kernel_extent - 2 * pad",
        source=_CAFFE_SRC + "src/caffe/layers/deconv_layer.cpp#L17-L19",
      ),
      Check(
        _LIN,
        "InnerProduct: weight (N_, K_) = (num_output, input) unless transpose",
        source=_CAFFE_SRC + "src/caffe/layers/inner_product_layer.cpp#L33-L38",
      ),
    ),
    "theano": (
      Check(
        _FWD,
        "theano.tensor.nnet.conv2d(..., filter_flip=True): filters (output "
        "channels, input channels, rows, columns); conv3d likewise; border_mode valid/"
        "full/half/ints/pairs, subsample, filter_dilation, num_groups",
        _PYTENSOR_V,
        _THEANO_TESTS + "test_conv_equals_theano_conv",
        source=_THEANO_SRC + "#L620-L630",
      ),
      Check(
        _T,
        "conv2d_grad_wrt_inputs / conv3d_grad_wrt_inputs(..., filter_flip=True): the "
        "adjoint of conv2d with the same filters",
        _PYTENSOR_V,
        _THEANO_TESTS + "test_conv_transpose_equals_theano_grad_wrt_inputs",
        source=_THEANO_SRC + "#L1004-L1013",
      ),
      Check(
        _SIZE,
        "conv2d_grad_wrt_inputs takes input_shape; the smallest size is what "
        "Lasagne (and an un-padded gradient) uses",
        source=_LASAGNE_SRC + "lasagne/layers/conv.py#L951-L966",
      ),
      Check(
        _LIN,
        "no dense op; Lasagne's DenseLayer W (num_inputs, num_units)",
        source=_LASAGNE_SRC + "lasagne/layers/dense.py#L103",
      ),
    ),
    "lasagne": (
      Check(
        _FWD,
        "Conv2DLayer(flip_filters=True): W (num_filters, num_input_channels, fh, "
        "fw) passed to Theano's conv2d as filter_flip=flip_filters",
        _PYTENSOR_V,
        _THEANO_TESTS + "test_conv_equals_lasagne_conv2d_layer",
        source=_LASAGNE_SRC
        + "lasagne/layers/conv.py#L331-L340 and "
        + _LASAGNE_SRC
        + "lasagne/layers/conv.py#L632-L649",
      ),
      _LASAGNE_T,
      _LASAGNE_SIZE,
      _LASAGNE_LIN,
    ),
    "lasagne-mm": (
      Check(
        _FWD,
        "Conv2DMMLayer / Conv2DDNNLayer / Conv2DCCLayer: flip_filters=False by "
        "default, same W shape",
        _PYTENSOR_V,
        _THEANO_TESTS + "test_conv_equals_lasagne_conv2d_layer",
        source=_LASAGNE_SRC + "lasagne/layers/corrmm.py#L49-L54",
        note="DilatedConv2DLayer stores W as (num_input_channels, num_filters, fh, fw), "
        "i.e. IOHW with flip_filters=False: pass kernel_layout='IOHW'.",
      ),
      _LASAGNE_T,
      _LASAGNE_SIZE,
      _LASAGNE_LIN,
    ),
    "equinox": (
      Check(
        _FWD,
        "eqx.nn.Conv, unbatched (C, spatial...), 1-D/2-D/3-D, SAME/VALID/ints/"
        "pairs, groups, dilation",
        _EQX_V,
        "tests/test_against_equinox.py::test_conv_is_the_equinox_convention",
      ),
      Check(
        _T + _SIZE,
        "eqx.nn.ConvTranspose: weight (out_t, in_t, k...), stride, padding, output_padding",
        _EQX_V,
        "tests/test_against_equinox.py::test_conv_transpose_is_the_equinox_convention",
        note="transpose_flip is True, as the layer's FAQ builds it "
        "(flip(conv.weight).swapaxes(0, 1)). Its SAME output_padding p subtracts "
        "from in * stride: use output_shape=in * stride - p. A grouped "
        "ConvTranspose stores (out_t, in_t / groups, k...), which is not a "
        "relabelled forward kernel: flipconv refuses it.",
      ),
      Check(
        _LIN,
        "eqx.nn.Linear: weight (out, in)",
        _EQX_V,
        "tests/test_against_equinox.py::test_linear_weight_is_oi",
      ),
    ),
  }
)
"""Per canonical name: where each field of the entry was checked (see :class:`Check`)."""


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
    raise TypeError(
      f"get_convention: convention must be a name or a flipconv.Convention, got {convention!r}."
    )
  key = convention.lower().replace("_", "-")
  if key in conventions:
    return conventions[key]
  raise ValueError(
    f"get_convention: unknown convention {convention!r}"
    f"{did_you_mean(key, conventions)}. Known: {', '.join(sorted(conventions))}."
  )
