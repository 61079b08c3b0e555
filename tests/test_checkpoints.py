"""Checkpoint files: formats against their reference libraries, bad files, atomic writes.

Every file flipconv writes is read back with the format's own library
(``safetensors.numpy``, ``np.load``, ``flax.serialization``), and every file
those libraries write is read by flipconv; converted kernels are compared with
permutations written out by hand.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import zipfile

import ml_dtypes
import numpy as np
import pytest

from flipconv import checkpoints as ck

TORCH_TO_FLAX = (2, 3, 1, 0)


def rand(shape, seed=0, dtype=np.float32):
  return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def state():
  """PyTorch-named tensors, deliberately not in sorted order, several dtypes."""
  return {
    "features.conv.weight": rand((6, 3, 3, 3), 1),
    "features.conv.bias": rand((6,), 2),
    "bn.num_batches_tracked": np.array(5, np.int64),
    "decoder.deconv.weight": rand((6, 2, 2, 2), 3).astype(ml_dtypes.bfloat16),
    "classifier.weight": rand((4, 6), 4).astype(np.float16),
    "classifier.bias": rand((4,), 5, np.float64),
  }


def assert_same(a, b):
  assert a.dtype == b.dtype and a.shape == b.shape
  np.testing.assert_array_equal(a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8))


def digest(path):
  with open(path, "rb") as f:
    return f.read()


# ---------------------------------------------------------------------------
# Formats against their libraries


def test_safetensors_written_is_read_by_the_safetensors_library(tmp_path):
  st = pytest.importorskip("safetensors.numpy")
  from safetensors import safe_open

  path = tmp_path / "w.safetensors"
  ck.save(path, state(), metadata={"format": "pt", "note": "ümlaut"})
  loaded = st.load_file(str(path))
  assert set(loaded) == set(state())
  for k, v in state().items():
    assert_same(loaded[k], v)
  with safe_open(str(path), "numpy") as f:
    assert f.metadata() == {"format": "pt", "note": "ümlaut"}
  # Tensors are stored in the order given: the header lists them so.
  (n,) = struct.unpack("<Q", digest(path)[:8])
  header = json.loads(digest(path)[8 : 8 + n])
  assert [k for k in header if k != "__metadata__"] == list(state())


def test_safetensors_library_files_are_read_in_file_order(tmp_path):
  st = pytest.importorskip("safetensors.numpy")
  path = tmp_path / "lib.safetensors"
  st.save_file(state(), str(path), metadata={"format": "pt"})
  with ck.open_checkpoint(path) as r:
    assert r.metadata == {"format": "pt"}
    names = [t.name for t in r.tensors]
    offsets = json.loads(digest(path)[8 : 8 + struct.unpack("<Q", digest(path)[:8])[0]])
    assert names == sorted(names, key=lambda k: offsets[k]["data_offsets"][0])
    for name in names:
      assert_same(r.read(name), state()[name])


def test_npz_round_trips_with_numpy_and_keeps_compression(tmp_path):
  plain = {k: v for k, v in state().items() if v.dtype.type.__module__ != "ml_dtypes"}
  np.savez_compressed(tmp_path / "lib.npz", **plain)
  with ck.open_checkpoint(tmp_path / "lib.npz") as r:
    assert [t.name for t in r.tensors] == list(plain) and r.compressed
    for name, v in plain.items():
      assert_same(r.read(name), v)
  ck.convert_file(tmp_path / "lib.npz", tmp_path / "out.npz", "pytorch", "flax")
  with zipfile.ZipFile(tmp_path / "out.npz") as z:
    assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_DEFLATED}
  out = np.load(tmp_path / "out.npz")
  assert list(out.keys()) == list(plain)
  np.testing.assert_array_equal(
    out["features.conv.weight"], plain["features.conv.weight"].transpose(TORCH_TO_FLAX)
  )
  np.testing.assert_array_equal(out["classifier.weight"], plain["classifier.weight"].T)
  assert_same(out["bn.num_batches_tracked"], plain["bn.num_batches_tracked"])


def test_msgpack_round_trips_with_flax_serialization(tmp_path):
  from flax import serialization

  tree = {
    "params": {
      "Conv_0": {"kernel": rand((3, 3, 2, 4), 1), "bias": rand((4,), 2)},
      "ConvTranspose_0": {"kernel": rand((2, 2, 4, 2), 3)},
      "Dense_0": {"kernel": rand((4, 5), 4).astype(ml_dtypes.bfloat16)},
    },
    "step": np.int32(12),
    "tag": "run-7",
    "history": [np.ones(2), 0.5],
  }
  src = tmp_path / "flax.msgpack"
  src.write_bytes(serialization.msgpack_serialize(tree))
  with ck.open_checkpoint(src) as r:
    assert "params/Conv_0/kernel" in [t.name for t in r.tensors]
  ck.convert_file(src, tmp_path / "torch.msgpack", "flax", "pytorch")
  out = serialization.msgpack_restore((tmp_path / "torch.msgpack").read_bytes())
  assert out["step"] == np.int32(12) and out["tag"] == "run-7"
  assert isinstance(out["history"], list) and out["history"][1] == 0.5
  p = out["params"]
  np.testing.assert_array_equal(
    p["Conv_0"]["kernel"], tree["params"]["Conv_0"]["kernel"].transpose(3, 2, 0, 1)
  )
  np.testing.assert_array_equal(  # Flax ConvTranspose HWOI (flipped) -> PyTorch OIHW
    p["ConvTranspose_0"]["kernel"],
    tree["params"]["ConvTranspose_0"]["kernel"][::-1, ::-1].transpose(2, 3, 0, 1),
  )
  assert p["Dense_0"]["kernel"].dtype == ml_dtypes.bfloat16
  to_npz = ck.convert_file(src, tmp_path / "flat.npz", "flax", "pytorch")
  assert any(n.startswith("tag: not a tensor") for n in to_npz.notes)
  assert "tag" not in np.load(tmp_path / "flat.npz") and "step" in np.load(tmp_path / "flat.npz")
  assert_same(p["Dense_0"]["kernel"], np.ascontiguousarray(tree["params"]["Dense_0"]["kernel"].T))
  # The file's order is kept (flax's serializer sorts the keys it writes).
  assert list(p) == list(serialization.msgpack_restore(src.read_bytes())["params"])


def test_conversion_chain_through_every_format_comes_back_bit_identical(tmp_path):
  src = tmp_path / "a.safetensors"
  tensors = {k: v for k, v in state().items() if v.dtype != ml_dtypes.bfloat16}  # see below
  ck.save(src, tensors, metadata={"format": "pt"})
  ck.convert_file(src, tmp_path / "b.msgpack", "pytorch", "flax")
  ck.convert_file(tmp_path / "b.msgpack", tmp_path / "c.npz", "flax", "lasagne")
  ck.convert_file(tmp_path / "c.npz", tmp_path / "d.safetensors", "lasagne", "pytorch")
  back = ck.load(tmp_path / "d.safetensors")
  assert sorted(back) == sorted(tensors)  # (flax's msgpack serializer sorts the names)
  for k, v in tensors.items():
    assert_same(back[k], v)


def test_bfloat16_through_npz_keeps_the_bits_and_says_so(tmp_path):
  src = tmp_path / "a.safetensors"
  ck.save(src, state())
  result = ck.convert_file(src, tmp_path / "b.npz", "pytorch", "flax")
  assert any("bfloat16" in n and "void" in n for n in result.notes)
  got = np.load(tmp_path / "b.npz")["decoder.deconv.weight"]
  want = state()["decoder.deconv.weight"].transpose(2, 3, 0, 1)[::-1, ::-1]
  np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))


def test_src_is_never_modified_and_dst_needs_force(tmp_path):
  src, dst = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
  ck.save(src, state())
  before = digest(src)
  ck.convert_file(src, dst, "pytorch", "flax")
  assert digest(src) == before
  first = digest(dst)
  with pytest.raises(ck.CheckpointError, match=r"b\.safetensors' exists; pass --force"):
    ck.convert_file(src, dst, "pytorch", "lasagne")
  assert digest(dst) == first
  ck.convert_file(src, dst, "pytorch", "lasagne", force=True)
  assert digest(dst) != first
  with pytest.raises(ck.CheckpointError, match="is the input file"):
    ck.convert_file(src, src, "pytorch", "flax", force=True)
  assert digest(src) == before


def test_dry_run_writes_nothing_and_plans_what_convert_does(tmp_path):
  src, dst = tmp_path / "a.npz", tmp_path / "b.npz"
  np.savez(src, **{k: v for k, v in state().items() if v.dtype != ml_dtypes.bfloat16})
  plan = ck.convert_file(src, dst, "pytorch", "flax", dry_run=True)
  assert not dst.exists() and not plan.written
  ck.convert_file(src, dst, "pytorch", "flax")
  out = np.load(dst)
  for change in plan.plan:
    name = change.path.replace("/", ".")
    assert out[name].shape == change.new_shape
    np.testing.assert_array_equal(out[name], np.load(src)[name].transpose(change.permutation))


# ---------------------------------------------------------------------------
# Memory: tensor by tensor


def test_streaming_conversion_holds_about_two_tensors_not_the_file(tmp_path):
  n, size = 8, 2 << 20  # 8 tensors of 8 MB (float32)
  tensors = {f"layer{i}.weight": np.full((size // 64, 4, 4, 4), i, np.float32) for i in range(n)}
  src = tmp_path / "big.safetensors"
  ck.save(src, tensors)
  del tensors
  largest = size * 4
  for dst in ("out.safetensors", "out.npz"):
    tracemalloc.start()
    ck.convert_file(src, tmp_path / dst, "pytorch", "flax")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2 * largest + (4 << 20), (dst, peak)  # the file is 8 * largest
  with ck.open_checkpoint(tmp_path / "out.safetensors") as r:
    assert r.tensors[3].shape == (4, 4, 4, size // 64)
    assert np.all(r.read("layer3.weight") == 3)


# ---------------------------------------------------------------------------
# Bad files


def _truncated(tmp_path, name, keep):
  good = tmp_path / ("good" + os.path.splitext(name)[1])
  if name.endswith(".msgpack"):
    from flax import serialization

    good.write_bytes(serialization.msgpack_serialize({"w": rand((64, 64))}))
  else:
    ck.save(good, {"w": rand((64, 64))})
  data = digest(good)
  path = tmp_path / name
  path.write_bytes(data[: keep(len(data))])
  return path


@pytest.mark.parametrize(
  "name,keep",
  [
    ("empty.safetensors", lambda n: 0),
    ("short.safetensors", lambda n: 5),
    ("cut_header.safetensors", lambda n: 40),
    ("cut_data.safetensors", lambda n: n - 100),
    ("empty.npz", lambda n: 0),
    ("cut.npz", lambda n: n // 2),
    ("empty.msgpack", lambda n: 0),
    ("cut.msgpack", lambda n: n // 2),
  ],
)
def test_truncated_files_raise_one_line_naming_the_file(tmp_path, name, keep):
  path = _truncated(tmp_path, name, keep)
  with pytest.raises(ck.CheckpointError) as info, ck.open_checkpoint(path) as r:
    for _ in r:
      pass
  message = str(info.value)
  assert name in message and "\n" not in message


def st_file(header: bytes, data: int) -> bytes:
  """A safetensors file from a header, written out by hand (8-byte length, JSON, data)."""
  return struct.pack("<Q", len(header)) + header + bytes(data)


@pytest.mark.parametrize(
  "content,match",
  [
    (struct.pack("<Q", 9) + b"not json!", "header is not JSON"),
    (struct.pack("<Q", 8) + b"[1, 2]  ", "not a JSON object"),
    (st_file(b'{"w":{"dtype":"F99","shape":[2],"data_offsets":[0,8]}}', 8), "bad entry"),
    (st_file(b'{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', 8), "do not fit"),
    (st_file(b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', 4), "truncated"),
    (st_file(b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', 12), "expected 0"),
    (struct.pack("<Q", 1 << 40) + b"{}", "header claims"),
  ],
)
def test_corrupt_safetensors_headers(tmp_path, content, match):
  path = tmp_path / "bad.safetensors"
  path.write_bytes(content)
  with pytest.raises(ck.CheckpointError, match=match):
    ck.open_checkpoint(path)


def test_corrupt_npz_member_is_caught_on_read(tmp_path):
  path = tmp_path / "a.npz"
  np.savez(path, w=np.arange(4096, dtype=np.float32))
  data = bytearray(digest(path))
  data[400] ^= 0xFF  # inside the array data: the CRC check fails on reading
  path.write_bytes(bytes(data))
  with pytest.raises(ck.CheckpointError, match=r"a\.npz.*'w' cannot be read"):
    ck.load(path)


@pytest.mark.parametrize(
  "name,match",
  [
    ("weights.txt", r"unsupported input type '\.txt'"),
    ("weights", "no suffix"),
    ("model.pt", r"pickle-based file \(\.pt\).*--allow-pickle"),
    ("model.ckpt", "pickle-based"),
    ("pytorch_model.bin", "pickle-based"),
    ("missing.npz", "no such file"),
  ],
)
def test_wrong_or_refused_files(tmp_path, name, match):
  path = tmp_path / name
  if not name.startswith("missing"):
    path.write_bytes(b"\x80\x04K\x01.")  # a tiny pickle: never opened
  with pytest.raises(ck.CheckpointError, match=match):
    ck.open_checkpoint(path)


def test_object_arrays_in_npz_are_refused(tmp_path):
  np.savez(tmp_path / "o.npz", o=np.array([{"a": 1}], dtype=object))
  with pytest.raises(ck.CheckpointError, match="Python objects"):
    ck.open_checkpoint(tmp_path / "o.npz")


def test_unsupported_output_dtype_and_suffix(tmp_path):
  with pytest.raises(ck.CheckpointError, match="safetensors cannot store"):
    ck.save(tmp_path / "c.safetensors", {"z": np.zeros(3, np.complex128)})
  with pytest.raises(ck.CheckpointError, match="unsupported output type"):
    ck.save(tmp_path / "c.pt", {"z": np.zeros(3)})
  assert os.listdir(tmp_path) == []  # nothing left behind


def test_torch_files_load_only_when_allowed_and_only_weights(tmp_path):
  torch = pytest.importorskip("torch")
  sd = {
    "conv.weight": torch.randn(4, 3, 3, 3),
    "conv.bias": torch.randn(4).bfloat16(),
    "meta": {"epoch": 3},
  }
  torch.save(sd, tmp_path / "m.pt")
  with ck.open_checkpoint(tmp_path / "m.pt", allow_pickle=True) as r:
    assert [t.name for t in r.tensors] == ["conv.weight", "conv.bias", "meta.epoch"]
    np.testing.assert_array_equal(r.read("conv.weight"), sd["conv.weight"].numpy())
    assert r.read("conv.bias").dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(
      r.read("conv.bias").astype(np.float32), sd["conv.bias"].float().numpy()
    )

  class Evil:
    def __reduce__(self):
      return (os.system, (f"touch {tmp_path / 'pwned'}",))

  torch.save({"w": Evil()}, tmp_path / "evil.pt")
  with pytest.raises(ck.CheckpointError, match=r"evil\.pt.*weights_only"):
    ck.open_checkpoint(tmp_path / "evil.pt", allow_pickle=True)
  assert not (tmp_path / "pwned").exists()


# ---------------------------------------------------------------------------
# Atomic writes


CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    from flipconv import checkpoints as ck

    infos = [ck.TensorInfo(f"t{i}", (1 << 20,), np.dtype(np.float32)) for i in range(16)]

    def arrays():
      for i, info in enumerate(infos):
        yield np.full(info.shape, i, np.float32)
        if i == 2:  # 12 MB are in the temporary file: stop here until killed
          print("writing", flush=True)
          time.sleep(120)

    ck.write_checkpoint(sys.argv[1], infos, arrays())
""")


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
@pytest.mark.parametrize("existing", [False, True])
def test_killed_writer_leaves_the_old_file_or_none(tmp_path, suffix, existing):
  dst = tmp_path / ("out" + suffix)
  if existing:
    ck.save(dst, {"old": np.arange(3.0)})
  old = digest(dst) if existing else None
  child = subprocess.Popen(
    [sys.executable, "-c", CHILD, str(dst)], stdout=subprocess.PIPE, text=True
  )
  try:
    assert child.stdout.readline().strip() == "writing"
    partial = glob.glob(str(tmp_path / ".out*.partial"))
    assert len(partial) == 1 and os.path.getsize(partial[0]) > 8 << 20
    child.send_signal(signal.SIGKILL)
  finally:
    child.kill()
    child.wait()
  assert child.returncode == -signal.SIGKILL
  if existing:
    assert digest(dst) == old
    assert list(ck.load(dst)) == ["old"]
  else:
    assert not dst.exists()


