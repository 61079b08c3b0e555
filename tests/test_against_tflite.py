"""The "tflite" convention against the LiteRT (TFLite) interpreter.

Each test writes a one-operator ``.tflite`` flatbuffer with the schema that
``ai-edge-litert`` ships (no TensorFlow needed), runs it in the interpreter and
compares its output with flipconv using the weights exactly as TFLite stores
them. Inputs and weights hold small integers, so float32 sums are exact.
"""

import numpy as np
import pytest

import flipconv as fc

pytest.importorskip("ai_edge_litert")
flatbuffers = pytest.importorskip("flatbuffers")
from ai_edge_litert import schema_py_generated as tfl  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

RNG = np.random.default_rng(4)
PADDING = {"SAME": tfl.Padding.SAME, "VALID": tfl.Padding.VALID}


def ints(shape):
  return RNG.integers(-3, 4, shape).astype(np.float32)


def _buffer(array=None):
  b = tfl.BufferT()
  if array is not None:
    b.data = np.frombuffer(np.ascontiguousarray(array).tobytes(), np.uint8)
  return b


def run_op(op, options_type, options, x, constants, out_shape):
  """Runs one builtin operator: inputs ``x`` (the only runtime input) and ``constants``.

  ``constants`` is a list of ``(position, array)``: the operator's other inputs,
  stored in the model, placed at ``position`` among its inputs.
  """
  model = tfl.ModelT()
  model.version = 3
  code = tfl.OperatorCodeT()
  code.builtinCode, code.deprecatedBuiltinCode, code.version = op, min(op, 127), 1
  model.operatorCodes = [code]
  arrays = [x, *(a for _, a in constants)]
  model.buffers = [_buffer(), _buffer(), *(_buffer(a) for _, a in constants), _buffer()]
  tensors = []
  for i, a in enumerate(arrays):
    t = tfl.TensorT()
    t.shape, t.buffer, t.name = list(a.shape), i + 1, f"t{i}"
    t.type = tfl.TensorType.INT32 if a.dtype == np.int32 else tfl.TensorType.FLOAT32
    tensors.append(t)
  out = tfl.TensorT()
  out.shape, out.buffer, out.name, out.type = list(out_shape), len(arrays) + 1, "y", 0
  tensors.append(out)
  order = [0] * len(arrays)
  positions = [p for p, _ in constants]
  x_pos = next(p for p in range(len(arrays)) if p not in positions)
  order[x_pos] = 0
  for i, p in enumerate(positions):
    order[p] = i + 1
  operator = tfl.OperatorT()
  operator.opcodeIndex, operator.inputs, operator.outputs = 0, order, [len(arrays)]
  operator.builtinOptionsType, operator.builtinOptions = options_type, options
  graph = tfl.SubGraphT()
  graph.tensors, graph.inputs, graph.outputs = tensors, [0], [len(arrays)]
  graph.operators = [operator]
  model.subgraphs = [graph]
  builder = flatbuffers.Builder(1024)
  builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
  interpreter = Interpreter(model_content=bytes(builder.Output()))
  interpreter.allocate_tensors()
  interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
  interpreter.invoke()
  return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize(("strides", "dilation"), [(1, 1), (2, 1), (1, 2)])
def test_conv_2d_is_the_tflite_convention(padding, strides, dilation):
  x = ints((2, 7, 6, 3))
  w = ints((5, 4, 3, 3))  # (out, kh, kw, in) = OHWI, an even kh
  expected = fc.conv(x, w, convention="tflite", strides=strides, dilation=dilation, padding=padding)
  opts = tfl.Conv2DOptionsT()
  opts.padding, opts.strideH, opts.strideW = PADDING[padding], strides, strides
  opts.dilationHFactor = opts.dilationWFactor = dilation
  y = run_op(
    tfl.BuiltinOperator.CONV_2D,
    tfl.BuiltinOptions.Conv2DOptions,
    opts,
    x,
    [(1, w), (2, np.zeros(5, np.float32))],
    expected.shape,
  )
  np.testing.assert_array_equal(y, np.asarray(expected))


