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
import json
import math
import os
import signal
import stat
import struct
import sys
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, BinaryIO

import ml_dtypes
import numpy as np

from flipconv._trees import torch_to_numpy

FORMATS = {".npz": "npz", ".safetensors": "safetensors", ".msgpack": "msgpack"}
INPUT_FORMATS = {**FORMATS, ".onnx": "onnx"}  # read, never written
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")
PROGRESS_MIN_BYTES = 256 << 20  # a progress bar for files at least this large

# safetensors dtype names (https://github.com/huggingface/safetensors, README "Format").
_ST_DTYPES = {
  "BOOL": np.dtype(np.bool_),
  "U8": np.dtype(np.uint8),
  "I8": np.dtype(np.int8),
  "U16": np.dtype(np.uint16),
  "I16": np.dtype(np.int16),
  "U32": np.dtype(np.uint32),
  "I32": np.dtype(np.int32),
  "U64": np.dtype(np.uint64),
  "I64": np.dtype(np.int64),
  "F16": np.dtype(np.float16),
  "BF16": np.dtype(ml_dtypes.bfloat16),
  "F32": np.dtype(np.float32),
  "F64": np.dtype(np.float64),
  "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
  "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
  "C64": np.dtype(np.complex64),
}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}
_ST_MAX_HEADER = 100 << 20  # the reference implementation's limit


class CheckpointError(ValueError):
  """A file that cannot be read or written as a checkpoint; the message names it."""


@dataclasses.dataclass(frozen=True)
class TensorInfo:
  """One tensor of a checkpoint, without its data."""

  name: str
  shape: tuple[int, ...]
  dtype: np.dtype

  @property
  def nbytes(self) -> int:
    return math.prod(self.shape) * self.dtype.itemsize


def file_format(
  path: str | os.PathLike[str], *, allow_pickle: bool = False, role: str = "file"
) -> str:
  """The format of ``path`` from its suffix: npz, safetensors, msgpack, onnx (input) or pickle.

  Raises:
    CheckpointError: an unknown suffix, or a pickle-based file without ``allow_pickle``.
  """
  path = os.fspath(path)
  suffix = os.path.splitext(path)[1].lower()
  if suffix in (FORMATS if role == "output" else INPUT_FORMATS):
    return INPUT_FORMATS[suffix]
  if suffix in PICKLE_SUFFIXES and role != "output":
    if allow_pickle:
      return "pickle"
    raise CheckpointError(
      f"{path!r} is a pickle-based file ({suffix}): loading a pickle can run any code it "
      "contains, so flipconv does not open it by default. Save it as .safetensors or .npz "
      "where it was made, or pass --allow-pickle (allow_pickle=True) to read it with "
      "PyTorch's restricted loader, torch.load(weights_only=True)."
    )
  raise CheckpointError(
    f"{path!r}: unsupported {role} type {suffix or '(no suffix)'!r}; "
    f"supported: {', '.join(FORMATS if role == 'output' else INPUT_FORMATS)}"
    + (" (and pickle with --allow-pickle)" if role != "output" else "")
    + "."
  )


# ---------------------------------------------------------------------------
# Readers


class Reader:
  """An open checkpoint: its tensors' names, shapes and dtypes, and their data on demand.

  Attributes:
    path: the file.
    format: ``"npz"``, ``"safetensors"``, ``"msgpack"`` or ``"pickle"``.
    tensors: one :class:`TensorInfo` per tensor, in file order.
    metadata: string metadata (safetensors ``__metadata__``), else empty.
    notes: what was skipped or changed on reading, for the user.
    opaque: names of leaves that are not numbers or arrays (a string in a
      ``.msgpack``): kept as they are, never converted.
    compressed: the file's arrays are compressed (``np.savez_compressed``).
  """

  format = ""

  def __init__(self, path: str):
    self.path = path
    self.tensors: list[TensorInfo] = []
    self.metadata: dict[str, str] = {}
    self.notes: list[str] = []
    self.opaque: set[str] = set()
    self.compressed = False

  def read(self, name: str) -> Any:
    """The tensor ``name`` as a NumPy array (a ``.msgpack`` leaf: as stored)."""
    raise NotImplementedError

  def __iter__(self) -> Iterator[tuple[str, Any]]:
    for info in self.tensors:
      yield info.name, self.read(info.name)

  @property
  def nbytes(self) -> int:
    return sum(t.nbytes for t in self.tensors)

  def close(self) -> None:
    pass

  def __enter__(self) -> Reader:
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()

  def _error(self, what: str) -> CheckpointError:
    return CheckpointError(f"{self.path!r}: not a valid {self.format} file: {what}.")


class _Duplicate(ValueError):
  """A JSON object that names a key twice (raised from ``object_pairs_hook``)."""


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
  out: dict[str, Any] = {}
  for key, value in pairs:
    if key in out:
      raise _Duplicate(key)
    out[key] = value
  return out


def _no_constant(name: str) -> Any:
  raise ValueError(f"{name} is not JSON")


def _count(value: Any) -> bool:
  """A size or an offset: a JSON integer (not a bool, not 2.0) in ``[0, 2**64)``."""
  return type(value) is int and 0 <= value < 1 << 64


