"""Reading checkpoint files tensor by tensor, each header checked before any data."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import stat
import struct
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import ml_dtypes
import numpy as np

from flipconv._trees import torch_to_numpy

FORMATS = {".npz": "npz", ".safetensors": "safetensors", ".msgpack": "msgpack"}
INPUT_FORMATS = {**FORMATS, ".onnx": "onnx"}  # read, never written
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")

# safetensors dtype names (https://github.com/huggingface/safetensors, README "Format").
ST_DTYPES = {
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
ST_NAMES = {v: k for k, v in ST_DTYPES.items()}
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
      raise self._error(f"its header is not JSON ({first_line(e)})") from None
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
        and e["dtype"] in ST_DTYPES
        and isinstance(e.get("shape"), list)
        and all(_count(s) for s in e["shape"])
        and isinstance(e.get("data_offsets"), list)
        and len(e["data_offsets"]) == 2
        and all(_count(o) for o in e["data_offsets"])
      ):
        raise self._error(
          f"tensor {name!r} has a bad entry {_short(json.dumps(e))} (expected a dtype of "
          f"{', '.join(ST_DTYPES)}, a shape and two data_offsets, all non-negative integers)"
        )
      info = TensorInfo(name, tuple(e["shape"]), ST_DTYPES[e["dtype"]])
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


def first_line(e: BaseException) -> str:
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
      raise self._error(f"it is not a readable .npz (zip) archive ({first_line(e)})") from None
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
          f"member {member.filename!r} has no valid .npy header ({first_line(e)})"
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
      raise self._error(f"array {name!r} cannot be read ({first_line(e)})") from None

  def close(self) -> None:
    self._zip.close()


def walk_tree(node: Any) -> Iterator[tuple[tuple[Any, ...], Any]]:
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


def rebuild_tree(tree: Any, values: Iterable[Any]) -> Any:
  """``tree`` with its leaves (in :func:`walk_tree` order) replaced by ``values``; iterative."""
  values = iter(values)
  items = lambda node: iter(node.items() if isinstance(node, dict) else enumerate(node))
  if not isinstance(tree, (dict, list)):
    return next(values)
  root: Any = {} if isinstance(tree, dict) else []
  stack = [(items(tree), root)]  # depth first, children in order: the order walk_tree yields
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
      raise self._error(first_line(e)) from None
    if not isinstance(self.tree, dict):
      raise self._error(f"it holds a {type(self.tree).__name__}, not a dict of arrays")
    self._leaves = {}
    where: dict[str, tuple[Any, ...]] = {}
    for keys, leaf in walk_tree(self.tree):
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
    return rebuild_tree(self.tree, values)


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
      raise self._error(
        f"torch.load(weights_only=True) refused or failed: {first_line(e)}"
      ) from None
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
  """:func:`walk_tree` for any mapping, list or tuple (what ``torch.load`` may return)."""
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
      raise self._error(first_line(e)) from None
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
      raise self._error(f"initializer {name!r} cannot be read ({first_line(e)})") from None
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
