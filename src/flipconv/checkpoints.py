"""Checkpoint files: read and write ``.npz``, ``.safetensors``, Flax ``.msgpack``; read ``.onnx``.

Files are read tensor by tensor (``.npz`` and ``.safetensors``: nothing but
the header is read up front) and written tensor by tensor, so that converting
a checkpoint needs memory for about two copies of its largest tensor, not of
the whole file (``.msgpack`` is one MessagePack document: it is read and
written whole). Every write is atomic (:func:`atomic_write`). Pickle-based
files are refused unless asked for, and then read with PyTorch's
``weights_only=True`` loader. An ONNX model's initializers are read as its
tensors (with the optional ``onnx`` package).

Only regular files are read (never a FIFO or a device), and every header is
checked before data is read: what a file declares must be what it holds. A
file that cannot be read raises :class:`CheckpointError`, whose message is one
line that names the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from flipconv._ckpt_read import (
  FORMATS,
  INPUT_FORMATS,
  PICKLE_SUFFIXES,
  CheckpointError,
  MsgpackReader,
  NpzReader,
  OnnxReader,
  PickleReader,
  Reader,
  SafetensorsReader,
  TensorInfo,
  check_regular_file,
  file_format,
  open_checkpoint,
  rebuild_tree,
  unflatten,
  walk_tree,
)
from flipconv._ckpt_write import (
  Terminated,
  atomic_write,
  exists_error,
  sigterm_raises,
  write_checkpoint,
)

PROGRESS_MIN_BYTES = 256 << 20  # a progress bar for files at least this large

# The readers and writers live in _ckpt_read and _ckpt_write; this module is
# their public face, and converts whole files with them.
__all__ = [
  "FORMATS",
  "INPUT_FORMATS",
  "PICKLE_SUFFIXES",
  "PROGRESS_MIN_BYTES",
  "CheckpointError",
  "FilePlan",
  "MsgpackReader",
  "NpzReader",
  "OnnxReader",
  "PickleReader",
  "Reader",
  "SafetensorsReader",
  "TensorInfo",
  "Terminated",
  "atomic_write",
  "check_regular_file",
  "convert_file",
  "file_format",
  "load",
  "open_checkpoint",
  "plan_file",
  "port_file",
  "progress",
  "read_layer_file",
  "save",
  "sigterm_raises",
  "unflatten",
  "walk_tree",
  "write_checkpoint",
]


def save(
  path: str | os.PathLike[str],
  tensors: Mapping[str, Any],
  *,
  metadata: Mapping[str, str] | None = None,
) -> None:
  """Writes a flat ``{name: array}`` mapping (atomically); the suffix picks the format."""
  arrays = {k: np.asarray(v) for k, v in tensors.items()}
  infos = [TensorInfo(k, tuple(v.shape), v.dtype) for k, v in arrays.items()]
  write_checkpoint(path, infos, arrays.values(), metadata=metadata)


def load(path: str | os.PathLike[str], *, allow_pickle: bool = False) -> dict[str, Any]:
  """Reads a whole checkpoint as a flat ``{name: array}`` dict, in file order."""
  with open_checkpoint(path, allow_pickle=allow_pickle) as ckpt:
    return dict(iter(ckpt))


def read_layer_file(
  path: str | os.PathLike[str],
  *,
  arrays: Sequence[str],
  required: Sequence[str],
  args: Sequence[str],
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Reads a file of named arrays and small argument values (``flipconv detect``'s input).

  The file goes through the same checked readers as :func:`open_checkpoint`
  (no pickle). Entries named in ``arrays`` come back as arrays; those named
  in ``args`` as Python values: a string, a bool, an int, or a tuple of ints
  (or of pairs of ints).

  Args:
    path: an ``.npz`` (or any checkpoint format :func:`open_checkpoint` reads).
    arrays: the names of array entries.
    required: those of ``arrays`` that must be there.
    args: the names of argument entries.

  Returns:
    ``({name: array}, {name: value})``.

  Raises:
    CheckpointError: an unreadable file, an unknown or missing entry, or an
      argument of the wrong type; one line naming the file.
  """
  path = os.fspath(path)
  entries = load(path)
  unknown = [k for k in entries if k not in (*arrays, *args)]
  if unknown:
    raise CheckpointError(
      f"{path!r} has unknown entr{'ies' if len(unknown) > 1 else 'y'} "
      f"{', '.join(map(repr, unknown))}; allowed: {', '.join((*arrays, *args))}."
    )
  missing = [k for k in required if k not in entries]
  if missing:
    raise CheckpointError(
      f"{path!r} lacks the array{'s' if len(missing) > 1 else ''} "
      f"{', '.join(map(repr, missing))} (it has: {', '.join(entries) or 'nothing'})."
    )
  found = {k: np.asarray(entries[k]) for k in arrays if k in entries}
  values = {k: _arg_value(path, k, np.asarray(entries[k])) for k in args if k in entries}
  return found, values