class SafetensorsReader(Reader):
  """Reads the header once, then each tensor with one ``readinto``.

  Reads go through plain file reads rather than ``safetensors.safe_open``: it
  memory-maps the whole file, so the pages it touches stay resident (the RSS
  of a streaming conversion grows to the file's size), and it lists tensors
  sorted by name rather than in file order.

  The header is checked at least as strictly as the reference loader does:
  sizes and offsets are non-negative JSON integers, ``__metadata__`` is an
  object of strings, the tensors tile the data exactly; and a name given twice
  (which the reference loader resolves silently, last one wins) is refused.
  """

  format = "safetensors"

  def __init__(self, path: str):
    super().__init__(path)
    self._file = open(path, "rb")  # noqa: SIM115 -- closed by close()
    try:
      self._parse()
    except BaseException:
      self._file.close()
      raise

  def _parse(self) -> None:
    size = os.fstat(self._file.fileno()).st_size
    head = self._file.read(8)
    if len(head) < 8:
      raise self._error(f"it has {size} bytes, fewer than the 8-byte header size")
    (n,) = struct.unpack("<Q", head)
    if n > _ST_MAX_HEADER or 8 + n > size:
      raise self._error(
        f"the header claims {n} bytes but the file has {size} (truncated or not safetensors)"
      )
    raw = self._file.read(n)
    try:
      header = json.loads(
        raw.decode("utf-8"), object_pairs_hook=_unique_object, parse_constant=_no_constant
      )
    except _Duplicate as e:
      raise self._error(f"its header names {e.args[0]!r} twice") from None
    except RecursionError:
      raise self._error("its header is nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, a 5000-digit integer
      raise self._error(f"its header is not JSON ({_first_line(e)})") from None
    if not isinstance(header, dict):
      raise self._error("its header is not a JSON object")
    if not raw.startswith(b"{"):  # the reference loader refuses leading white space too
      raise self._error("its header does not start with '{'")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
      raise self._error(
        f"__metadata__ must be an object of strings, got {_short(json.dumps(meta))}"
      )
    self.metadata = dict(meta)
    self._start = 8 + n
    entries = []
    for name, e in header.items():
      if not (
        isinstance(e, dict)
        and isinstance(e.get("dtype"), str)
        and e["dtype"] in _ST_DTYPES
        and isinstance(e.get("shape"), list)
        and all(_count(s) for s in e["shape"])
        and isinstance(e.get("data_offsets"), list)
        and len(e["data_offsets"]) == 2
        and all(_count(o) for o in e["data_offsets"])
      ):
        raise self._error(
          f"tensor {name!r} has a bad entry {_short(json.dumps(e))} (expected a dtype of "
          f"{', '.join(_ST_DTYPES)}, a shape and two data_offsets, all non-negative integers)"
        )
      info = TensorInfo(name, tuple(e["shape"]), _ST_DTYPES[e["dtype"]])
      begin, end = e["data_offsets"]
      if end - begin != info.nbytes:
        raise self._error(
          f"tensor {name!r}: offsets {begin}..{end} do not fit {e['dtype']} {list(info.shape)}"
        )
      entries.append((begin, end, info))
    entries.sort(key=lambda t: t[0])
    pos = 0
    for begin, end, info in entries:
      if begin != pos:
        raise self._error(f"tensor {info.name!r} starts at {begin}, expected {pos}")
      pos = end
    if self._start + pos != size:
      raise self._error(
        f"its header describes {self._start + pos} bytes but the file has "
        f"{size}" + (" (truncated)" if self._start + pos > size else "")
      )
    self._offsets = {info.name: begin for begin, _, info in entries}
    self.tensors = [info for _, _, info in entries]
    self._infos = {info.name: info for info in self.tensors}

  def read(self, name: str) -> np.ndarray:
    info = self._infos[name]
    out = _empty(self, info)
    if info.nbytes:
      try:
        self._file.seek(self._start + self._offsets[name])
        got = self._file.readinto(memoryview(out.reshape(-1).view(np.uint8)))
      except OSError as e:
        raise self._error(f"tensor {name!r} cannot be read ({e.strerror or e})") from None
      if got != info.nbytes:
        raise self._error(f"tensor {name!r} is cut short ({got} of {info.nbytes} bytes)")
    return out

  def close(self) -> None:
    self._file.close()


def _empty(reader: Reader, info: TensorInfo) -> np.ndarray:
  try:
    return np.empty(info.shape, info.dtype)
  except MemoryError:
    raise CheckpointError(
      f"{reader.path!r}: tensor {info.name!r} ({info.nbytes:,} bytes) does not fit in memory."
    ) from None


def _first_line(e: BaseException) -> str:
  text = " ".join(str(e).split())
  return f"{type(e).__name__}: {_short(text)}" if text else type(e).__name__


def _short(text: str, limit: int = 200) -> str:
  return text if len(text) <= limit else text[: limit - 3] + "..."


# The largest expansion of a deflate stream is 1032:1; a member that claims more
# than that (plus slack for tiny members) is corrupt or a zip bomb.
_DEFLATE_MAX_RATIO = 1100


class NpzReader(Reader):
  """Reads member headers up front and each array when asked (decompressing as it goes).

  Every member is checked before any data is read: one ``.npy`` array per
  name, a header NumPy can parse, a non-negative shape, no Python objects, and
  a declared size that is exactly what the member holds (so a 2 kB file cannot
  ask for 64 TiB).
  """

  format = "npz"

  def __init__(self, path: str):
    super().__init__(path)
    try:
      self._zip = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
      raise self._error(f"it is not a readable .npz (zip) archive ({_first_line(e)})") from None
    try:
      self._parse()
    except BaseException:
      self._zip.close()
      raise

  def _parse(self) -> None:
    self._members: dict[str, zipfile.ZipInfo] = {}
    for member in self._zip.infolist():
      if member.is_dir():
        continue
      if not member.filename.endswith(".npy"):
        raise self._error(f"member {member.filename!r} is not a .npy array")
      name = member.filename[: -len(".npy")]
      if name in self._members:
        raise self._error(f"it holds two members named {member.filename!r}")
      self.compressed |= member.compress_type != zipfile.ZIP_STORED
      try:
        with self._zip.open(member) as f:
          version = np.lib.format.read_magic(f)
          shape, _, dtype = (
            np.lib.format.read_array_header_1_0(f)
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0(f)
          )
          offset = f.tell()
      except Exception as e:  # NumPy's header parser raises SyntaxError, TokenError, ValueError...
        raise self._error(
          f"member {member.filename!r} has no valid .npy header ({_first_line(e)})"
        ) from None
      if not all(type(s) is int and s >= 0 for s in shape):
        raise self._error(f"array {name!r} has the shape {shape}; sizes must be >= 0")
      if dtype.hasobject:
        raise self._error(
          f"array {name!r} holds Python objects, which only pickle can read; "
          "flipconv reads numeric arrays only"
        )
      info = TensorInfo(name, tuple(shape), dtype)
      if offset + info.nbytes != member.file_size:
        raise self._error(
          f"array {name!r} declares {dtype} {tuple(shape)} ({info.nbytes:,} bytes) but its "
          f"member holds {member.file_size - offset:,} bytes of data"
        )
      if (
        member.compress_type == zipfile.ZIP_DEFLATED
        and member.file_size > _DEFLATE_MAX_RATIO * member.compress_size + (1 << 16)
      ):
        raise self._error(
          f"array {name!r} claims {member.file_size:,} bytes from {member.compress_size:,} "
          "compressed, more than deflate can expand"
        )
      self._members[name] = member
      self.tensors.append(info)

  def read(self, name: str) -> np.ndarray:
    try:
      with self._zip.open(self._members[name]) as f:
        return np.lib.format.read_array(f, allow_pickle=False)
    except MemoryError:
      raise CheckpointError(
        f"{self.path!r}: array {name!r} ({self._members[name].file_size:,} bytes) does not "
        "fit in memory."
      ) from None
    except Exception as e:  # BadZipFile (a bad CRC), zlib.error, EOFError, an encrypted member ...
      raise self._error(f"array {name!r} cannot be read ({_first_line(e)})") from None

  def close(self) -> None:
    self._zip.close()


def _walk(node: Any) -> Iterator[tuple[tuple[Any, ...], Any]]:
  """Leaves of nested dicts and lists, in their order, as ``(keys, leaf)``.

  Iterative, so a tree nested thousands deep is walked like a flat one.
  """
  stack: list[tuple[tuple[Any, ...], Any]] = [((), node)]
  while stack:
    prefix, node = stack.pop()
    if isinstance(node, dict):
      stack.extend(((*prefix, k), v) for k, v in reversed(node.items()))
    elif isinstance(node, list):
      stack.extend(((*prefix, i), v) for i, v in reversed(list(enumerate(node))))
    else:
      yield prefix, node


def _rebuild(tree: Any, values: Iterable[Any]) -> Any:
  """``tree`` with its leaves (in :func:`_walk` order) replaced by ``values``; iterative."""
  values = iter(values)
  items = lambda node: iter(node.items() if isinstance(node, dict) else enumerate(node))
  if not isinstance(tree, (dict, list)):
    return next(values)
  root: Any = {} if isinstance(tree, dict) else []
  stack = [(items(tree), root)]  # depth first, children in order: the order _walk yields
  while stack:
    item = next(stack[-1][0], None)
    if item is None:
      stack.pop()
      continue
    key, child = item
    if isinstance(child, (dict, list)):
      new: Any = {} if isinstance(child, dict) else []
      stack.append((items(child), new))
    else:
      new = next(values)
    out = stack[-2][1] if isinstance(child, (dict, list)) else stack[-1][1]
    if isinstance(out, dict):
      out[key] = new
    else:
      out.append(new)
  return root


def _keys_str(keys: Sequence[Any]) -> str:
  return "".join(f"[{k!r}]" for k in keys) or "the root"


def unflatten(names: Sequence[str], values: Iterable[Any]) -> dict[str, Any]:
  """Nested dicts from ``"/"``-joined names: ``{"a/b": x}`` -> ``{"a": {"b": x}}``.

  Raises:
    CheckpointError: two names that nest to the same place (``a/b`` twice), or a
      name that is a group of another (``a`` and ``a/b``); the error names both.
  """
  tree: dict[str, Any] = {}
  leaves: dict[tuple[str, ...], str] = {}  # path -> the name stored there
  groups: dict[tuple[str, ...], str] = {}  # path -> the first name that made it a group
  for name, value in zip(names, values, strict=True):
    parts = tuple(name.split("/"))
    clash = leaves.get(parts, groups.get(parts))
    if clash is None:
      heads = (parts[:i] for i in range(1, len(parts)))
      clash = next((leaves[h] for h in heads if h in leaves), None)
    if clash is not None:
      raise CheckpointError(
        f"the tensor names {clash!r} and {name!r} collide: nested at '/', one would "
        "replace the other or hold it. Rename one of them."
      )
    node = tree
    for i, h in enumerate(parts[:-1], 1):
      groups.setdefault(parts[:i], name)
      node = node.setdefault(h, {})
    node[parts[-1]] = value
    leaves[parts] = name
  return tree


class MsgpackReader(Reader):
  """A Flax ``msgpack`` state dict, read whole; tensors are its leaves, named by "/"-joined keys."""

  format = "msgpack"

  def __init__(self, path: str):
    super().__init__(path)
    from flax import serialization

    with open(path, "rb") as f:
      data = f.read()
    if not data:
      raise self._error("it is empty")
    try:
      self.tree = serialization.msgpack_restore(data)
    except Exception as e:  # msgpack raises many types for bad input
      if isinstance(e, RecursionError) or type(e).__name__ == "StackError":
        raise self._error(
          "it is nested too deeply to read (msgpack and Flax stop near 1000)"
        ) from None
      raise self._error(_first_line(e)) from None
    if not isinstance(self.tree, dict):
      raise self._error(f"it holds a {type(self.tree).__name__}, not a dict of arrays")
    self._leaves = {}
    where: dict[str, tuple[Any, ...]] = {}
    for keys, leaf in _walk(self.tree):
      name = "/".join(map(str, keys))
      if name in where:
        raise self._error(
          f"the leaves at {_keys_str(where[name])} and {_keys_str(keys)} both have the "
          f"name {name!r}"
        )
      where[name] = keys
      self._leaves[name] = leaf
      arr = (
        np.asarray(leaf) if isinstance(leaf, (np.ndarray, np.generic, int, float, bool)) else None
      )
      if arr is None or arr.dtype.hasobject:
        self.opaque.add(name)
        arr = np.asarray(0)
      self.tensors.append(TensorInfo(name, arr.shape, arr.dtype))

  def read(self, name: str) -> Any:
    return self._leaves[name]

  def rebuild(self, values: Iterable[Any]) -> Any:
    """The file's tree with its leaves replaced by ``values`` (in ``tensors`` order)."""
    return _rebuild(self.tree, values)


class PickleReader(Reader):
  """A PyTorch file (``torch.save``), loaded with ``weights_only=True``; nested dicts are flattened
  to dotted names, as in a ``state_dict``."""

  format = "pickle"

  def __init__(self, path: str):
    super().__init__(path)
    try:
      import torch
    except ImportError:
      raise CheckpointError(
        f"{path!r}: reading a pickle-based file needs PyTorch (pip install "
        "torch), which restricts what the pickle may build."
      ) from None
    try:
      obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError, EOFError, ...
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise self._error(f"torch.load(weights_only=True) refused or failed: {first}") from None
    self._arrays = {}
    where: dict[str, tuple[Any, ...]] = {}
    for keys, leaf in _walk_any(obj):
      name = ".".join(map(str, keys))
      if name in where:
        raise self._error(
          f"the entries at {_keys_str(where[name])} and {_keys_str(keys)} both have the "
          f"name {name!r}"
        )
      where[name] = keys
      if isinstance(leaf, torch.Tensor):
        try:
          arr = torch_to_numpy(leaf)
        except TypeError as e:
          raise CheckpointError(
            f"{path!r}: tensor {name!r} is {e}, which flipconv does not read; save it as a "
            "dense tensor of a NumPy or ml_dtypes dtype."
          ) from None
      elif isinstance(leaf, (int, float, bool)) and not np.asarray(leaf).dtype.hasobject:
        arr = np.asarray(leaf)  # (an int past 64 bits has no dtype: skipped, below)
      else:
        self.notes.append(f"{name}: a {type(leaf).__name__}, skipped (not a tensor)")
        continue
      self._arrays[name] = arr
      self.tensors.append(TensorInfo(name, arr.shape, arr.dtype))

  def read(self, name: str) -> np.ndarray:
    return self._arrays[name]


def _walk_any(node: Any) -> Iterator[tuple[tuple[Any, ...], Any]]:
  """:func:`_walk` for any mapping, list or tuple (what ``torch.load`` may return)."""
  stack: list[tuple[tuple[Any, ...], Any]] = [((), node)]
  while stack:
    prefix, node = stack.pop()
    if isinstance(node, Mapping):
      stack.extend(((*prefix, k), v) for k, v in reversed(list(node.items())))
    elif isinstance(node, (list, tuple)):
      stack.extend(((*prefix, i), v) for i, v in reversed(list(enumerate(node))))
    else:
      yield prefix, node


_ONNX_PACKED_BITS = {"INT4": 4, "UINT4": 4, "FLOAT4E2M1": 4, "INT2": 2, "UINT2": 2}


class OnnxReader(Reader):
  """An ONNX model's initializers (its weights), each a tensor named as in the graph.

  Needs the ``onnx`` package (``pip install "flipconv[io]"``). Weights stored
  in external data files are read from the model's folder, after checking that
  each one lies inside it, is a regular file and holds exactly the declared
  bytes.
  """

  format = "onnx"

  def __init__(self, path: str):
    super().__init__(path)
    try:
      import onnx
    except ImportError:
      raise CheckpointError(
        f"{path!r}: reading .onnx files needs the onnx package "
        "(pip install onnx, or pip install 'flipconv[io]')."
      ) from None
    try:
      model = onnx.load(path, load_external_data=False)
    except Exception as e:  # protobuf's DecodeError, and whatever onnx raises for a bad model
      raise self._error(_first_line(e)) from None
    self._folder = os.path.dirname(os.path.abspath(path))
    self._protos = {}
    for t in model.graph.initializer:
      name = t.name
      if name in self._protos:
        raise self._error(f"it has two initializers named {name!r}")
      shape = tuple(t.dims)
      if any(d < 0 for d in shape):
        raise self._error(f"initializer {name!r} has the shape {shape}; sizes must be >= 0")
      try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type))
      except Exception:
        dtype = None
      if dtype is None or dtype.hasobject:
        kind = onnx.TensorProto.DataType.Name(t.data_type) if dtype is not None else t.data_type
        raise self._error(f"initializer {name!r} has the data type {kind}, not a number type")
      self._protos[name] = t
      self.tensors.append(TensorInfo(name, shape, dtype))
    self._infos = {info.name: info for info in self.tensors}
    for t in model.graph.sparse_initializer:
      self.notes.append(f"{t.values.name}: a sparse initializer, skipped (not read)")

  def read(self, name: str) -> np.ndarray:
    import onnx
    from onnx import numpy_helper

    proto = self._protos[name]
    if proto.data_location == onnx.TensorProto.EXTERNAL:
      copy = onnx.TensorProto()
      copy.CopyFrom(proto)
      del copy.external_data[:]
      copy.data_location = onnx.TensorProto.DEFAULT
      copy.raw_data = self._external(proto)
      proto = copy
    try:
      arr = numpy_helper.to_array(proto)
    except MemoryError:
      raise CheckpointError(
        f"{self.path!r}: initializer {name!r} does not fit in memory."
      ) from None
    except Exception as e:  # a raw_data of the wrong size, a bad type ...
      raise self._error(f"initializer {name!r} cannot be read ({_first_line(e)})") from None
    info = self._infos[name]
    if arr.shape != info.shape:
      raise self._error(f"initializer {name!r} holds {arr.shape}, not its declared {info.shape}")
    return arr

  def _nbytes(self, proto: Any) -> int:
    """The bytes an initializer's data takes as raw data (4- and 2-bit types are packed)."""
    import onnx

    packed = {getattr(onnx.TensorProto, k, None): b for k, b in _ONNX_PACKED_BITS.items()}
    count = math.prod(proto.dims)
    if proto.data_type in packed:
      return -(-count * packed[proto.data_type] // 8)
    return count * self._infos[proto.name].dtype.itemsize

  def _external(self, proto: Any) -> bytes:
    fields = {e.key: e.value for e in proto.external_data}
    name = proto.name
    location = fields.get("location", "")
    target = os.path.realpath(os.path.join(self._folder, location))
    if (
      not location
      or os.path.isabs(location)
      or os.path.commonpath([target, os.path.realpath(self._folder)])
      != os.path.realpath(self._folder)
    ):
      raise self._error(
        f"initializer {name!r}: its external data {location!r} is not a file inside the "
        "model's folder"
      )
    try:
      offset = int(fields.get("offset", 0))
      length = int(fields["length"]) if "length" in fields else None
    except ValueError:
      raise self._error(f"initializer {name!r}: bad external data offset/length {fields}") from None
    try:
      st = os.stat(target)  # before opening: a FIFO would block the open itself
      if not stat.S_ISREG(st.st_mode):
        raise self._error(f"initializer {name!r}: {location!r} is not a regular file")
      if length is None:
        length = st.st_size - offset
      if offset < 0 or length < 0 or offset + length > st.st_size:
        raise self._error(
          f"initializer {name!r}: bytes {offset}..{offset + length} lie outside "
          f"{location!r} ({st.st_size} bytes)"
        )
      want = self._nbytes(proto)
      if length != want:
        raise self._error(
          f"initializer {name!r}: its external data holds {length} bytes, not the "
          f"{want} its type and shape need"
        )
      with open(target, "rb") as f:
        f.seek(offset)
        data = f.read(length)
    except OSError as e:
      raise self._error(
        f"initializer {name!r}: cannot read its external data {location!r} ({e.strerror or e})"
      ) from None
    if len(data) != length:
      raise self._error(f"initializer {name!r}: {location!r} is cut short")
    return data


_READERS: dict[str, Callable[[str], Reader]] = {
  "npz": NpzReader,
  "safetensors": SafetensorsReader,
  "msgpack": MsgpackReader,
  "pickle": PickleReader,
  "onnx": OnnxReader,
}


def open_checkpoint(path: str | os.PathLike[str], *, allow_pickle: bool = False) -> Reader:
  """Opens a checkpoint for reading; only its header is read here.

  Args:
    path: a ``.npz``, ``.safetensors``, ``.msgpack`` or ``.onnx`` file (a
      pickle-based ``.pt``/``.pth``/``.ckpt``/``.pkl``/``.bin`` only with
      ``allow_pickle``).
    allow_pickle: read pickle-based files with ``torch.load(weights_only=True)``.

  Returns:
    A :class:`Reader` (a context manager).

  Raises:
    CheckpointError: unknown suffix, refused pickle, missing, empty, truncated
      or corrupt file; one line naming the file.

  Examples:
    >>> import os, tempfile, numpy as np
    >>> from flipconv import checkpoints
    >>> path = os.path.join(tempfile.mkdtemp(), "w.npz")
    >>> checkpoints.save(path, {"conv.weight": np.zeros((4, 3, 2, 2), np.float32)})
    >>> with checkpoints.open_checkpoint(path) as ckpt:
    ...   print(ckpt.tensors[0])
    TensorInfo(name='conv.weight', shape=(4, 3, 2, 2), dtype=dtype('float32'))
  """
  path = os.fspath(path)
  fmt = file_format(path, allow_pickle=allow_pickle, role="input")
  check_regular_file(path)
  try:
    return _READERS[fmt](path)
  except OSError as e:
    raise CheckpointError(f"{path!r}: cannot read it ({e.strerror or e}).") from None
  except RecursionError:  # a reader's library recursing through a deeply nested file
    raise CheckpointError(f"{path!r}: it is nested too deeply to read.") from None
  except MemoryError:
    raise CheckpointError(f"{path!r}: it does not fit in memory.") from None


def check_regular_file(path: str) -> None:
  """Refuses what is not a regular file (a FIFO would block, ``/dev/zero`` never ends).

  Raises:
    CheckpointError: ``path`` is missing, a directory, or not a regular file.
  """
  try:
    mode = os.stat(path).st_mode
  except FileNotFoundError:
    raise CheckpointError(f"{path!r}: no such file.") from None
  except OSError as e:
    raise CheckpointError(f"{path!r}: cannot read it ({e.strerror or e}).") from None
  if stat.S_ISDIR(mode):
    raise CheckpointError(f"{path!r} is a directory, not a checkpoint file.")
  if not stat.S_ISREG(mode):
    raise CheckpointError(
      f"{path!r} is not a regular file (a FIFO, socket or device); flipconv reads files only."
    )


# ---------------------------------------------------------------------------
# Writers


class Terminated(SystemExit):
  """SIGTERM arrived while flipconv held a handler for it (exit status 143, as a kill gives)."""

  def __init__(self) -> None:
    super().__init__(128 + signal.SIGTERM)


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
  """Within the block, SIGTERM raises :class:`Terminated` instead of killing the process.

  So ``finally`` and ``except BaseException`` blocks run (a temporary file is
  removed), as they do for Ctrl-C. Only in the main thread and only where
  SIGTERM has its default action; otherwise a no-op.
  """
  if (
    threading.current_thread() is not threading.main_thread()
    or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
  ):
    yield
    return

  def handler(signum: int, frame: Any) -> None:
    raise Terminated

  signal.signal(signal.SIGTERM, handler)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], *, replace: bool = True) -> Iterator[BinaryIO]:
  """A binary file that becomes ``path`` only once it is completely written.

  Data goes to a temporary file in the same folder, which is flushed and
  fsync'ed, then published as ``path`` and the folder fsync'ed. With
  ``replace``, publishing is ``os.replace`` (atomic on POSIX and Windows);
  without, it is a hard link, which fails if ``path`` exists, however late
  another process created it (on file systems without hard links: an exclusive
  create, then the rename). A process killed at any moment leaves either the
  old ``path`` or the new one, never a partial file (a stray
  ``.<name>.*.partial`` may remain after a SIGKILL); an exception, Ctrl-C or
  SIGTERM removes the temporary file and leaves ``path`` as it was. Errors
  name ``path`` as given, never the temporary file.

  Args:
    path: the file to write.
    replace: replace an existing ``path``; if False, an existing ``path`` is an
      error, checked atomically when the file is published.

  Raises:
    CheckpointError: ``path`` is a directory, its folder cannot be written, the
      disk is full, or (``replace=False``) ``path`` exists.

  Examples:
    >>> import os, tempfile
    >>> from flipconv.checkpoints import atomic_write
    >>> path = os.path.join(tempfile.mkdtemp(), "out.bin")
    >>> with atomic_write(path) as f:
    ...   _ = f.write(b"all or nothing")
    >>> open(path, "rb").read()
    b'all or nothing'
  """
  user = os.fspath(path)
  path = os.path.abspath(user)
  folder, base = os.path.split(path)
  if os.path.isdir(path):
    raise CheckpointError(f"{user!r} is a directory; give the output a file name.")
  try:
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".partial", dir=folder)
  except OSError as e:
    raise CheckpointError(
      f"{user!r}: cannot create a file in {folder!r} ({e.strerror or e})."
    ) from None
  try:
    with sigterm_raises():
      try:
        with os.fdopen(fd, "wb") as f:
          yield f
          f.flush()
          os.fsync(f.fileno())
        os.chmod(tmp, _file_mode(path))
      except OSError as e:  # ENOSPC, EIO, EDQUOT ... while writing the temporary file
        raise CheckpointError(f"{user!r}: cannot write it ({e.strerror or e}).") from None
      _publish(tmp, path, user, replace)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise
  if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
    dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
      os.fsync(dfd)
    finally:
      os.close(dfd)


