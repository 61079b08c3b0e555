"""flipconv: convolutions in JAX with an explicit flip and explicit layouts.

Frameworks disagree on whether a conv layer flips its kernel (true
convolution: Theano, Lasagne) or slides it as it is (cross-correlation: lax,
PyTorch, TensorFlow, Flax), and on how axes are laid out. flipconv makes both
explicit and moves weights safely between conventions.
"""

from flipconv._porting import FlattenWarning, OrderWarning, PlanRow, UnmatchedWarning
from flipconv.convert import convert_depthwise_kernel, convert_kernel, convert_linear_kernel
from flipconv.detect import Match, detect_convention
from flipconv.nesting import nest_params
from flipconv.ops import conv, convolve, correlate, flip_kernel
from flipconv.params import Change, Plan, UnselectedKernelWarning, convert_params, plan_params
from flipconv.registry import Convention, conventions, get_convention
from flipconv.transpose import conv_transpose

__version__ = "0.1.0"

# The Flax modules load on first use, so `import flipconv` stays light.
_SUBMODULES = ("linen", "nnx")


def __getattr__(name: str):
  if name in _SUBMODULES:
    import importlib

    return importlib.import_module(f"flipconv.{name}")
  raise AttributeError(f"module 'flipconv' has no attribute {name!r}")


def __dir__() -> list[str]:
  return sorted([*globals(), *_SUBMODULES])


__all__ = [
  "Change",
  "Convention",
  "FlattenWarning",
  "Match",
  "OrderWarning",
  "Plan",
  "PlanRow",
  "UnmatchedWarning",
  "UnselectedKernelWarning",
  "conv",
  "conv_transpose",
  "conventions",
  "convert_depthwise_kernel",
  "convert_kernel",
  "convert_linear_kernel",
  "convert_params",
  "convolve",
  "correlate",
  "detect_convention",
  "flip_kernel",
  "get_convention",
  "linen",
  "nest_params",
  "nnx",
  "plan_params",
]