def _arg_value(path: str, name: str, arr: np.ndarray) -> Any:
  """An argument stored as a 0-d or small array, as a Python value."""
  bad = lambda what: CheckpointError(f"{path!r}: entry {name!r} must be {what}.")
  if arr.dtype.kind in "US":
    if arr.ndim != 0:
      raise bad(f"a single string, not an array of shape {arr.shape}")
    return str(arr[()])
  if arr.dtype == np.bool_:
    if arr.ndim != 0:
      raise bad(f"a single True/False, not an array of shape {arr.shape}")
    return bool(arr)
  if arr.dtype.kind not in "iu":
    raise bad(f"ints, a string or a bool, not dtype {arr.dtype}")
  if arr.ndim > 2 or arr.size > 64:
    raise bad(f"an int, a list of ints or a list of pairs, not an array of shape {arr.shape}")
  value = arr.tolist()
  return tuple(tuple(v) if isinstance(v, list) else v for v in value) if arr.ndim else value


# ---------------------------------------------------------------------------
# Progress


@contextlib.contextmanager
def progress(
  total: int, desc: str, *, stream: Any = None, min_bytes: int = PROGRESS_MIN_BYTES
) -> Iterator[Callable[[int], None]]:
  """A byte-count callback that drives a tqdm bar on stderr, for large files on a terminal.

  Nothing is shown when ``stream`` (default ``sys.stderr``) is not a terminal,
  when ``total < min_bytes``, or when tqdm is not installed.
  """
  stream = stream if stream is not None else sys.stderr
  bar = None
  if total >= min_bytes and getattr(stream, "isatty", lambda: False)():
    try:
      from tqdm import tqdm
    except ImportError:
      tqdm = None
    if tqdm is not None:
      bar = tqdm(
        total=total,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=stream,
        leave=False,
      )
  try:
    yield (bar.update if bar is not None else (lambda n: None))
  finally:
    if bar is not None:
      bar.close()


# ---------------------------------------------------------------------------
# Converting a file


@dataclasses.dataclass(frozen=True)
class _Spec:
  """A tensor's shape and dtype: what selection sees of a tensor that is not read yet."""

  shape: tuple[int, ...]
  dtype: np.dtype

  @property
  def ndim(self) -> int:
    return len(self.shape)


@dataclasses.dataclass(frozen=True)
class FilePlan:
  """What :func:`convert_file` did (or, with ``dry_run``, would do).

  Attributes:
    src, dst: the files.
    src_format, dst_format: their formats.
    tensors: the input's tensors, in file order.
    plan: one :class:`flipconv.Change` per selected tensor (``str()``: a table).
    unclassified: kernel-shaped tensors that ``select="auto"`` left unchanged.
    notes: other things the user should know (dropped metadata, skipped leaves).
    written: whether ``dst`` was written.
  """

  src: str
  dst: str
  src_format: str
  dst_format: str
  tensors: list[TensorInfo]
  plan: list[Any]
  unclassified: list[Any]
  notes: list[str]
  written: bool


