"""fc.correlate, fc.convolve and fc.conv_transpose against the same direct lax calls.

Everything is measured in one run: each timing is a jitted, warmed-up call
ended by ``block_until_ready``; the contenders of a case alternate within
every repeat (in an order that rotates between repeats) and the table shows
ratios of medians, so that load from other processes hits all of them alike.
Before anything is timed, the contenders of a case are checked to agree
(``np.testing.assert_allclose``), so every ratio compares the same result.

1. Forward ``y = f(x, k)`` and backward (``jax.grad`` of ``sum(y)`` w.r.t.
   ``x`` and ``k``) of ``fc.correlate`` and ``fc.convolve`` against
   ``lax.conv_general_dilated`` with the same layouts (``lax``) and, for
   convolve, the same call on ``lax.rev(k)`` (``lax+rev``). Shapes: 8x64x64x64,
   3x3, 64->64, SAME; 1x224x224x3, 7x7, 3->64, stride 2, padding 3; depthwise
   3x3 on 8x56x56x128 (groups=128), SAME; each in NHWC/HWIO and NCHW/OIHW.
   Targets: correlate/lax 1.00 (the same HLO), convolve/(lax+rev) <= 1.02.
   ``conv/lax`` is what the reverse itself costs.
2. ``fc.conv_transpose`` (stride 2, 3x3 and 4x4 kernels, 8x32x32x64 -> 64
   channels, SAME and VALID, flip True and False, both layouts) against:

   * ``lax.ct(tk)``: ``lax.conv_transpose(y, k', strides, pads,
     dimension_numbers=<the forward layouts>, transpose_kernel=True)`` with
     ``k' = k`` for flip=False and ``k' = lax.rev(k)`` for flip=True (the
     forward conv's kernel); target <= 1.02;
   * ``lax.ct``: the cheapest lax form, ``transpose_kernel=False`` with the
     kernel's ``O``/``I`` letters swapped in ``dimension_numbers`` (no
     transpose of the kernel) and ``k'' = lax.rev(k)`` for flip=False, ``k``
     for flip=True (the adjoint's reverse cancels the forward one);
   * ``lin.T``: ``jax.linear_transpose(lambda x: fc.conv(x, k, ...))(y)``.

   ``pads`` are explicit pairs on the stride-dilated input (``padding`` of
   ``lax.conv_transpose`` means that, not the forward padding): per spatial
   dimension, with ``m`` the input size, stride ``s``, kernel size ``k``, the
   output size ``n`` that fc.conv_transpose picks (``m*s`` for SAME,
   ``(m-1)*s+k`` for VALID) and ``lo`` the forward conv's low padding for an
   input of size ``n`` (``max(k-s, 0)//2`` for SAME, 0 for VALID)::

     pads = (k - 1 - lo, n - 1 - (m - 1) * s + lo)

   For these cases they are also what ``lax.conv_transpose`` derives from the
   strings ``"SAME"`` and ``"VALID"`` (checked too); its ``"VALID"`` differs
   where the kernel is smaller than the stride (TensorFlow's output size).

3. Whether the optimised HLO (``jax.jit(f).lower(...).compile().as_text()``
   with metadata, source locations and names removed) of flipconv's function
   equals the raw lax one: ``corr==lax`` and ``conv==lax+rev`` in part 1,
   ``==lax.ct(tk)``, ``==lax.ct``, ``==lin.T`` in part 2. ``conv-corr``
   compares convolve's HLO with correlate's: "only reverses" when the
   convolution instructions are the same and the other ops that differ only
   move data; ``rev A / B``: what the reverses apply to in each (``k`` the
   kernel, ``conv`` a convolution's result, i.e. the kernel gradient, ``-``
   none); ``ops``: the op counts that differ. ``spread`` is the interquartile
   range of the baseline's times over its median: ratios closer to 1 than
   that are noise.
4. ``fc.conv_transpose(..., pad_mode="circular")`` (one transposed conv onto the
   padded sizes, then the fold that adds the wrapped border back) on the CNN
   shapes of part 2 (8x32x32x64, 64->64, 3x3 and 4x4, stride 2, SAME; padding 1 at
   stride 1 and 2) and on 8x64x64x64 3x3 SAME at stride 1, both layouts, against:

   * ``lin.T``: ``jax.linear_transpose`` of ``fc.conv(..., pad_mode="circular")``;
     target <= 1.0;
   * ``zeros``: ``fc.conv_transpose`` with the same padding and ``pad_mode="zeros"``:
     what the padded mode costs; target <= 1.15;
   * ``unfolded``: the same transposed conv onto the padded sizes (no padding,
     ``output_shape`` = padded sizes), without the fold: ``circ/unfolded`` is the
     fold's own cost, ``unfolded/zeros`` what XLA:CPU's conv onto the larger
     output costs (measured 1.3-1.4x for 66x66 vs 64x64, more than the area).

   ``zeros`` and ``unfolded`` compute other results (they price the padding
   and the fold), so only ``lin.T`` is checked against the circular one.

5. A summary of each target ratio over all the rows of its table (geometric
   mean and range), as ratios of medians, as medians of the ratios of times
   taken in the same repeat, and as ratios of the fastest times. Rows whose
   HLO is identical are A/A comparisons: their spread is the noise floor.

The full run takes about 10 minutes on 2 cores shared with other jobs (the
depthwise rows take half of it: XLA:CPU computes the depthwise kernel
gradient as a dense conv and masks it), ``--quick`` under a minute.

  python benchmarks/bench_ops.py [--repeats 15] [--quick] [--only circular]
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import re
import statistics
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from _timing import interleaved  # benchmarks/_timing.py, beside this script
from jax import lax

import flipconv as fc
from flipconv import _padding

LAYOUTS = {"NHWC": ("NHWC", "HWIO"), "NCHW": ("NCHW", "OIHW")}


def spread(ts: list[float]) -> float:
  """Interquartile range over the median."""
  if len(ts) < 4:
    return float("nan")
  q1, _, q3 = statistics.quantiles(ts, n=4)
  return (q3 - q1) / statistics.median(ts)


def check(got, ref, what: str) -> None:
  """The contenders agree: float32 sums in a possibly different order."""
  for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(ref), strict=True):
    r = np.asarray(r)
    np.testing.assert_allclose(
      np.asarray(g), r, rtol=1e-4, atol=1e-5 * float(np.abs(r).max()), err_msg=what
    )


def jit_and_run(fns: dict[str, Callable], *args) -> tuple[dict[str, Callable], dict[str, object]]:
  """Each contender jitted, and its output on ``args`` (to check them before timing)."""
  jitted = {name: jax.jit(f) for name, f in fns.items()}
  return jitted, {name: f(*args) for name, f in jitted.items()}


def hlo_and_times(
  jitted: dict[str, Callable], args: tuple, repeats: int
) -> tuple[dict[str, str], dict[str, list[float]]]:
  """The optimised HLO of each jitted contender, and its times on ``args``, interleaved."""
  text = {name: hlo(f, *args) for name, f in jitted.items()}
  times = interleaved({name: lambda f=f: f(*args) for name, f in jitted.items()}, repeats)
  return text, times


def linear_transpose_of(conv_kwargs: dict[str, object], x_shape: tuple[int, ...]) -> Callable:
  """``(y, k) ->`` JAX's own adjoint of ``x -> fc.conv(x, k, **conv_kwargs)`` at ``y``."""

  def lin_t(y, k):
    fwd = lambda x: fc.conv(x, k, **conv_kwargs)
    return jax.linear_transpose(fwd, jax.ShapeDtypeStruct(x_shape, y.dtype))(y)[0]

  return lin_t