def _exists(user: str) -> CheckpointError:
  return CheckpointError(f"{user!r} exists; pass --force (force=True) to replace it.")


def _publish(tmp: str, path: str, user: str, replace: bool) -> None:
  """Makes ``tmp`` the file ``path``: replacing it, or only if it does not exist."""
  try:
    if replace:
      os.replace(tmp, path)
      return
    try:
      os.link(tmp, path)  # fails with EEXIST, atomically, if path exists
    except FileExistsError:
      raise _exists(user) from None
    except OSError:  # no hard links here (FAT, some network file systems): reserve the name
      try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
      except FileExistsError:
        raise _exists(user) from None
      os.replace(tmp, path)
    else:
      os.unlink(tmp)
  except IsADirectoryError:
    raise CheckpointError(f"{user!r} is a directory; give the output a file name.") from None
  except OSError as e:
    raise CheckpointError(f"{user!r}: cannot write it ({e.strerror or e}).") from None


def _file_mode(path: str) -> int:
  """The mode a new file gets (umask applied), or the replaced file's mode."""
  try:
    return os.stat(path).st_mode & 0o7777
  except FileNotFoundError:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _le(arr: np.ndarray) -> np.ndarray:
  """C-contiguous and little-endian, as both file formats store data."""
  if arr.dtype.byteorder == ">":
    arr = arr.astype(arr.dtype.newbyteorder("<"))
  return arr if arr.flags.c_contiguous else arr.copy(order="C")  # keeps 0-d arrays 0-d