def plan_file(
  reader: Reader, src: Any, dst: Any, select: Any = "auto", *, where: str = "flipconv"
) -> tuple[dict[str, Any], list[Any], list[Any]]:
  """Selection on a file's tensors, from their headers alone.

  Returns:
    ``({name: Selected}, plan, unclassified)``, the plan and the unclassified
    tensors in file order, each named as in the file.
  """
  from jax.tree_util import DictKey

  from flipconv.params import Plan, path_parts, select_leaves

  specs = {t.name: _Spec(t.shape, t.dtype) for t in reader.tensors if t.name not in reader.opaque}
  _, _, selected, found = select_leaves(specs, src, dst, select, where=where)
  # Rows name each tensor as the file does ("0.weight", not "0/weight"), in file order.
  by_name = {}
  for sel in selected:
    name = sel.keypath[0].key
    by_name[name] = dataclasses.replace(sel, change=dataclasses.replace(sel.change, path=name))
  paths = {"/".join(path_parts([DictKey(t.name)])): t.name for t in reader.tensors}
  order = {t.name: i for i, t in enumerate(reader.tensors)}
  unclassified = sorted(
    (dataclasses.replace(u, path=paths.get(u.path, u.path)) for u in found),
    key=lambda u: order.get(u.path, len(order)),
  )
  plan = Plan(by_name[t.name].change for t in reader.tensors if t.name in by_name)
  return by_name, plan, unclassified


def _nested(names: Sequence[str]) -> Callable[[list[Any]], Any]:
  """A msgpack ``rebuild``: the Flax variables (``params``, ``batch_stats``) the names give."""
  from flipconv.nesting import nest_params

  dotted: dict[str, str] = {}
  for name in names:
    key = name.replace("/", ".")
    if key in dotted:
      raise CheckpointError(
        f"--nest (nest=True): the tensor names {dotted[key]!r} and {name!r} nest to the same "
        "place; rename one of them."
      )
    dotted[key] = name

  def rebuild(values: list[Any]) -> Any:
    return nest_params(dict(zip(dotted, values, strict=True)), collections=True)

  return rebuild


def _check_output(src_path: str, dst_path: str, *, force: bool, dry_run: bool) -> None:
  if os.path.isdir(dst_path):
    raise CheckpointError(f"{dst_path!r} is a directory; give the output a file name.")
  if os.path.exists(dst_path):
    if os.path.exists(src_path) and os.path.samefile(src_path, dst_path):
      raise CheckpointError(
        f"{dst_path!r} is the input file; write the output to a new file "
        "(the input is never modified)."
      )
    if not force and not dry_run:
      raise exists_error(dst_path)  # checked again, atomically, when the file is published