# ----------------------------------------------------------------- HLO text

_SECTIONS = ("FileNames", "FunctionNames", "FileLocations", "StackFrames")
_ATTRS = re.compile(r',\s*(?:metadata|frontend_attributes|origin)=\{(?:[^{}"]|"[^"]*")*\}')
_OPCODE = re.compile(r"^\s*(?:ROOT\s+)?%\S+\s*=\s*.*?\s([a-z][a-z0-9-]*)\(")


def canonical_hlo(text: str) -> str:
  """Optimised HLO text without what carries names or metadata.

  Drops the module name, the source-location tables, ``metadata=``,
  ``frontend_attributes=`` and ``origin=``, and renames every instruction,
  parameter and computation ``n0, n1, ...`` in order of appearance, so two
  programs compare equal exactly when XLA compiled them to the same graph.
  """
  lines = []
  for line in text.splitlines():
    if line.startswith("HloModule"):
      line = re.sub(r"^HloModule [^,]+", "HloModule m", line)
    elif line.strip() in _SECTIONS or re.match(r"^\d+ ", line) or not line.strip():
      continue
    lines.append(_ATTRS.sub("", line))
  body = "\n".join(lines)
  names: dict[str, str] = {}
  for m in re.finditer(r"%([\w.-]+)|([\w.-]+): [a-z]+\d*\[", body):
    name = m.group(1) or m.group(2)
    names.setdefault(name, f"n{len(names)}")
  body = re.sub(r"%([\w.-]+)", lambda m: "%" + names[m.group(1)], body)
  return re.sub(
    r"([\w.-]+)(: [a-z]+\d*\[)", lambda m: names.get(m.group(1), m.group(1)) + m.group(2), body
  )


