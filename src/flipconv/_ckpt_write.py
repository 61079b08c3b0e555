"""Writing checkpoint files tensor by tensor, atomically, never over a file unasked."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, BinaryIO

import ml_dtypes
import numpy as np

from flipconv._ckpt_read import (
  ST_DTYPES,
  ST_NAMES,
  CheckpointError,
  TensorInfo,
  file_format,
  first_line,
  unflatten,
)


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


def exists_error(user: str) -> CheckpointError:
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
      raise exists_error(user) from None
    except OSError:  # no hard links here (FAT, some network file systems): reserve the name
      try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
      except FileExistsError:
        raise exists_error(user) from None
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
    if dtype not in ST_NAMES:
      raise CheckpointError(
        f"{path!r}: tensor {info.name!r} has dtype {info.dtype}, which "
        f"safetensors cannot store ({', '.join(ST_DTYPES)})."
      )
    header[info.name] = {
      "dtype": ST_NAMES[dtype],
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
    raise CheckpointError(f"{path!r}: cannot write it as msgpack ({first_line(e)}).") from None
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