def port_file(
  src_path: str | os.PathLike[str],
  dst_path: str | os.PathLike[str],
  src: Any,
  dst: Any,
  *,
  like_path: str | os.PathLike[str],
  select: Any = "auto",
  flatten: Mapping[str, Any] | None = None,
  strict: bool = True,
  epsilon: float | None = None,
  dry_run: bool = False,
  force: bool = False,
  allow_pickle: bool = False,
) -> tuple[Any, list[str]]:
  """Fills a Flax model's variables from a checkpoint file: ``flipconv convert --like``.

  ``like_path`` is ``flax.serialization.to_bytes(variables)`` of the target
  model (``model.init`` output: its call order is kept). The checkpoint's
  tensors, read in file order, go through
  ``flipconv.convert_params(..., like=variables)``; the result, exactly the
  template's tree, is written to ``dst_path`` (``.msgpack``, atomically), so
  that ``flax.serialization.from_bytes(variables, data)`` loads it.

  Args:
    src_path: the checkpoint (any format :func:`open_checkpoint` reads).
    dst_path: the output, a ``.msgpack``.
    src, dst: conventions (names or :class:`flipconv.Convention`).
    like_path: the template ``.msgpack``.
    select, flatten, strict, epsilon: as in :func:`flipconv.convert_params`.
    dry_run: plan only; nothing is written.
    force: replace an existing ``dst_path``.
    allow_pickle: read pickle-based checkpoints with ``torch.load(weights_only=True)``.

  Returns:
    ``(plan, notes)``: the :class:`flipconv.Plan` (one row per template leaf)
    and what the reader skipped.

  Raises:
    CheckpointError: unreadable files, a template that is not a ``.msgpack``
      of variables, an output that is not ``.msgpack`` or exists.
    ValueError: the checkpoint does not fit the template (the message lists
      what is unmatched or misshapen).

  Examples:
    >>> import os, tempfile, numpy as np
    >>> from flax import serialization
    >>> from flipconv import checkpoints
    >>> folder = tempfile.mkdtemp()
    >>> src, like, dst = (os.path.join(folder, n) for n in ("t.npz", "like.msgpack", "f.msgpack"))
    >>> np.savez(src, **{"fc.weight": np.ones((10, 8)), "fc.bias": np.zeros(10)})
    >>> variables = {"params": {"fc": {"kernel": np.zeros((8, 10)), "bias": np.zeros(10)}}}
    >>> _ = open(like, "wb").write(serialization.to_bytes(variables))
    >>> plan, notes = checkpoints.port_file(src, dst, "pytorch", "flax", like_path=like)
    >>> loaded = serialization.from_bytes(variables, open(dst, "rb").read())
    >>> loaded["params"]["fc"]["kernel"].shape, float(loaded["params"]["fc"]["kernel"].sum())
    ((8, 10), 80.0)
  """
  from flipconv.params import port_params

  src_path, dst_path, like_path = os.fspath(src_path), os.fspath(dst_path), os.fspath(like_path)
  if file_format(dst_path, role="output") != "msgpack":
    raise CheckpointError(
      f"--like writes Flax variables, which only .msgpack holds; {dst_path!r} is not one."
    )
  _check_output(src_path, dst_path, force=force, dry_run=dry_run)
  with open_checkpoint(like_path) as template:
    if not isinstance(template, MsgpackReader):
      raise CheckpointError(
        f"--like {like_path!r}: the template must be a .msgpack of "
        f"flax.serialization.to_bytes(variables), got a {template.format} file."
      )
    like = template.tree
  with open_checkpoint(src_path, allow_pickle=allow_pickle) as reader:
    notes = list(reader.notes) + [f"{n}: not a tensor, skipped" for n in sorted(reader.opaque)]
    source = {t.name: reader.read(t.name) for t in reader.tensors if t.name not in reader.opaque}
  plan, variables = port_params(
    source, src, dst, like=like, select=select, flatten=flatten, strict=strict,
    epsilon=epsilon, order=None, convert=not dry_run, where="flipconv convert",
  )  # fmt: skip
  if dry_run:
    return plan, notes
  del source
  leaves = list(walk_tree(variables))
  infos = [
    TensorInfo("/".join(map(str, keys)), np.shape(v), np.asarray(v).dtype) for keys, v in leaves
  ]
  write_checkpoint(
    dst_path,
    infos,
    (v for _, v in leaves),
    rebuild=lambda values: rebuild_tree(variables, values),
    replace=force,
  )
  return plan, notes