def _check(info: TensorInfo, arr: np.ndarray, path: str) -> None:
  native = lambda d: d.newbyteorder("=") if d.byteorder in "<>" else d
  if tuple(arr.shape) != tuple(info.shape) or native(arr.dtype) != native(info.dtype):
    raise CheckpointError(
      f"{path!r}: tensor {info.name!r} was announced as {info.dtype} "
      f"{info.shape} but is {arr.dtype} {arr.shape}."
    )


def _pairs(
  infos: Sequence[TensorInfo], arrays: Iterable[Any], path: str
) -> Iterator[tuple[TensorInfo, Any]]:
  """``zip(infos, arrays, strict=True)`` that holds no reference to the previous array
  while it asks for the next one (zip's reused result tuple would, keeping three alive)."""
  it = iter(arrays)
  for info in infos:
    try:
      arr = next(it)
    except StopIteration:
      raise CheckpointError(
        f"{path!r}: tensor {info.name!r} was announced but never given."
      ) from None
    yield info, arr
    del arr
  if next(it, None) is not None:
    raise CheckpointError(f"{path!r}: more tensors given than announced.")


def _write_safetensors(
  f: BinaryIO,
  path: str,
  infos: Sequence[TensorInfo],
  arrays: Iterable[Any],
  metadata: Mapping[str, str],
  on_bytes: Callable[[int], None],
) -> None:
  header: dict[str, Any] = {}
  if metadata:
    header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
  pos = 0
  for info in infos:
    if info.name == "__metadata__":  # the header key safetensors reserves for metadata
      raise CheckpointError(
        f"{path!r}: a tensor named '__metadata__' cannot be stored in safetensors; rename it."
      )
    dtype = info.dtype.newbyteorder("=") if info.dtype.byteorder == ">" else info.dtype
    if dtype not in _ST_NAMES:
      raise CheckpointError(
        f"{path!r}: tensor {info.name!r} has dtype {info.dtype}, which "
        f"safetensors cannot store ({', '.join(_ST_DTYPES)})."
      )
    header[info.name] = {
      "dtype": _ST_NAMES[dtype],
      "shape": list(info.shape),
      "data_offsets": [pos, pos + info.nbytes],
    }
    pos += info.nbytes
  raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
  raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
  f.write(struct.pack("<Q", len(raw)))
  f.write(raw)
  for info, arr in _pairs(infos, arrays, path):
    arr = _le(np.asarray(arr))
    _check(info, arr, path)
    f.write(memoryview(arr.reshape(-1).view(np.uint8)))
    del arr  # before the next tensor is made: at most two are alive
    on_bytes(info.nbytes)