@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_conv_2d_is_ihwo_grouped_and_converts_to_keras(multiplier):
  c = 3
  x = ints((1, 6, 7, c))
  w = ints((1, 4, 3, c * multiplier))  # (1, kh, kw, C * M)
  conv = fc.get_convention("tflite")
  expected = fc.conv(
    x,
    w,
    convention="tflite",
    kernel_layout=conv.depthwise_kernel_layout,
    groups=c,
    strides=2,
    padding="SAME",
  )
  opts = tfl.DepthwiseConv2DOptionsT()
  opts.padding, opts.strideH, opts.strideW = tfl.Padding.SAME, 2, 2
  opts.depthMultiplier, opts.dilationHFactor, opts.dilationWFactor = multiplier, 1, 1
  y = run_op(
    tfl.BuiltinOperator.DEPTHWISE_CONV_2D,
    tfl.BuiltinOptions.DepthwiseConv2DOptions,
    opts,
    x,
    [(1, w), (2, np.zeros(c * multiplier, np.float32))],
    expected.shape,
  )
  np.testing.assert_array_equal(y, np.asarray(expected))
  keras_kernel = fc.convert_depthwise_kernel(w, "tflite", "keras", groups=c)
  assert keras_kernel.shape == (4, 3, c, multiplier)
  got = fc.conv(
    x,
    keras_kernel.reshape(4, 3, 1, c * multiplier),
    convention="keras",
    groups=c,
    strides=2,
    padding="SAME",
  )
  np.testing.assert_array_equal(y, np.asarray(got))


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize(
  ("kernel", "strides", "out_hw"), [((4, 3), 2, None), ((3, 3), 2, "other"), ((2, 2), 3, None)]
)
def test_transpose_conv_is_ihwo_without_flip(padding, kernel, strides, out_hw):
  """Filter (out_t, kh, kw, in_t) = forward IHWO, transpose_flip=False.

  TRANSPOSE_CONV takes its output shape as an input; the converter writes the
  one TensorFlow computed, so the default sizes are TensorFlow's.
  """
  x = ints((1, 5, 6, 3))
  w = ints((4, *kernel, 3))
  if out_hw == "other":  # not the default size: another the forward conv maps to (5, 6)
    out_hw = (10, 12) if padding == "SAME" else (12, 14)
  conv = fc.get_convention("tflite")
  assert (conv.transpose_kernel_layout, conv.transpose_flip) == ("IHWO", False)
  expected = fc.conv_transpose(
    x, w, convention="tflite", strides=strides, padding=padding, output_shape=out_hw
  )
  opts = tfl.TransposeConvOptionsT()
  opts.padding, opts.strideH, opts.strideW = PADDING[padding], strides, strides
  shape = np.array(expected.shape, np.int32)
  y = run_op(
    tfl.BuiltinOperator.TRANSPOSE_CONV,
    tfl.BuiltinOptions.TransposeConvOptions,
    opts,
    x,
    [(0, shape), (1, w)],
    expected.shape,
  )
  np.testing.assert_array_equal(y, np.asarray(expected))


def test_fully_connected_weights_are_oi():
  x = ints((3, 5))
  w = ints((4, 5))
  assert fc.get_convention("tflite").linear_layout == "OI"
  opts = tfl.FullyConnectedOptionsT()
  y = run_op(
    tfl.BuiltinOperator.FULLY_CONNECTED,
    tfl.BuiltinOptions.FullyConnectedOptions,
    opts,
    x,
    [(1, w), (2, np.zeros(4, np.float32))],
    (3, 4),
  )
  np.testing.assert_array_equal(y, x @ w.T)
  np.testing.assert_array_equal(y, x @ fc.convert_linear_kernel(w, "tflite", "flax"))