def convert_file(
  src_path: str | os.PathLike[str],
  dst_path: str | os.PathLike[str],
  src: Any,
  dst: Any,
  *,
  select: Any = "auto",
  dry_run: bool = False,
  force: bool = False,
  allow_pickle: bool = False,
  progress_stream: Any = None,
  nest: bool = False,
) -> FilePlan:
  """Converts the kernels of a checkpoint file from convention ``src`` to ``dst``.

  Tensors are read, converted and written one at a time, in file order; the
  output keeps every tensor, their order and (safetensors to safetensors) the
  ``__metadata__``. ``src_path`` is only read; ``dst_path`` is written
  atomically (:func:`atomic_write`).

  Args:
    src_path: the input file (``.npz``, ``.safetensors``, ``.msgpack``; pickle
      with ``allow_pickle``).
    dst_path: the output file; its suffix picks its format.
    src, dst: convention names or :class:`flipconv.Convention`.
    select: as in :func:`flipconv.convert_params`; paths are the tensor names
      split at ``.`` and ``/``. A callable gets, for the leaf, an object with
      the tensor's ``shape``, ``dtype`` and ``ndim`` (the data is not read yet).
    dry_run: plan only; nothing is written.
    force: replace an existing ``dst_path``.
    allow_pickle: read pickle-based files with ``torch.load(weights_only=True)``.
    progress_stream: where a progress bar may go (default ``sys.stderr``; only
      a terminal, only for large files).
    nest: ``.msgpack`` output only: write the Flax variables the names give,
      ``{"params": {"conv1": {"kernel": ..., "bias": ...}}, "batch_stats":
      {"bn1": {"mean": ..., "var": ...}}}``: names split at ``.`` and ``/``,
      each parameter named as the Flax layer of its kind names it
      (``nest_params(..., collections=True)``; a BatchNorm's
      ``num_batches_tracked`` is dropped). To fill a given model, use
      :func:`port_file` (``--like``).

  Returns:
    A :class:`FilePlan`.

  Raises:
    CheckpointError: unreadable input, refused pickle, unsupported output
      suffix, existing output without ``force``, output == input.
    ValueError: unknown convention, bad ``select``.

  Examples:
    >>> import os, tempfile, numpy as np
    >>> from flipconv import checkpoints
    >>> folder = tempfile.mkdtemp()
    >>> src, dst = os.path.join(folder, "torch.npz"), os.path.join(folder, "flax.npz")
    >>> np.savez(src, **{"conv.weight": np.zeros((8, 3, 5, 5)), "conv.bias": np.zeros(8)})
    >>> print(checkpoints.convert_file(src, dst, "pytorch", "flax").plan)
    conv.weight  conv  (8, 3, 5, 5)  ->  (5, 5, 3, 8)  OIHW -> HWIO: transpose (2, 3, 1, 0)
    1 selected: 1 converted (0 flipped), 0 unchanged.
    >>> np.load(dst)["conv.weight"].shape
    (5, 5, 3, 8)
  """
  from flipconv.convert import apply_plan
  from flipconv.registry import get_convention

  src_path, dst_path = os.fspath(src_path), os.fspath(dst_path)
  src_c, dst_c = get_convention(src), get_convention(dst)
  dst_format = file_format(dst_path, role="output")
  if nest and dst_format != "msgpack":
    raise CheckpointError(
      f"--nest (nest=True) writes nested Flax params, which only .msgpack holds; "
      f"{dst_path!r} is {dst_format}."
    )
  _check_output(src_path, dst_path, force=force, dry_run=dry_run)
  with open_checkpoint(src_path, allow_pickle=allow_pickle) as reader:
    by_name, plan, unclassified = plan_file(reader, src_c, dst_c, select, where="flipconv convert")
    notes = list(reader.notes)
    keep = list(reader.tensors)
    if dst_format != "msgpack" and reader.opaque:
      keep = [t for t in keep if t.name not in reader.opaque]
      notes += [
        f"{n}: not a tensor; {dst_format} cannot store it, skipped" for n in sorted(reader.opaque)
      ]
    exotic = [t for t in keep if t.dtype.type.__module__ == "ml_dtypes"]
    if dst_format == "npz" and exotic:
      notes.append(
        f"the .npy format has no name for {exotic[0].dtype}: {len(exotic)} tensor(s) "
        f"({exotic[0].name}, ...) are stored as raw void bytes ('|V"
        f"{exotic[0].dtype.itemsize}'); the bits are kept, the dtype name is not"
      )
    if reader.metadata and dst_format != "safetensors":
      notes.append(f"{dst_format} files have no metadata: dropped __metadata__ {reader.metadata}")
    result = FilePlan(
      src_path,
      dst_path,
      reader.format,
      dst_format,
      list(reader.tensors),
      plan,
      unclassified,
      notes,
      written=not dry_run,
    )
    if dry_run:
      return result
    out_infos = [
      TensorInfo(t.name, by_name[t.name].change.new_shape, t.dtype) if t.name in by_name else t
      for t in keep
    ]

    def arrays() -> Iterator[Any]:
      for t in keep:  # no local holds a tensor while the next one is read
        sel = by_name.get(t.name)
        yield reader.read(t.name) if sel is None else apply_plan(reader.read(t.name), sel.plan)

    total = sum(t.nbytes for t in keep)
    with progress(total, os.path.basename(dst_path), stream=progress_stream) as on_bytes:
      write_checkpoint(
        dst_path,
        out_infos,
        arrays(),
        metadata=reader.metadata if dst_format == "safetensors" else None,
        compress=reader.compressed,
        rebuild=_nested([t.name for t in out_infos])
        if nest
        else reader.rebuild
        if isinstance(reader, MsgpackReader) and dst_format == "msgpack"
        else None,
        on_bytes=on_bytes,
        replace=force,
      )
  return result