def _write_npz(
  f: BinaryIO,
  path: str,
  infos: Sequence[TensorInfo],
  arrays: Iterable[Any],
  compress: bool,
  on_bytes: Callable[[int], None],
) -> None:
  # What np.savez does, one member at a time; the data is written from the array's
  # own buffer (np.lib.format.write_array would copy it to bytes first).
  fmt = np.lib.format
  method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
  with zipfile.ZipFile(f, "w", compression=method, allowZip64=True) as zf:
    for info, arr in _pairs(infos, arrays, path):
      arr = _le(np.asarray(arr))
      _check(info, arr, path)
      if arr.dtype.hasobject:
        raise CheckpointError(f"{path!r}: tensor {info.name!r} holds Python objects.")
      with zf.open(info.name + ".npy", "w", force_zip64=True) as member:
        header = fmt.header_data_from_array_1_0(arr)
        if arr.dtype.type.__module__ == "ml_dtypes":
          # NumPy names some of these ('<f1' for float8_e5m2, '<c4' for complex32) with
          # descriptors it cannot read back; raw bytes keep the bits readable.
          header["descr"] = f"|V{arr.dtype.itemsize}"
        try:
          fmt.write_array_header_1_0(member, header)
        except ValueError:  # a header over 64 kB (huge structured dtypes)
          fmt.write_array_header_2_0(member, header)
        member.write(memoryview(arr.reshape(-1).view(np.uint8)))
      del arr
      on_bytes(info.nbytes)


