"""The ``flipconv`` command line.

Sub-commands are registered in :data:`COMMANDS` as ``(name, add_parser)``
pairs: ``add_parser(subparsers)`` adds the sub-command's parser and sets
``func``, which takes the parsed arguments and returns the exit code. To add
one, append a pair (``COMMANDS.append(("detect", _add_detect))``).

Exit codes: 0 success, 1 no match (``detect``) or a failed check (``demo``),
2 any error: a usage or file error, or any other failure (one line on stderr,
never a traceback); 130 Ctrl-C, 143 SIGTERM (a partial output is removed).
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

AddParser = Callable[[Any], argparse.ArgumentParser]


# ---------------------------------------------------------------------------
# Argument types


def _convention(name: str) -> Any:
  from flipconv.registry import get_convention

  try:
    return get_convention(name)
  except ValueError as e:
    raise argparse.ArgumentTypeError(str(e).removeprefix("get_convention: ")) from None


def _select_rule(text: str) -> tuple[str, str | None]:
  from flipconv.params import KINDS

  allowed = (*KINDS, "auto", "none")
  glob, sep, kind = text.rpartition("=")
  if not sep or not glob or kind not in allowed:
    raise argparse.ArgumentTypeError(
      f"expected GLOB=KIND with KIND one of {', '.join(allowed)}, got {text!r} "
      "(e.g. --select '*deconv*=conv_transpose')"
    )
  return glob, None if kind == "none" else kind


def _size(n: int) -> str:
  for unit in ("B", "kB", "MB", "GB"):
    if n < 1000 or unit == "GB":
      return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
    n /= 1000
  return ""  # pragma: no cover


def _selection(args: argparse.Namespace) -> Any:
  return dict(args.select) if args.select else "auto"


def _add_common(p: argparse.ArgumentParser) -> None:
  p.add_argument(
    "--select",
    action="append",
    type=_select_rule,
    metavar="GLOB=KIND",
    help="convert the tensors whose name matches GLOB as KIND (conv, "
    "conv_transpose, linear, auto, none); repeatable, first match wins; "
    "names are split at '.' and '/', '*' matches across them. Without "
    "--select, names and ranks decide (auto).",
  )
  p.add_argument(
    "--allow-pickle",
    action="store_true",
    help="read pickle-based files (.pt, .pth, .ckpt, .pkl, .bin) with "
    "torch.load(weights_only=True); refused otherwise",
  )


def _notes(command: str, notes: Sequence[Any]) -> None:
  for note in notes:
    print(f"flipconv {command}: note: {note}", file=sys.stderr)


# ---------------------------------------------------------------------------
# convert


def _flatten_rule(text: str) -> tuple[str, tuple[str, str, dict[str, int]]]:
  """``GLOB=CHW:HWC:C=64,H=4,W=4`` -> ``(GLOB, ("CHW", "HWC", {"C": 64, "H": 4, "W": 4}))``."""
  usage = (
    f"--flatten {text!r}: expected GLOB=SRC_ORDER:DST_ORDER:SIZES, e.g. "
    "'Dense_0=CHW:HWC:C=64,H=4,W=4' (the dense layer's path; the orders both sides "
    "flatten in; each letter's size)"
  )
  glob, eq, spec = text.partition("=")
  parts = spec.split(":")
  if not eq or not glob or len(parts) != 3:
    raise argparse.ArgumentTypeError(usage)
  s_order, d_order, sizes_text = parts
  sizes: dict[str, int] = {}
  for item in sizes_text.split(","):
    letter, eq, n = item.partition("=")
    if not eq or not n.isdigit() or len(letter) != 1:
      raise argparse.ArgumentTypeError(usage)
    sizes[letter] = int(n)
  return glob, (s_order, d_order, sizes)


def _port(args: argparse.Namespace) -> int:
  from flipconv.checkpoints import port_file

  plan, notes = port_file(
    args.src,
    args.dst,
    args.src_convention,
    args.dst_convention,
    like_path=args.like,
    select=_selection(args),
    flatten=dict(args.flatten) if args.flatten else None,
    strict=not args.allow_unmatched,
    epsilon=args.epsilon,
    dry_run=args.dry_run,
    force=args.force,
    allow_pickle=args.allow_pickle,
  )
  _notes("convert", notes)
  names = "name" if sum(r.matched_by == "name" for r in plan) else "order"
  if args.dry_run:
    print(f"dry run: {args.src} -> {args.dst}, filling {args.like}")
    print(str(plan))
    print("nothing written.")
  else:
    print(
      f"wrote {args.dst} (msgpack, the {len(plan)} variables of {args.like}): "
      f"{sum(r.source is not None for r in plan)} filled from {args.src} "
      f"(matched by {names} first); {args.src_convention.name} -> {args.dst_convention.name}."
    )
  return 0


def _convert(args: argparse.Namespace) -> int:
  from flipconv.checkpoints import convert_file

  if args.like is not None:
    if args.nest:
      raise ValueError("--nest and --like: --like already writes the model's variables.")
    return _port(args)
  for option, given in (
    ("--flatten", args.flatten),
    ("--allow-unmatched", args.allow_unmatched),
    ("--epsilon", args.epsilon is not None),
  ):
    if given:
      raise ValueError(f"{option} applies only with --like TEMPLATE.msgpack.")
  result = convert_file(
    args.src,
    args.dst,
    args.src_convention,
    args.dst_convention,
    select=_selection(args),
    dry_run=args.dry_run,
    force=args.force,
    allow_pickle=args.allow_pickle,
    nest=args.nest,
  )
  plan = result.plan
  _notes("convert", [f"not converted: {u}" for u in result.unclassified] + result.notes)
  if result.unclassified:
    print(
      "flipconv convert: note: say what they are with --select 'NAME=KIND' (KIND conv, "
      "conv_transpose, linear or none) plus --select '*=auto' for the rest.",
      file=sys.stderr,
    )
  total = sum(t.nbytes for t in result.tensors)
  converted = sum(c.changed for c in plan)
  if args.dry_run:
    print(
      f"dry run: {args.src} ({result.src_format}, {len(result.tensors)} tensors, "
      f"{_size(total)}) -> {args.dst} ({result.dst_format}), "
      f"{args.src_convention.name} -> {args.dst_convention.name}"
    )
    print(str(plan))
    print("nothing written.")
  else:
    print(
      f"wrote {args.dst} ({result.dst_format}, {len(result.tensors)} tensors, "
      f"{_size(total)}): {converted} converted ({sum(c.flip for c in plan)} flipped), "
      f"{len(result.tensors) - converted} unchanged; "
      f"{args.src_convention.name} -> {args.dst_convention.name}."
    )
  return 0


def _add_convert(sub: Any) -> argparse.ArgumentParser:
  p = sub.add_parser(
    "convert",
    help="convert a checkpoint's kernels from one convention to another",
    description="Re-lay-out (and, where the conventions' flips differ, flip) every conv "
    "and dense kernel of a checkpoint so that it computes the same under the "
    "target convention; with --like, fill a Flax model's variables instead. Formats: "
    ".npz, .safetensors, .msgpack (Flax); .onnx and pickle (--allow-pickle) are read. "
    "SRC is only read; DST is written atomically.",
  )
  p.add_argument("src", metavar="SRC", help="input checkpoint")
  p.add_argument("dst", metavar="DST", help="output checkpoint (its suffix picks the format)")
  p.add_argument(
    "--from",
    dest="src_convention",
    type=_convention,
    required=True,
    metavar="CONV",
    help="convention the weights were trained in, e.g. pytorch",
  )
  p.add_argument(
    "--to",
    dest="dst_convention",
    type=_convention,
    required=True,
    metavar="CONV",
    help="convention they will be used with, e.g. flax",
  )
  p.add_argument("--dry-run", action="store_true", help="print the plan; write nothing")
  p.add_argument("--force", action="store_true", help="replace an existing DST")
  p.add_argument(
    "--nest",
    action="store_true",
    help=".msgpack output: Flax variables ({'params': {'conv1': {'kernel': ...}}, "
    "'batch_stats': {'bn1': {'mean': ...}}}): names split at '.' and '/', each parameter "
    "named as Flax names it for its layer's kind",
  )
  p.add_argument(
    "--like",
    metavar="TEMPLATE",
    help="fill this model's variables: TEMPLATE is a .msgpack of "
    "flax.serialization.to_bytes(model.init(...)); DST (.msgpack) then loads with "
    "flax.serialization.from_bytes(variables, data). Layers are matched by name, else by "
    "order; every shape is checked",
  )
  p.add_argument(
    "--flatten",
    action="append",
    type=_flatten_rule,
    default=[],
    metavar="GLOB=SRC:DST:SIZES",
    help="with --like: a dense layer after a flatten, e.g. 'Dense_0=CHW:HWC:C=64,H=4,W=4' "
    "(torch.flatten of NCHW read by an NHWC model); repeatable",
  )
  p.add_argument(
    "--allow-unmatched",
    action="store_true",
    help="with --like: keep the template's values for variables the checkpoint lacks "
    "(default: an error listing them)",
  )
  p.add_argument(
    "--epsilon",
    type=float,
    metavar="EPS",
    help="with --like: a Lasagne BatchNorm's epsilon (var = 1/inv_std**2 - EPS; default 1e-4)",
  )
  _add_common(p)
  p.set_defaults(func=_convert)
  return p


# ---------------------------------------------------------------------------
# inspect


def _inspect(args: argparse.Namespace) -> int:
  from flipconv.checkpoints import open_checkpoint, plan_file

  if (args.src_convention is None) != (args.dst_convention is None):
    args.parser.error("give both --from and --to, or neither")
  if args.select and args.src_convention is None:
    args.parser.error("--select needs --from and --to")
  with open_checkpoint(args.file, allow_pickle=args.allow_pickle) as ckpt:
    tensors = ckpt.tensors
    params = sum(math.prod(t.shape) for t in tensors)
    print(
      f"{args.file}: {ckpt.format}, {len(tensors)} tensors, {params:,} parameters, "
      f"{_size(ckpt.nbytes)}"
    )
    for key, value in ckpt.metadata.items():
      print(f"  metadata {key} = {value}")
    planned = args.src_convention is not None
    by_name, unclassified = {}, {}
    if planned:
      by_name, _, found = plan_file(
        ckpt, args.src_convention, args.dst_convention, _selection(args), where="flipconv inspect"
      )
      unclassified = {u.path: u for u in found}
    rows = [
      (
        "name",
        "dtype",
        "shape",
        f"plan ({args.src_convention.name} -> {args.dst_convention.name})" if planned else "",
      )
    ]
    for t in tensors:
      what = ""
      if t.name in by_name:
        c = by_name[t.name].change
        what = f"{c.kind} -> {_shape(c.new_shape)}  {c.describe()}"
      elif planned:
        what = f"? {unclassified[t.name].reason}" if t.name in unclassified else "-"
      rows.append((t.name, str(t.dtype), _shape(t.shape), what))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
      print(("  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3]).rstrip())
    _notes("inspect", ckpt.notes)
    if planned:
      print(
        f"{len(by_name)} to convert ({sum(s.change.changed for s in by_name.values())} "
        f"changed), {len(unclassified)} kernel-shaped left unchanged ('?')."
      )
    else:
      print("add --from CONV --to CONV to see what convert would do with each tensor.")
  return 0


def _shape(shape: Sequence[int]) -> str:
  from flipconv._validate import shape_str

  return shape_str(shape)


def _add_inspect(sub: Any) -> argparse.ArgumentParser:
  p = sub.add_parser(
    "inspect",
    help="list a checkpoint's tensors and what convert would do with them",
    description="Names, dtypes and shapes of a checkpoint's tensors, its size and metadata; "
    "with --from and --to, the conversion planned for each tensor.",
  )
  p.add_argument("file", metavar="FILE", help="a .npz, .safetensors, .msgpack or .onnx file")
  p.add_argument("--from", dest="src_convention", type=_convention, metavar="CONV")
  p.add_argument("--to", dest="dst_convention", type=_convention, metavar="CONV")
  _add_common(p)
  p.set_defaults(func=_inspect, parser=p)
  return p


# ---------------------------------------------------------------------------
# demo


def _demo(args: argparse.Namespace) -> int:
  from flipconv import demo

  return demo.run()


def _add_demo(sub: Any) -> argparse.ArgumentParser:
  p = sub.add_parser("demo", help="show what a flip does, checking every claim")
  p.set_defaults(func=_demo)
  return p


# ---------------------------------------------------------------------------
# detect

_DETECT_ARRAYS = ("x", "kernel", "y", "bias")


def format_matches(matches: Sequence[Any]) -> list[str]:
  """The matches as a small table (one row each, notes below), as ``flipconv detect`` prints."""
  from flipconv.detect import kwargs_str

  rows = [("#", "convention", "flip", "layout", "kernel", "error", "arguments")]
  for i, m in enumerate(matches, 1):
    args = {k: v for k, v in m.kwargs.items() if k not in ("flip", "layout", "kernel_layout")}
    rows.append(
      (
        str(i),
        " = ".join(m.names) or "(none)",
        str(m.flip),
        m.layout,
        m.kernel_layout,
        f"{m.error:.1e}",
        kwargs_str(args),
      )
    )
  widths = [max(len(r[c]) for r in rows) for c in range(6)]
  lines = []
  for r, m in zip(rows, [None, *matches], strict=True):
    lines.append(("  ".join(r[c].ljust(widths[c]) for c in range(6)) + "  " + r[6]).rstrip())
    # The convention column already lists the equivalent conventions.
    note = "; ".join(
      part
      for part in (m.note.split("; ") if m is not None else ())
      if not part.endswith("the same here (same flip and layouts)")
    )
    if note:
      lines.append(" " * (widths[0] + 2) + "note: " + note)
  return lines


def _detect(args: argparse.Namespace) -> int:
  from flipconv import detect
  from flipconv.checkpoints import read_layer_file

  arrays, fixed = read_layer_file(
    args.file,
    arrays=_DETECT_ARRAYS,
    required=("x", "kernel", "y"),
    args=("transposed", *detect.FIXABLE),
  )
  transposed = fixed.pop("transposed", False)
  candidates = (
    [c.strip() for c in args.candidates.split(",") if c.strip()] if args.candidates else None
  )
  try:
    result = detect.search(
      arrays["x"],
      arrays["kernel"],
      arrays["y"],
      bias=arrays.get("bias"),
      transposed=transposed,
      candidates=candidates,
      rtol=args.rtol,
      **fixed,
    )
  except (ValueError, TypeError) as e:
    raise ValueError(" ".join(str(e).split()).removeprefix(f"{detect.WHERE}: ")) from None
  shapes = ", ".join(f"{k} {_shape(v.shape)}" for k, v in arrays.items())
  kind = "transposed conv" if transposed else "conv"
  fixed_str = f", fixed {detect.kwargs_str(fixed)}" if fixed else ""
  print(f"{args.file}: {kind}, {shapes}{fixed_str}")
  if result.matches:
    for line in format_matches(result.matches):
      print(line)
    return 0
  print(f"no convention reproduces y within rtol {result.rtol:.1e}.")
  print(
    f"tried: {', '.join(result.tried)}; {result.evaluated} argument sets x flips "
    f"(padding names, symmetric ints and (low, high) pairs, strides that fit the shapes, "
    f"dilation 1..{detect.MAX_DILATION})" + (", some tiers cut" if result.cut else "") + "."
  )
  if result.pruned:
    print("did not fit the shapes: " + "; ".join(f"{n}: {r}" for n, r in result.pruned))
  if result.closest is not None:
    print(f"closest: error {result.closest[0]:.2e} with {result.closest[1]}")
  return 1


def _add_detect(sub: Any) -> argparse.ArgumentParser:
  p = sub.add_parser(
    "detect",
    help="name the convention a layer's weights were trained in",
    description="Reads an .npz with arrays x, kernel and y (the input, kernel and output of "
    "one conv layer, as its framework holds them), optionally bias and fixed "
    "arguments (strides, padding, dilation, groups, layout, kernel_layout, flip, "
    "transposed, ...), and prints the conventions that reproduce y. Exit code 0: "
    "something matched; 1: nothing did; 2: a bad file.",
  )
  p.add_argument("file", metavar="FILE", help=".npz with x, kernel, y [, bias, fixed arguments]")
  p.add_argument(
    "--rtol",
    type=float,
    default=None,
    help="largest max|error| / max|y| that counts as a match (default: scaled to the dtypes)",
  )
  p.add_argument(
    "--candidates",
    default=None,
    metavar="NAMES",
    help="comma-separated conventions to try instead of the whole registry",
  )
  p.set_defaults(func=_detect)
  return p


COMMANDS: list[tuple[str, AddParser]] = [
  ("convert", _add_convert),
  ("inspect", _add_inspect),
  ("detect", _add_detect),
  ("demo", _add_demo),
]
"""The sub-commands, in help order: ``(name, add_parser(subparsers) -> parser)``."""


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="flipconv",
    description="Explicit flip and layout for convolutions, and weight conversion "
    "between frameworks' conventions.",
  )
  sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
  for _, add_parser in COMMANDS:
    add_parser(sub)
  return parser


def _one_line(e: BaseException, command: str) -> str:
  """The error as one line: known errors as they are, anything else with its type."""
  from flipconv.checkpoints import CheckpointError

  message = " ".join(str(e).split()).removeprefix(f"{command}: ")
  if isinstance(e, OSError) and not isinstance(e, CheckpointError):
    return f"{e.strerror or type(e).__name__}: {e.filename or message}"
  if isinstance(e, RecursionError):
    return "the input is nested too deeply to process (RecursionError)"
  if isinstance(e, MemoryError):
    return "out of memory (MemoryError)"
  if isinstance(e, (CheckpointError, ValueError, TypeError)):
    return message or type(e).__name__
  # A bug or a failure flipconv does not know: still one line, with what it was.
  return f"{type(e).__name__}: {message}" if message else type(e).__name__


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the command line; returns the exit code (0, 1 no match or failed check, 2 error).

  Every failure is one line on stderr and exit code 2, never a traceback;
  Ctrl-C gives 130 and SIGTERM 143, each after removing any partial output.
  """
  from flipconv.checkpoints import Terminated, sigterm_raises

  parser = build_parser()
  args = parser.parse_args(argv)
  command = f"flipconv {args.command}"
  try:
    with sigterm_raises():
      return args.func(args)
  except KeyboardInterrupt:
    print(f"{command}: interrupted", file=sys.stderr)
    return 130
  except Terminated:
    print(f"{command}: terminated", file=sys.stderr)
    return 128 + signal.SIGTERM
  except Exception as e:
    print(f"{command}: error: {_one_line(e, command)}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
  sys.exit(main())
