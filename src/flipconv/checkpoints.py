"""Checkpoint files: read and write ``.npz``, ``.safetensors`` and Flax ``.msgpack``.

Files are read tensor by tensor (``.npz`` and ``.safetensors``: nothing but
the header is read up front) and written tensor by tensor, so that converting
a checkpoint needs memory for about two copies of its largest tensor, not of
the whole file (``.msgpack`` is one MessagePack document: it is read and
written whole). Every write is atomic (:func:`atomic_write`). Pickle-based
files are refused unless asked for, and then read with PyTorch's
``weights_only=True`` loader.

A file that cannot be read raises :class:`CheckpointError`, whose message is
one line that names the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import struct
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, BinaryIO

import ml_dtypes
import numpy as np

FORMATS = {".npz": "npz", ".safetensors": "safetensors", ".msgpack": "msgpack"}
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
  """The format of ``path`` from its suffix: npz, safetensors, msgpack or pickle.

  Raises:
    CheckpointError: an unknown suffix, or a pickle-based file without ``allow_pickle``.
  """
  path = os.fspath(path)
  suffix = os.path.splitext(path)[1].lower()
  if suffix in FORMATS:
    return FORMATS[suffix]
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
    f"supported: {', '.join(FORMATS)}"
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


class SafetensorsReader(Reader):
  """Reads the header once, then each tensor with one ``readinto``.

  Reads go through plain file reads rather than ``safetensors.safe_open``: it
  memory-maps the whole file, so the pages it touches stay resident (the RSS
  of a streaming conversion grows to the file's size), and it lists tensors
  sorted by name rather than in file order.
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
    try:
      header = json.loads(self._file.read(n).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise self._error(f"its header is not JSON ({e})") from None
    if not isinstance(header, dict):
      raise self._error("its header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
      raise self._error("__metadata__ must map strings to strings")
    self.metadata = dict(meta)
    self._start = 8 + n
    entries = []
    for name, e in header.items():
      try:
        dtype = _ST_DTYPES[e["dtype"]]
        shape = tuple(int(s) for s in e["shape"])
        begin, end = (int(o) for o in e["data_offsets"])
      except (KeyError, TypeError, ValueError):
        raise self._error(f"tensor {name!r} has a bad entry {e!r}") from None
      info = TensorInfo(name, shape, dtype)
      if min(shape, default=0) < 0 or end - begin != info.nbytes or begin < 0:
        raise self._error(
          f"tensor {name!r}: offsets {begin}..{end} do not fit {e['dtype']} {list(shape)}"
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
    out = np.empty(info.shape, info.dtype)
    if info.nbytes:
      self._file.seek(self._start + self._offsets[name])
      got = self._file.readinto(memoryview(out.reshape(-1).view(np.uint8)))
      if got != info.nbytes:
        raise self._error(f"tensor {name!r} is cut short ({got} of {info.nbytes} bytes)")
    return out

  def close(self) -> None:
    self._file.close()


class NpzReader(Reader):
  """Reads member headers up front and each array when asked (decompressing as it goes)."""

  format = "npz"

  def __init__(self, path: str):
    super().__init__(path)
    try:
      self._zip = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, OSError) as e:
      raise self._error(f"it is not a readable zip archive ({e})") from None
    try:
      self._parse()
    except BaseException:
      self._zip.close()
      raise

  def _parse(self) -> None:
    self._members = {}
    for member in self._zip.infolist():
      if member.is_dir():
        continue
      if not member.filename.endswith(".npy"):
        raise self._error(f"member {member.filename!r} is not a .npy array")
      name = member.filename[: -len(".npy")]
      self.compressed |= member.compress_type != zipfile.ZIP_STORED
      try:
        with self._zip.open(member) as f:
          version = np.lib.format.read_magic(f)
          shape, _, dtype = (
            np.lib.format.read_array_header_1_0(f)
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0(f)
          )
      except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise self._error(f"member {member.filename!r} has no valid .npy header ({e})") from None
      if dtype.hasobject:
        raise self._error(
          f"array {name!r} holds Python objects, which only pickle can read; "
          "flipconv reads numeric arrays only"
        )
      self._members[name] = member
      self.tensors.append(TensorInfo(name, tuple(shape), dtype))

  def read(self, name: str) -> np.ndarray:
    try:
      with self._zip.open(self._members[name]) as f:
        return np.lib.format.read_array(f, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
      raise self._error(f"array {name!r} cannot be read ({e})") from None

  def close(self) -> None:
    self._zip.close()


def _walk(node: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
  """Leaves of nested dicts and lists, in their order (the structure msgpack restores)."""
  if isinstance(node, dict):
    for k, v in node.items():
      yield from _walk(v, (*prefix, str(k)))
  elif isinstance(node, list):
    for i, v in enumerate(node):
      yield from _walk(v, (*prefix, str(i)))
  else:
    yield prefix, node


def _rebuild(node: Any, values: Iterator[Any]) -> Any:
  """``node`` with its leaves (in :func:`_walk` order) replaced by ``values``."""
  if isinstance(node, dict):
    return {k: _rebuild(v, values) for k, v in node.items()}
  if isinstance(node, list):
    return [_rebuild(v, values) for v in node]
  return next(values)


def unflatten(names: Sequence[str], values: Iterable[Any]) -> dict[str, Any]:
  """Nested dicts from ``"/"``-joined names: ``{"a/b": x}`` -> ``{"a": {"b": x}}``."""
  tree: dict[str, Any] = {}
  for name, value in zip(names, values, strict=True):
    *heads, last = name.split("/")
    node = tree
    for h in heads:
      node = node.setdefault(h, {})
      if not isinstance(node, dict):
        raise CheckpointError(f"cannot nest {name!r}: {h!r} is both a tensor and a group.")
    node[last] = value
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
      raise self._error(f"{type(e).__name__}: {e}") from None
    if not isinstance(self.tree, dict):
      raise self._error(f"it holds a {type(self.tree).__name__}, not a dict of arrays")
    self._leaves = {}
    for parts, leaf in _walk(self.tree):
      name = "/".join(parts)
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
    return _rebuild(self.tree, iter(values))


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
    for parts, leaf in _walk_any(obj):
      name = ".".join(parts)
      if isinstance(leaf, torch.Tensor):
        arr = _torch_to_numpy(leaf)
      elif isinstance(leaf, (int, float, bool)) and not isinstance(leaf, str):
        arr = np.asarray(leaf)
      else:
        self.notes.append(f"{name}: a {type(leaf).__name__}, skipped (not a tensor)")
        continue
      self._arrays[name] = arr
      self.tensors.append(TensorInfo(name, arr.shape, arr.dtype))

  def read(self, name: str) -> np.ndarray:
    return self._arrays[name]


def _walk_any(node: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
  if isinstance(node, Mapping):
    for k, v in node.items():
      yield from _walk_any(v, (*prefix, str(k)))
  elif isinstance(node, (list, tuple)):
    for i, v in enumerate(node):
      yield from _walk_any(v, (*prefix, str(i)))
  else:
    yield prefix, node


def _torch_to_numpy(t: Any) -> np.ndarray:
  import torch

  t = t.detach().cpu().contiguous()
  if t.dtype == torch.bfloat16:  # NumPy has no bfloat16; ml_dtypes does, bit for bit
    return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
  return t.numpy()


_READERS: dict[str, Callable[[str], Reader]] = {
  "npz": NpzReader,
  "safetensors": SafetensorsReader,
  "msgpack": MsgpackReader,
  "pickle": PickleReader,
}


def open_checkpoint(path: str | os.PathLike[str], *, allow_pickle: bool = False) -> Reader:
  """Opens a checkpoint for reading; only its header is read here.

  Args:
    path: a ``.npz``, ``.safetensors`` or ``.msgpack`` file (a pickle-based
      ``.pt``/``.pth``/``.ckpt``/``.pkl``/``.bin`` only with ``allow_pickle``).
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
  if not os.path.exists(path):
    raise CheckpointError(f"{path!r}: no such file.")
  if os.path.isdir(path):
    raise CheckpointError(f"{path!r} is a directory, not a checkpoint file.")
  try:
    return _READERS[fmt](path)
  except OSError as e:
    raise CheckpointError(f"{path!r}: cannot read it ({e.strerror or e}).") from None


# ---------------------------------------------------------------------------
# Writers


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
  """A binary file that becomes ``path`` only once it is completely written.

  Data goes to a temporary file in the same folder, which is flushed,
  fsync'ed and renamed over ``path`` (``os.replace``, atomic on POSIX and
  Windows), then the folder is fsync'ed. A process killed at any moment leaves
  either the old ``path`` or the new one, never a partial file (a stray
  ``.<name>.*.partial`` may remain after a kill); an exception removes the
  temporary file and leaves ``path`` as it was.

  Examples:
    >>> import os, tempfile
    >>> from flipconv.checkpoints import atomic_write
    >>> path = os.path.join(tempfile.mkdtemp(), "out.bin")
    >>> with atomic_write(path) as f:
    ...   _ = f.write(b"all or nothing")
    >>> open(path, "rb").read()
    b'all or nothing'
  """
  path = os.path.abspath(os.fspath(path))
  folder, base = os.path.split(path)
  try:
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".partial", dir=folder)
  except OSError as e:
    raise CheckpointError(
      f"{path!r}: cannot create a file in {folder!r} ({e.strerror or e})."
    ) from None
  try:
    with os.fdopen(fd, "wb") as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, _file_mode(path))
    os.replace(tmp, path)
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
        try:
          fmt.write_array_header_1_0(member, header)
        except ValueError:  # a header over 64 kB (huge structured dtypes)
          fmt.write_array_header_2_0(member, header)
        member.write(memoryview(arr.reshape(-1).view(np.uint8)))
      del arr
      on_bytes(info.nbytes)


def _write_msgpack(
  f: BinaryIO,
  infos: Sequence[TensorInfo],
  arrays: Iterable[Any],
  rebuild: Callable[[list[Any]], Any] | None,
  on_bytes: Callable[[int], None],
) -> None:
  from flax import serialization

  values = list(arrays)
  tree = rebuild(values) if rebuild else unflatten([i.name for i in infos], values)
  on_bytes(sum(i.nbytes for i in infos))
  f.write(serialization.msgpack_serialize(tree))


def write_checkpoint(
  path: str | os.PathLike[str],
  infos: Sequence[TensorInfo],
  arrays: Iterable[Any],
  *,
  metadata: Mapping[str, str] | None = None,
  compress: bool = False,
  rebuild: Callable[[list[Any]], Any] | None = None,
  on_bytes: Callable[[int], None] | None = None,
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

  Raises:
    CheckpointError: an unsupported suffix or dtype, or a tensor that is not
      what ``infos`` announced.
  """
  path = os.fspath(path)
  fmt = file_format(path, role="output")
  on_bytes = on_bytes or (lambda n: None)
  with atomic_write(path) as f:
    if fmt == "safetensors":
      _write_safetensors(f, path, infos, arrays, metadata or {}, on_bytes)
    elif fmt == "npz":
      _write_npz(f, path, infos, arrays, compress, on_bytes)
    else:
      _write_msgpack(f, infos, arrays, rebuild, on_bytes)


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
    ``({name: Selected}, plan, unclassified)``, the plan in file order.
  """
  from flipconv.params import Plan, select_leaves

  specs = {t.name: _Spec(t.shape, t.dtype) for t in reader.tensors if t.name not in reader.opaque}
  _, _, selected, unclassified = select_leaves(specs, src, dst, select, where=where)
  by_name = {sel.keypath[0].key: sel for sel in selected}
  plan = Plan(by_name[t.name].change for t in reader.tensors if t.name in by_name)
  return by_name, plan, unclassified


def _nested(names: Sequence[str]) -> Callable[[list[Any]], Any]:
  """A msgpack ``rebuild`` that nests the names as Flax modules take them."""
  from flipconv.nesting import nest_params

  def rebuild(values: list[Any]) -> Any:
    return nest_params(dict(zip((n.replace("/", ".") for n in names), values, strict=True)))

  return rebuild


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
    nest: ``.msgpack`` output only: write the nested dicts a Flax module takes,
      the names split at ``.`` and ``/`` and ``weight`` renamed ``kernel``
      (:func:`flipconv.nest_params`), so that ``flax.serialization`` restores
      ``{"conv1": {"kernel": ..., "bias": ...}}``.

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
    conv/weight  conv  (8, 3, 5, 5)  ->  (5, 5, 3, 8)  OIHW -> HWIO: transpose (2, 3, 1, 0)
    1 selected: 1 converted (0 flipped), 0 unchanged.
    >>> np.load(dst)["conv.weight"].shape
    (5, 5, 3, 8)
  """
  from flipconv.params import permute_numpy
  from flipconv.registry import get_convention

  src_path, dst_path = os.fspath(src_path), os.fspath(dst_path)
  src_c, dst_c = get_convention(src), get_convention(dst)
  dst_format = file_format(dst_path, role="output")
  if nest and dst_format != "msgpack":
    raise CheckpointError(
      f"--nest (nest=True) writes nested Flax params, which only .msgpack holds; "
      f"{dst_path!r} is {dst_format}."
    )
  if os.path.exists(dst_path):
    if os.path.exists(src_path) and os.path.samefile(src_path, dst_path):
      raise CheckpointError(
        f"{dst_path!r} is the input file; write the output to a new file "
        "(the input is never modified)."
      )
    if not force and not dry_run:
      raise CheckpointError(f"{dst_path!r} exists; pass --force (force=True) to replace it.")
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
      )
  return result