def _msgpack_leaf(info: TensorInfo, leaf: Any, path: str) -> Any:
  """A leaf as Flax's msgpack stores it and reads it back: arrays in native byte order
  (msgpack keeps the bytes and the dtype's name, not its byte order), and only dtypes
  whose name NumPy reads back (not strings, bytes, void or structured arrays)."""
  if not isinstance(leaf, (np.ndarray, np.generic)):
    return leaf
  arr = np.asarray(leaf)
  if arr.dtype.byteorder not in "=|":
    arr = arr.astype(arr.dtype.newbyteorder("="))
  try:
    back = np.dtype(ml_dtypes.bfloat16 if arr.dtype.name == "bfloat16" else arr.dtype.name)
  except TypeError:
    back = None
  if arr.dtype.hasobject or back != arr.dtype:
    raise CheckpointError(
      f"{path!r}: tensor {info.name!r} has dtype {arr.dtype}, which a Flax .msgpack cannot "
      "store so that it reads back; write .npz instead."
    )
  return arr


def _write_msgpack(
  f: BinaryIO,
  path: str,
  infos: Sequence[TensorInfo],
  arrays: Iterable[Any],
  rebuild: Callable[[list[Any]], Any] | None,
  on_bytes: Callable[[int], None],
) -> None:
  from flax import serialization

  values = [_msgpack_leaf(info, leaf, path) for info, leaf in _pairs(infos, arrays, path)]
  tree = rebuild(values) if rebuild else unflatten([i.name for i in infos], values)
  on_bytes(sum(i.nbytes for i in infos))
  try:
    data = serialization.msgpack_serialize(tree)
  except RecursionError:
    raise CheckpointError(f"{path!r}: the tree is nested too deeply to write as msgpack.") from None
  except Exception as e:  # msgpack's depth limit (ValueError), an int past 64 bits ...
    raise CheckpointError(f"{path!r}: cannot write it as msgpack ({_first_line(e)}).") from None
  f.write(data)


