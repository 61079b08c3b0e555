"""What a convolution may ask XLA for: sizes that exist and arrays that fit.

XLA stores every size as an int64 and aborts the process (``SIGABRT``, no
exception) on a shape whose element or byte count overflows it; an array
larger than the device's memory fails at run time after the allocator has
tried. Both are caught here first, in Python, on the static shapes, with a
``ValueError`` that names the argument responsible and the size it would
produce. Nothing is added to the traced program.

The bounds:

* ``MAX_EXTENT = 2**62``: every argument value (stride, dilation, padding)
  and every element count. XLA's sizes are int64; the 2x headroom keeps
  XLA's own sums of two such sizes from overflowing.
* ``MAX_PADDING = 2**24``: each side's padding (also a padding that a name
  such as ``"FULL"`` derives from the dilation). With padding of ``2**26``
  and more, ``lax.conv_general_dilated`` on CPU returns wrong values without
  an error (measured with jax 0.10: padding and stride ``2**26`` to ``2**30``
  on an input of 8, batch 2: garbage or NaN in the second batch element;
  ``2**24`` was right in every case tried), which looks like 32-bit offsets
  inside XLA's convolution; the bound keeps a 4x margin below the first
  failure.
* :func:`max_bytes`: no array a conv creates (its output; the padded input
  where a pad mode materialises it) may hold more bytes than the memory of
  the device: physical memory on CPU, the allocator's limit on GPU/TPU. Such
  an array cannot be computed, only attempted.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

MAX_EXTENT = 2**62
MAX_PADDING = 2**24


@functools.lru_cache(maxsize=1)
def max_bytes() -> int:
  """The most bytes one array may take: the default device's memory.

  Returns:
    ``bytes_limit`` of the default device where its allocator reports one
    (GPU, TPU), else the machine's physical memory, else ``MAX_EXTENT``.
  """
  try:
    stats = jax.devices()[0].memory_stats() or {}
  except Exception:  # backends without memory stats
    stats = {}
  if stats.get("bytes_limit"):
    return int(stats["bytes_limit"])
  try:
    return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
  except (ValueError, OSError, AttributeError):  # not POSIX
    return MAX_EXTENT


def _bytes_str(n: int) -> str:
  for unit, size in (("EB", 1e18), ("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
    if n >= size:
      return f"{n / size:.1f} {unit}"
  return f"{n:,} B"


def itemsize(dtype: Any, preferred_element_type: Any = None) -> tuple[int, str]:
  """(bytes per element, dtype name) of a conv's output."""
  try:
    out = np.dtype(preferred_element_type if preferred_element_type is not None else dtype)
  except TypeError:  # not a dtype: lax reports it
    out = np.dtype(dtype)
  return out.itemsize, out.name


def check_value(value: int, name: str, where: str) -> None:
  """An argument value that no int64 size arithmetic could hold."""
  if abs(value) > MAX_EXTENT:
    raise ValueError(
      f"{where}: {name}={value} is larger than any size XLA can use (its sizes are int64; "
      f"flipconv allows up to 2**62 = {MAX_EXTENT:,})."
    )


def check_array(
  shape: Sequence[int], item: tuple[int, str], what: str, why: str, where: str
) -> None:
  """Raises if an array of ``shape`` cannot exist (int64) or cannot fit in memory.

  Args:
    shape: the array's shape.
    item: ``(bytes per element, dtype name)``.
    what: the array, for the message ("the output", ...).
    why: the arguments that make it this large, for the message.
    where: the public function's name.
  """
  count = math.prod(shape)
  size, name = item
  nbytes = count * size
  limit = max_bytes()
  if count <= MAX_EXTENT and nbytes <= limit:
    return
  shape_s = "(" + ", ".join(str(int(s)) for s in shape) + ")"
  if count > MAX_EXTENT:
    reason = f"more than XLA's int64 sizes allow (flipconv allows 2**62 = {MAX_EXTENT:,})"
  else:
    reason = f"more than the {_bytes_str(limit)} of memory this device has"
  raise ValueError(
    f"{where}: {why} gives {what} of shape {shape_s}: {count:,} elements, {_bytes_str(nbytes)} "
    f"of {name}, {reason}."
  )


def _pads_str(lo: int, hi: int) -> str:
  return f"({lo}, {hi})"