def opcodes(text: str) -> collections.Counter:
  return collections.Counter(m.group(1) for line in text.splitlines() if (m := _OPCODE.match(line)))


def convolutions(text: str) -> list[str]:
  """The convolution instructions, without names and operands: shapes, window, dims."""
  out = []
  for line in text.splitlines():
    if " convolution(" in line:
      out.append(re.sub(r"^.*?=\s*|convolution\([^)]*\)", "", line).strip())
  return sorted(out)


def hlo(fn, *args) -> str:
  return canonical_hlo(fn.lower(*args).compile().as_text())


def op_diff(text: str, base: str) -> str:
  """The ops ``text`` has beyond ``base`` (``+op``) and lacks (``-op``)."""
  a, b = opcodes(text), opcodes(base)
  parts = [f"+{k}" + (f"x{v}" if v > 1 else "") for k, v in sorted((a - b).items())]
  parts += [f"-{k}" + (f"x{v}" if v > 1 else "") for k, v in sorted((b - a).items())]
  return " ".join(parts) or "none"


_MOVES = frozenset({"reverse", "fusion", "parameter", "transpose", "copy", "bitcast"})


def only_reverse(text: str, base: str) -> bool:
  """``text`` computes what ``base`` does up to reverses: the same convolution
  instructions, and the ops that differ only move data (reverse, transpose,
  copy, bitcast, and the fusions and parameters that wrap them)."""
  a, b = opcodes(text), opcodes(base)
  return convolutions(text) == convolutions(base) and set((a - b) + (b - a)) <= _MOVES


def reversed_operands(text: str) -> str:
  """What each reverse in the entry computation applies to (through its fusion).

  ``k``/``x`` where it reverses a parameter (the kernel, the input), ``conv``
  where it reverses a convolution's result (the kernel gradient).
  """
  comps: dict[str, list[str]] = {}
  current = None
  for line in text.splitlines():
    m = re.match(r"^(?:ENTRY )?%(\w+) \(", line)
    if m:
      current = "ENTRY" if line.startswith("ENTRY") else m.group(1)
      comps[current] = []
    elif current is not None and line.strip() != "}":
      comps[current].append(line)
  entry = {}
  for line in comps.get("ENTRY", []):
    m = re.match(r"^\s*(?:ROOT\s+)?%(\w+)\s*=", line)
    op = _OPCODE.match(line)
    if m and op:
      entry[m.group(1)] = (op.group(1), line)
  params = {name: line for name, (op, line) in entry.items() if op == "parameter"}
  labels = []
  for op, line in entry.values():
    called = re.search(r"calls=%(\w+)", line)
    inner = comps.get(called.group(1), []) if called else []
    if op != "reverse" and not any(" reverse(" in ln for ln in inner):
      continue
    count = 1 if op == "reverse" else sum(" reverse(" in ln for ln in inner)
    args = re.search(r"(?:reverse|fusion)\(([^)]*)\)", line)
    for ref in re.findall(r"%(\w+)", args.group(1) if args else ""):
      while entry.get(ref, ("",))[0] in ("bitcast", "copy"):
        ref = re.search(r"\(%(\w+)", entry[ref][1]).group(1)
      labels.append(_producer(ref, entry, params, comps) + (f"(x{count})" if count > 1 else ""))
  return ",".join(sorted(labels)) or "-"


def _producer(ref: str, entry: dict, params: dict, comps: dict) -> str:
  """``x``/``k`` for a parameter, else the op that makes ``ref`` (a fusion's root op)."""
  if ref in params:
    return "x" if "parameter(0)" in params[ref] else "k"
  op, line = entry.get(ref, ("?", ""))
  called = re.search(r"calls=%(\w+)", line)
  if op == "fusion" and called:
    inner = comps.get(called.group(1), [])
    if any(" convolution(" in ln for ln in inner):
      return "conv"
    root = next((_OPCODE.match(ln) for ln in inner if ln.lstrip().startswith("ROOT")), None)
    op = root.group(1) if root else op
  return op.replace("convolution", "conv")