def test_error_while_writing_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
  dst = tmp_path / "out.safetensors"
  ck.save(dst, {"old": np.arange(3.0)})
  old = digest(dst)
  infos = [
    ck.TensorInfo("a", (4,), np.dtype(np.float32)),
    ck.TensorInfo("b", (4,), np.dtype(np.float32)),
  ]

  def arrays():
    yield np.zeros(4, np.float32)
    raise RuntimeError("conversion failed")

  with pytest.raises(RuntimeError, match="conversion failed"):
    ck.write_checkpoint(dst, infos, arrays())
  assert digest(dst) == old
  assert sorted(os.listdir(tmp_path)) == ["out.safetensors"]


def test_written_file_has_normal_permissions(tmp_path):
  ck.save(tmp_path / "a.npz", {"w": np.zeros(2)})
  umask = os.umask(0)
  os.umask(umask)
  assert os.stat(tmp_path / "a.npz").st_mode & 0o777 == 0o666 & ~umask


def test_progress_bar_only_on_a_terminal(tmp_path):
  import io

  class Tty(io.StringIO):
    def isatty(self):
      return True

  pytest.importorskip("tqdm")
  shown, hidden = Tty(), io.StringIO()
  for stream in (shown, hidden):
    with ck.progress(10 << 20, "x", stream=stream, min_bytes=1 << 20) as update:
      update(10 << 20)
  assert "x" in shown.getvalue() and hidden.getvalue() == ""
  small = Tty()
  with ck.progress(10, "x", stream=small) as update:
    update(10)
  assert small.getvalue() == ""


def test_missing_output_folder_is_one_clear_error(tmp_path):
  with pytest.raises(ck.CheckpointError, match=r"x\.npz': cannot create a file in .*nowhere"):
    ck.save(tmp_path / "nowhere" / "x.npz", {"w": np.zeros(2)})