def check_conv(
  where: str,
  x_shape: Sequence[int],
  k_shape: Sequence[int],
  call: Any,
  dtype: Any,
  preferred_element_type: Any = None,
  *,
  padding: Any = None,
  transposed: bool = False,
) -> None:
  """Checks the sizes one resolved conv (:class:`flipconv._spec.ConvCall`) would produce.

  Args:
    where: the public function's name.
    x_shape, k_shape: the operands' shapes, in the call's layouts.
    call: the resolved conv.
    dtype: the operands' (common) dtype.
    preferred_element_type: as passed to the conv.
    padding: the user's padding argument, for the message (a name such as
      ``"FULL"`` makes the dilation responsible for the padding's size).
    transposed: the call is ``conv_transpose``'s: its ``input_dilation`` is the
      user's ``strides``.

  Raises:
    ValueError: an argument or extent beyond :data:`MAX_EXTENT`, or an output
      (or materialised padded input) larger than :func:`max_bytes`.
  """
  layouts = call.layouts
  idil_name = "strides" if transposed else "input_dilation"
  named = [("dilation", call.dilation), (idil_name, call.input_dilation)]
  if not transposed:
    named.append(("strides", call.strides))
  for name, values in named:
    for v in values:
      check_value(v, name, where)
  for lo, hi in call.pads:
    check_value(lo, "padding", where)
    check_value(hi, "padding", where)

  x_sp = [x_shape[a] for a in layouts.spatial_axes("lhs")]
  k_sp = [k_shape[a] for a in layouts.spatial_axes("rhs")]
  outs, worst, worst_ratio = [], "", 0.0
  padded = []
  for dim, (n, k, (lo, hi)) in enumerate(zip(x_sp, k_sp, call.pads, strict=True)):
    idil, kdil, s = call.input_dilation[dim], call.dilation[dim], call.strides[dim]
    size = (n - 1) * idil + 1
    k_eff = (k - 1) * kdil + 1
    ext = size + lo + hi
    # Who makes this dimension large: input dilation, padding, or a padding name's dilation.
    terms = {idil_name: (size - n, idil), "dilation": (k_eff - k, kdil)}
    if transposed or isinstance(padding, str):
      # The pads follow from the kernel's extent (the adjoint's, or a padding name's).
      terms["dilation"] = (lo + hi + k_eff - k, kdil)
      pad_desc = "" if transposed else f", padding={padding!r}"
    else:
      terms["padding"] = (lo + hi, _pads_str(lo, hi))
      pad_desc = f", padding {_pads_str(lo, hi)}"
    name, (_, value) = max(terms.items(), key=lambda t: t[1][0])
    desc = (
      f"{name}={value} (spatial dimension {dim} ({layouts.spatial[dim]}): input {n}, "
      f"{idil_name} {idil}{pad_desc}, kernel {k}, dilation {kdil}"
      + ("" if transposed else f", stride {s}")
      + ")"
    )
    if max(abs(lo), abs(hi)) > MAX_PADDING:
      raise ValueError(
        f"{where}: {desc} pads {max(abs(lo), abs(hi)):,} on one side, more than the 2**24 = "
        f"{MAX_PADDING:,} flipconv allows: with padding of 2**26 and more, XLA's convolution "
        "returns wrong values (it seems to compute offsets in 32-bit integers)."
      )
    if max(ext, k_eff) > MAX_EXTENT:
      raise ValueError(
        f"{where}: {desc} gives a padded input {ext:,} long, more than any size XLA can use "
        f"(its sizes are int64; flipconv allows up to 2**62 = {MAX_EXTENT:,})."
      )
    out = max((ext - k_eff) // s + 1, 0)
    outs.append(out)
    padded.append(n + lo + hi)
    if out / n >= worst_ratio:
      worst, worst_ratio = desc, out / n
  lhs, _, out_spec = layouts.batched_specs()
  batch = x_shape[layouts.axis("lhs", "N")] if layouts.batched else 1
  channels = k_shape[layouts.axis("rhs", "O")]
  sizes = {"N": batch, "C": channels, **dict(zip(layouts.spatial, outs, strict=True))}
  item = itemsize(dtype, preferred_element_type)
  check_array([sizes[c] for c in out_spec], item, "an output", worst, where)
  if call.pad_mode != "zeros" and any(p != (0, 0) for p in call.pads):
    sizes = {"N": batch, "C": x_shape[layouts.axis("lhs", "C")]}
    sizes.update(zip(layouts.spatial, padded, strict=True))
    check_array(
      [sizes[c] for c in lhs], itemsize(dtype), "an input padded with pad_mode", worst, where
    )