# ------------------------------------------------------- part 1: correlate, convolve


@dataclasses.dataclass(frozen=True)
class OpCase:
  """A forward conv, written channels-last; ``arrays`` lays it out as asked."""

  name: str
  batch: int
  size: int
  c_in: int
  c_out: int
  taps: int
  strides: int
  padding: object  # fc's padding: a string or an int (both sides)
  groups: int = 1

  def lax_padding(self):
    if isinstance(self.padding, str):
      return self.padding
    return ((self.padding, self.padding),) * 2

  def arrays(self, layout: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((self.batch, self.size, self.size, self.c_in), np.float32)
    k = rng.standard_normal(
      (self.taps, self.taps, self.c_in // self.groups, self.c_out), np.float32
    )
    if layout == "NCHW":
      x, k = x.transpose(0, 3, 1, 2), k.transpose(3, 2, 0, 1)
    return jnp.asarray(np.ascontiguousarray(x)), jnp.asarray(np.ascontiguousarray(k))


def op_cases(quick: bool) -> list[OpCase]:
  if quick:
    return [
      OpCase("2x16x16x16 3x3 16->16 SAME", 2, 16, 16, 16, 3, 1, "SAME"),
      OpCase("1x32x32x3 7x7 3->16 s2 p3", 1, 32, 3, 16, 7, 2, 3),
      OpCase("2x16x16x32 dw3x3 SAME", 2, 16, 32, 32, 3, 1, "SAME", groups=32),
    ]
  return [
    OpCase("8x64x64x64 3x3 64->64 SAME", 8, 64, 64, 64, 3, 1, "SAME"),
    OpCase("1x224x224x3 7x7 3->64 s2 p3", 1, 224, 3, 64, 7, 2, 3),
    OpCase("8x56x56x128 dw3x3 SAME", 8, 56, 128, 128, 3, 1, "SAME", groups=128),
  ]


def op_fns(case: OpCase, layout: str) -> dict[str, Callable]:
  """Forward functions ``(x, k) -> y`` of the four contenders."""
  lhs, rhs = LAYOUTS[layout]
  spatial = tuple(rhs.index(c) for c in "HW")
  kw = dict(
    strides=case.strides, padding=case.padding, groups=case.groups, layout=lhs, kernel_layout=rhs
  )

  def raw(x, k):
    return lax.conv_general_dilated(
      x,
      k,
      (case.strides,) * 2,
      case.lax_padding(),
      dimension_numbers=(lhs, rhs, lhs),
      feature_group_count=case.groups,
    )

  return {
    "lax": raw,
    "fc.corr": lambda x, k: fc.correlate(x, k, **kw),
    "lax+rev": lambda x, k: raw(x, lax.rev(k, spatial)),
    "fc.conv": lambda x, k: fc.convolve(x, k, **kw),
  }


def grad_of(f: Callable) -> Callable:
  return jax.grad(lambda x, k: jnp.sum(f(x, k)), argnums=(0, 1))


def run_op_case(case: OpCase, layout: str, repeats: int) -> list[dict[str, object]]:
  x, k = case.arrays(layout)
  rows = []
  for kind in ("fwd", "bwd"):
    fns, out = jit_and_run(
      {name: f if kind == "fwd" else grad_of(f) for name, f in op_fns(case, layout).items()}, x, k
    )
    what = f"{case.name} {layout} {kind}"
    check(out["fc.corr"], out["lax"], f"{what}: fc.correlate vs lax")
    check(out["fc.conv"], out["lax+rev"], f"{what}: fc.convolve vs lax+rev")
    if kind == "fwd":  # and the flip itself: convolve(x, k) == correlate(x, flip_kernel(k))
      flipped = fc.flip_kernel(k, LAYOUTS[layout][1])
      check(out["fc.conv"], fns["fc.corr"](x, flipped), f"{what}: convolve vs flipped correlate")
    text, times = hlo_and_times(fns, (x, k), repeats)
    rows.append(
      {
        "case": case.name,
        "layout": layout,
        "kind": kind,
        "times": times,
        "corr_same": text["fc.corr"] == text["lax"],
        "conv_same": text["fc.conv"] == text["lax+rev"],
        "conv_rev_only": only_reverse(text["fc.conv"], text["fc.corr"]),
        "rev": (reversed_operands(text["fc.conv"]), reversed_operands(text["fc.corr"])),
        "conv_diff": op_diff(text["fc.conv"], text["fc.corr"]),
      }
    )
  return rows


def pct(ts: list[float]) -> str:
  v = spread(ts)
  return f"{'-':>7s}" if v != v else f"{v * 100:6.1f}%"


YES = {True: "yes", False: "NO"}


def print_op_table(rows: list[dict[str, object]]) -> None:
  med = statistics.median
  print(
    "\n1. correlate / convolve vs lax.conv_general_dilated (medians of interleaved runs)\n"
    "   targets: corr/lax 1.00, conv/(lax+rev) <= 1.02; rev: what the reverses in the "
    "HLO apply to, convolve / correlate\n"
  )
  print(
    f"{'case':30s}{'layout':>7s}{'pass':>5s}{'lax ms':>9s}{'spread':>8s}{'corr/lax':>9s}"
    f"{'conv/lax+rev':>13s}{'conv/lax':>9s}  {'corr==lax':>9s} {'conv==lax+rev':>13s}"
    "  conv-corr (HLO)"
  )
  for row in rows:
    t = {name: med(ts) for name, ts in row["times"].items()}
    verdict = "only reverses" if row["conv_rev_only"] else "DIFFERENT"
    print(
      f"{row['case']:30s}{row['layout']:>7s}{row['kind']:>5s}{t['lax'] * 1e3:9.2f}"
      f" {pct(row['times']['lax'])}{t['fc.corr'] / t['lax']:9.3f}"
      f"{t['fc.conv'] / t['lax+rev']:13.3f}{t['fc.conv'] / t['lax']:9.3f}"
      f"  {YES[row['corr_same']]:>9s} {YES[row['conv_same']]:>13s}"
      f"  {verdict}, rev {row['rev'][0]} / {row['rev'][1]}; ops {row['conv_diff']}"
    )


# -------------------------------------------------------------- part 2: conv_transpose


@dataclasses.dataclass(frozen=True)
class TCase:
  """A transposed conv: the adjoint of a forward conv with these arguments."""

  batch: int
  size: int  # the transposed conv's input size (the forward conv's output)
  channels: int
  taps: int
  strides: int
  padding: object  # "SAME" or "VALID" (part 4: also an int)
  flip: bool

  @property
  def name(self) -> str:
    return (
      f"{self.batch}x{self.size}x{self.size}x{self.channels} {self.taps}x{self.taps} "
      f"s{self.strides} {self.padding} flip={self.flip}"
    )

  def kwargs(self, layout: str) -> dict[str, object]:
    """fc's arguments for this conv (forward or transposed) in ``layout``."""
    lhs, rhs = LAYOUTS[layout]
    return dict(
      flip=self.flip, strides=self.strides, padding=self.padding, layout=lhs, kernel_layout=rhs
    )

  def arrays(self, layout: str, rng: np.random.Generator) -> tuple[jax.Array, jax.Array]:
    """The transposed conv's input ``y`` and the ``channels -> channels`` kernel."""
    y = rng.standard_normal((self.batch, self.size, self.size, self.channels), np.float32)
    k = rng.standard_normal((self.taps, self.taps, self.channels, self.channels), np.float32)
    if layout == "NCHW":
      y, k = y.transpose(0, 3, 1, 2), k.transpose(3, 2, 0, 1)
    return jnp.asarray(np.ascontiguousarray(y)), jnp.asarray(np.ascontiguousarray(k))

  def lax_pads(self) -> tuple[tuple[tuple[int, int], ...], int]:
    """Pads of the dilated input for lax.conv_transpose, and the output size (see above)."""
    m, s, k = self.size, self.strides, self.taps
    if self.padding == "SAME":
      n = m * s
      lo = max((m - 1) * s + k - n, 0) // 2  # forward SAME on an input of size n
    else:
      n, lo = (m - 1) * s + k, 0
    return ((k - 1 - lo, n - 1 - (m - 1) * s + lo),) * 2, n


def t_cases(quick: bool) -> list[TCase]:
  b, m, c = (2, 8, 16) if quick else (8, 32, 64)
  return [
    TCase(b, m, c, taps, 2, padding, flip)
    for taps in (3, 4)
    for padding in ("SAME", "VALID")
    for flip in (False, True)
  ]


def t_fns(case: TCase, layout: str, x_shape: tuple[int, ...]) -> dict[str, Callable]:
  lhs, rhs = LAYOUTS[layout]
  spatial = tuple(rhs.index(c) for c in "HW")
  swapped = rhs.translate(str.maketrans("OI", "IO"))
  pads, _ = case.lax_pads()
  strides = (case.strides,) * 2
  kw = case.kwargs(layout)

  def lax_tk(y, k):
    # transpose_kernel=True reverses and swaps O/I of the forward conv's kernel.
    kk = lax.rev(k, spatial) if case.flip else k
    return lax.conv_transpose(
      y, kk, strides, pads, dimension_numbers=(lhs, rhs, lhs), transpose_kernel=True
    )

  def lax_min(y, k):
    # The same without the kernel copy: swap O/I by letters; the adjoint's reverse
    # cancels the forward flip.
    kk = k if case.flip else lax.rev(k, spatial)
    return lax.conv_transpose(y, kk, strides, pads, dimension_numbers=(lhs, swapped, lhs))

  return {
    "lax.ct(tk)": lax_tk,
    "fc.ct": lambda y, k: fc.conv_transpose(y, k, **kw),
    "lax.ct": lax_min,
    "lin.T": linear_transpose_of(kw, x_shape),
  }


def run_t_case(case: TCase, layout: str, repeats: int) -> dict[str, object]:
  rng = np.random.default_rng(1)
  y, k = case.arrays(layout, rng)
  lhs, rhs = LAYOUTS[layout]
  kw = case.kwargs(layout)
  x_shape = jax.eval_shape(lambda a, b: fc.conv_transpose(a, b, **kw), y, k).shape
  _, n = case.lax_pads()
  assert x_shape[lhs.index("H")] == x_shape[lhs.index("W")] == n, (x_shape, n)
  fns, out = jit_and_run(t_fns(case, layout, x_shape), y, k)
  what = f"{case.name} {layout}"
  for name in ("lax.ct(tk)", "lax.ct", "lin.T"):
    check(out["fc.ct"], out[name], f"{what}: fc.conv_transpose vs {name}")
  # lax's own string padding gives the same pairs here (TensorFlow's sizes; for VALID only
  # where the kernel is at least the stride).
  if case.padding == "SAME" or case.taps >= case.strides:
    kk = lax.rev(k, tuple(rhs.index(c) for c in "HW")) if case.flip else k
    by_string = lax.conv_transpose(
      y,
      kk,
      (case.strides,) * 2,
      case.padding,
      dimension_numbers=(lhs, rhs, lhs),
      transpose_kernel=True,
    )
    check(out["fc.ct"], by_string, f"{what}: fc.conv_transpose vs lax's {case.padding!r}")
  # And the adjoint identity <conv(x), y> == <x, conv_transpose(y)> on a random x.
  xr = jnp.asarray(rng.standard_normal(x_shape, np.float32))
  fwd = fc.conv(xr, k, **kw)
  lhs_dot, rhs_dot = float(jnp.vdot(fwd, y)), float(jnp.vdot(xr, out["fc.ct"]))
  # The two sums cancel a lot; their rounding scales with |conv(x)| |y|, not with the result.
  scale = float(jnp.linalg.norm(fwd) * jnp.linalg.norm(y))
  np.testing.assert_allclose(
    lhs_dot, rhs_dot, rtol=0, atol=1e-5 * scale, err_msg=f"{what}: adjoint identity"
  )
  text, times = hlo_and_times(fns, (y, k), repeats)
  return {
    "case": case.name,
    "layout": layout,
    "times": times,
    "pads": case.lax_pads()[0][0],
    "same": {name: text["fc.ct"] == text[name] for name in ("lax.ct(tk)", "lax.ct", "lin.T")},
    "diff_tk": op_diff(text["fc.ct"], text["lax.ct(tk)"]),
  }


def print_t_table(rows: list[dict[str, object]]) -> None:
  med = statistics.median
  print(
    "\n2. fc.conv_transpose vs lax.conv_transpose and jax.linear_transpose of fc.conv\n"
    "   target: fc/lax.ct(tk) <= 1.02; pads: lax.conv_transpose's padding pair (both dims);"
    " ==: optimised HLO equal\n"
  )
  print(
    f"{'case':38s}{'layout':>7s}{'pads':>7s}{'tk ms':>8s}{'spread':>8s}"
    f"{'fc/lax.ct(tk)':>14s}{'fc/lax.ct':>10s}{'fc/lin.T':>9s}  {'==lax.ct(tk)':>12s}"
    f" {'==lax.ct':>8s} {'==lin.T':>7s}"
  )
  for row in rows:
    t = {name: med(ts) for name, ts in row["times"].items()}
    lo, hi = row["pads"]
    same = row["same"]
    diff = "" if same["lax.ct(tk)"] else f"  ops vs lax.ct(tk): {row['diff_tk']}"
    print(
      f"{row['case']:38s}{row['layout']:>7s}{f'({lo},{hi})':>7s}"
      f"{t['lax.ct(tk)'] * 1e3:8.2f} {pct(row['times']['lax.ct(tk)'])}"
      f"{t['fc.ct'] / t['lax.ct(tk)']:14.3f}{t['fc.ct'] / t['lax.ct']:10.3f}"
      f"{t['fc.ct'] / t['lin.T']:9.3f}  {YES[same['lax.ct(tk)']]:>12s}"
      f" {YES[same['lax.ct']]:>8s} {YES[same['lin.T']]:>7s}{diff}"
    )


# ------------------------------------------------ part 4: conv_transpose, pad_mode="circular"


@dataclasses.dataclass(frozen=True)
class PCase(TCase):
  """A transposed conv whose forward conv (a cross-correlation) pads circularly."""

  flip: bool = False

  @property
  def name(self) -> str:
    return (
      f"{self.batch}x{self.size}x{self.size}x{self.channels} {self.taps}x{self.taps} "
      f"s{self.strides} {self.padding}"
    )


def p_cases(quick: bool) -> list[PCase]:
  b, m, c = (2, 8, 16) if quick else (8, 32, 64)
  return [
    PCase(b, m, c, 3, 2, "SAME"),
    PCase(b, m, c, 4, 2, "SAME"),
    PCase(b, m, c, 3, 2, 1),
    PCase(b, m, c, 3, 1, 1),
    PCase(b, 2 * m, c, 3, 1, "SAME"),
  ]


def run_p_case(case: PCase, layout: str, repeats: int) -> dict[str, object]:
  y, k = case.arrays(layout, np.random.default_rng(2))
  lhs = LAYOUTS[layout][0]
  kw = case.kwargs(layout)
  size = case.size * case.strides
  ((lo, hi),) = _padding.explicit_pads(  # the forward conv's pads, for "unfolded"
    _padding.normalize_padding(case.padding, 1, "bench"), (size,), (case.taps,), (case.strides,)
  )
  extra = lo + hi
  x_shape = tuple(size if c in "HW" else y.shape[lhs.index(c)] for c in lhs)

  fns = {
    "circular": lambda y, k: fc.conv_transpose(
      y, k, **kw, pad_mode="circular", output_shape=(size, size)
    ),
    "lin.T": linear_transpose_of(dict(kw, pad_mode="circular"), x_shape),
    "zeros": lambda y, k: fc.conv_transpose(y, k, **kw, output_shape=(size, size)),
    "unfolded": lambda y, k: fc.conv_transpose(
      y, k, **dict(kw, padding=0), output_shape=(size + extra, size + extra)
    ),
  }
  fns, out = jit_and_run(fns, y, k)
  check(out["circular"], out["lin.T"], f"{case.name} {layout}: circular vs lin.T")
  text, times = hlo_and_times(fns, (y, k), repeats)
  return {
    "case": case.name,
    "layout": layout,
    "times": times,
    "same_lin": text["circular"] == text["lin.T"],
    "diff_zeros": op_diff(text["circular"], text["zeros"]),
  }


def print_p_table(rows: list[dict[str, object]]) -> None:
  med = statistics.median
  print(
    '\n4. fc.conv_transpose(pad_mode="circular") vs jax.linear_transpose of the circular '
    "fc.conv (lin.T)\n   and vs fc.conv_transpose with zero padding (zeros: the fold's cost); "
    "targets: circ/lin.T <= 1.0, circ/zeros <= 1.15\n"
  )
  print(
    f"{'case':32s}{'layout':>7s}{'zeros ms':>9s}{'spread':>8s}{'circ/lin.T':>11s}"
    f"{'circ/zeros':>11s}{'circ/unfolded':>14s}{'unfolded/zeros':>15s}  {'==lin.T':>7s}"
    "  ops beyond zeros"
  )
  for row in rows:
    t = {name: med(ts) for name, ts in row["times"].items()}
    print(
      f"{row['case']:32s}{row['layout']:>7s}{t['zeros'] * 1e3:9.2f} {pct(row['times']['zeros'])}"
      f"{t['circular'] / t['lin.T']:11.3f}{t['circular'] / t['zeros']:11.3f}"
      f"{t['circular'] / t['unfolded']:14.3f}{t['unfolded'] / t['zeros']:15.3f}"
      f"  {YES[row['same_lin']]:>7s}  {row['diff_zeros']}"
    )


def print_summary(
  op_rows: list[dict[str, object]],
  t_rows: list[dict[str, object]],
  p_rows: list[dict[str, object]],
) -> None:
  """Each target ratio over all rows of its table, three ways, to see through the load.

  ``medians``: the ratios of medians in the tables; ``paired``: the median over
  repeats of the two times of the same repeat (adjacent in time, so slow drifts
  in the load cancel); ``mins``: ratio of the fastest times (interference only
  ever adds time). Geometric mean over the rows and [lowest, highest].
  """
  pairs = [  # label, rows, contender, baseline, whether a row's HLO is the same
    ("correlate / lax", op_rows, "fc.corr", "lax", lambda row: row["corr_same"]),
    ("convolve / (lax+rev)", op_rows, "fc.conv", "lax+rev", lambda row: row["conv_same"]),
    ("convolve / lax (the reverse)", op_rows, "fc.conv", "lax", None),
    *(
      (f"conv_transpose / {b}", t_rows, "fc.ct", b, lambda row, b=b: row["same"][b])
      for b in ("lax.ct(tk)", "lax.ct", "lin.T")
    ),
    ("circular ct / lin.T", p_rows, "circular", "lin.T", lambda row: row["same_lin"]),
    ("circular ct / zeros ct", p_rows, "circular", "zeros", None),
    ("circular ct / unfolded", p_rows, "circular", "unfolded", None),
    ("unfolded / zeros ct", p_rows, "unfolded", "zeros", None),
  ]
  pairs = [p for p in pairs if p[1]]
  stats = {
    "medians": lambda a, b: statistics.median(a) / statistics.median(b),
    "paired": lambda a, b: statistics.median(x / y for x, y in zip(a, b, strict=True)),
    "mins": lambda a, b: min(a) / min(b),
  }
  print(
    "\nsummary: geometric mean over the rows [lowest .. highest]; HLO: rows whose "
    "optimised HLO is identical\n"
  )
  print(f"{'ratio':30s}{'rows':>5s}{'HLO':>5s}" + "".join(f"{k:>22s}" for k in stats))
  for label, rows, a, b, same in pairs:
    cells = ""
    for fn in stats.values():
      r = [fn(row["times"][a], row["times"][b]) for row in rows]
      geo = statistics.geometric_mean(r)
      cells += f"{geo:8.3f} [{min(r):.2f} .. {max(r):.2f}]"
    n_same = "-" if same is None else str(sum(map(same, rows)))
    print(f"{label:30s}{len(rows):5d}{n_same:>5s}{cells}")


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="small shapes, for a smoke run")
  parser.add_argument("--repeats", type=int, default=None, help="default 15 (3 with --quick)")
  parser.add_argument(
    "--only", choices=["circular"], default=None, help="run only part 4 (pad_mode='circular')"
  )
  args = parser.parse_args(argv)
  if args.repeats is None:
    args.repeats = 3 if args.quick else 15
  cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  print(
    f"jax {jax.__version__}, backend {jax.default_backend()} "
    f"({jax.devices()[0].device_kind}), {cpus} CPUs usable of {os.cpu_count()}, "
    f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, repeats {args.repeats}",
    flush=True,
  )
  start = time.perf_counter()

  def rows_of(cases, run):
    rows = []
    for case in cases:
      for layout in LAYOUTS:
        t0 = time.perf_counter()
        got = run(case, layout, args.repeats)
        rows += got if isinstance(got, list) else [got]
        print(
          f"  {case.name} {layout}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True
        )
    return rows

  every = args.only is None
  op_rows = rows_of(op_cases(args.quick), run_op_case) if every else []
  t_rows = rows_of(t_cases(args.quick), run_t_case) if every else []
  p_rows = rows_of(p_cases(args.quick), run_p_case)
  agreed = ["assert_allclose, rtol 1e-4"]
  if every:
    agreed.append(
      "conv_transpose also with lax's string padding and in <conv(x), y> == <x, conv_transpose(y)>"
    )
  agreed.append("part 4: circular with lin.T; zeros and unfolded compute other results")
  print(f"all contenders agreed before timing ({'; '.join(agreed)}).")
  if every:
    print_op_table(op_rows)
    print_t_table(t_rows)
  print_p_table(p_rows)
  print_summary(op_rows, t_rows, p_rows)
  print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
  main()