def _unique_names(infos: Sequence[TensorInfo], path: str) -> None:
  seen: set[str] = set()
  for info in infos:
    if info.name in seen:
      raise CheckpointError(
        f"{path!r}: two tensors are named {info.name!r}; a file holds one tensor per name."
      )
    seen.add(info.name)


def write_checkpoint(
  path: str | os.PathLike[str],
  infos: Sequence[TensorInfo],
  arrays: Iterable[Any],
  *,
  metadata: Mapping[str, str] | None = None,
  compress: bool = False,
  rebuild: Callable[[list[Any]], Any] | None = None,
  on_bytes: Callable[[int], None] | None = None,
  replace: bool = True,
) -> None:
  """Writes a checkpoint atomically, one tensor at a time, in the order of ``infos``.

  Args:
    path: the output; its suffix (``.npz``, ``.safetensors``, ``.msgpack``)
      picks the format.
    infos: name, shape and dtype of every tensor (safetensors writes its
      header before any data).
    arrays: the tensors, in the order of ``infos``; consumed lazily, so a
      generator keeps only one tensor alive at a time.
    metadata: safetensors ``__metadata__`` (other formats have none).
    compress: ``.npz`` members deflated, as ``np.savez_compressed``.
    rebuild: ``.msgpack``: builds the tree from the list of values (e.g.
      :meth:`MsgpackReader.rebuild`); default: nested dicts from the names
      split at ``"/"``.
    on_bytes: called with the byte count of each tensor written (progress).
    replace: replace an existing ``path``; if False, an existing ``path`` is an
      error, checked atomically when the file is published (:func:`atomic_write`).

  Raises:
    CheckpointError: an unsupported suffix or dtype, two tensors of the same
      name (or, ``.msgpack``, names that nest onto each other), or a tensor that
      is not what ``infos`` announced.
  """
  path = os.fspath(path)
  fmt = file_format(path, role="output")
  _unique_names(infos, path)
  on_bytes = on_bytes or (lambda n: None)
  with atomic_write(path, replace=replace) as f:
    if fmt == "safetensors":
      _write_safetensors(f, path, infos, arrays, metadata or {}, on_bytes)
    elif fmt == "npz":
      _write_npz(f, path, infos, arrays, compress, on_bytes)
    else:
      _write_msgpack(f, path, infos, arrays, rebuild, on_bytes)


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
      raise _exists(dst_path)  # checked again, atomically, when the file is published


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
  leaves = list(_walk(variables))
  infos = [
    TensorInfo("/".join(map(str, keys)), np.shape(v), np.asarray(v).dtype) for keys, v in leaves
  ]
  write_checkpoint(
    dst_path,
    infos,
    (v for _, v in leaves),
    rebuild=lambda values: _rebuild(variables, values),
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
  from flipconv.convert import permute_numpy
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
        if sel is not None and sel.change.changed:
          yield permute_numpy(reader.read(t.name), sel.plan)
        else:
          yield reader.read(t.name)

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
