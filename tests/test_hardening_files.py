"""Hostile files and file-system faults: the readers, the writers and the command line.

Each test names the rule it holds (README, "What flipconv refuses, and how"):
readers refuse what the reference loaders refuse and more (never another
exception), writers never write a file that reads back differently, no
tensor is lost to a name collision, publishing never replaces a file it may
not, and ``flipconv`` turns every failure into one line and exit code 2.
"""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zipfile

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flipconv import checkpoints as ck
from flipconv import cli

SETTINGS = settings(
  max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def rand(shape, seed=0, dtype=np.float32):
  return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def run_main(capsys, *args):
  """``flipconv ARGS`` in this process: (exit code, stdout, stderr lines)."""
  code = cli.main([str(a) for a in args])
  out = capsys.readouterr()
  return code, out.out, [ln for ln in out.err.splitlines() if ln.strip()]


def one_line(capsys, *args, needles=()):
  code, _, err = run_main(capsys, *args)
  assert code == 2, err
  assert len(err) == 1 and "Traceback" not in err[0], err
  assert err[0].startswith(f"flipconv {args[0]}: error: "), err
  for n in needles:
    assert str(n) in err[0], (n, err[0])
  return err[0]


def run_cli(*args, timeout=60, **kw):
  return subprocess.run(
    [sys.executable, "-m", "flipconv.cli", *map(str, args)],
    capture_output=True,
    text=True,
    timeout=timeout,
    **kw,
  )


def flat_tree(node, prefix=""):
  """(path, leaf) of nested dicts and lists, paths joined by "/" (small trees: recursive)."""
  if isinstance(node, (dict, list)):
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, child in items:
      yield from flat_tree(child, f"{prefix}/{key}" if prefix else str(key))
  else:
    yield prefix, node


def read_safetensors_plainly(path):
  """A .safetensors file read from its specification: u64 header size, JSON, raw bytes."""
  dtypes = {"BF16": ml_dtypes.bfloat16, "F8_E5M2": ml_dtypes.float8_e5m2}
  raw = path.read_bytes()
  (size,) = struct.unpack("<Q", raw[:8])
  header, data = json.loads(raw[8 : 8 + size]), raw[8 + size :]
  header.pop("__metadata__", None)
  return {
    name: np.frombuffer(
      data[e["data_offsets"][0] : e["data_offsets"][1]], dtypes[e["dtype"]]
    ).reshape(e["shape"])
    for name, e in header.items()
  }


# ---------------------------------------------------------------------------
# Hand-made files


def st_bytes(header, data=b""):
  """A .safetensors file from a header given as a dict, or as raw JSON text."""
  raw = (header if isinstance(header, str) else json.dumps(header)).encode()
  raw += b" " * (-len(raw) % 8)
  return struct.pack("<Q", len(raw)) + raw + data


def npy_member(header: bytes, data: bytes = b"") -> bytes:
  header += b" " * (-(len(header) + 11) % 64) + b"\n"
  return np.lib.format.magic(1, 0) + struct.pack("<H", len(header)) + header + data


def npy_bytes(arr) -> bytes:
  buf = io.BytesIO()
  np.lib.format.write_array(buf, np.asarray(arr))
  return buf.getvalue()


def write_zip(path, members, compression=zipfile.ZIP_STORED):
  with zipfile.ZipFile(path, "w", compression=compression) as z:
    for name, data in members:
      z.writestr(name, data)


def ones_npz(path):
  np.savez(path, w=np.ones((2, 3), np.float32))
  return path


BAD_NPZ = {
  "truncated": lambda p: p.write_bytes(ones_npz(p).read_bytes()[:-40]),
  "not a zip": lambda p: p.write_bytes(b"PK\x03\x04 this is not really a zip file"),
  "malformed header": lambda p: write_zip(
    p, [("x.npy", npy_member(b"{'descr': '<f4', 'fortran_order': False, 'shape': (2,, }"))]
  ),
  "negative shape": lambda p: write_zip(
    p, [("x.npy", npy_member(b"{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 4), }"))]
  ),
  "64 TiB": lambda p: write_zip(
    p,
    [("x.npy", npy_member(b"{'descr': '<f4', 'fortran_order': False, 'shape': (%d,), }" % 2**44))],
  ),
  "pickled member": lambda p: write_zip(
    p, [("x.npy", npy_member(b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", b"N."))]
  ),
  "duplicate member": lambda p: write_zip(
    p, [("x.npy", npy_bytes(np.ones(3, np.float32))), ("x.npy", npy_bytes(np.zeros(3)))]
  ),
  "data shorter than declared": lambda p: write_zip(
    p, [("x.npy", npy_bytes(np.ones(100, np.float32))[:-8])]
  ),
}


# ---------------------------------------------------------------------------
# 3. `flipconv detect` reads through the checked reader; detect.py holds no file or CLI code


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize("case", sorted(BAD_NPZ))
def test_detect_bad_npz_is_one_line_naming_the_file_and_exit_2(tmp_path, capsys, case):
  path = tmp_path / "layer.npz"
  BAD_NPZ[case](path)
  one_line(capsys, "detect", path, needles=["layer.npz"])


def test_detect_bad_file_from_the_installed_command_has_no_traceback(tmp_path):
  path = tmp_path / "huge.npz"
  BAD_NPZ["64 TiB"](path)
  result = run_cli("detect", path)
  assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
  assert result.stderr.count("\n") == 1 and "huge.npz" in result.stderr


def test_detect_module_holds_no_file_reading_or_command_line_code():
  import flipconv.detect as detect

  with open(detect.__file__) as f:
    source = f.read()
  for banned in ("import argparse", "np.load(", "sys.stderr", "def _run", "add_parser"):
    assert banned not in source, banned
  assert not hasattr(detect, "read_npz") and not hasattr(detect, "add_detect_parser")


def test_detect_argument_entries_are_checked(tmp_path, capsys):
  path = tmp_path / "layer.npz"
  x, w = np.ones((1, 2, 5, 5), np.float32), np.ones((3, 2, 3, 3), np.float32)
  np.savez(path, x=x, kernel=w, y=np.ones((1, 3, 3, 3)), strides=np.ones((100, 100), np.int64))
  one_line(capsys, "detect", path, needles=["layer.npz", "strides"])


# ---------------------------------------------------------------------------
# 4. Readers: .safetensors at least as strict as the reference loader


GOOD = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
DATA = np.array([1.5, -2.0], np.float32).tobytes()


@pytest.mark.parametrize(
  "header, match",
  [
    ({"w": {**GOOD["w"], "shape": [2.9]}}, "bad entry"),
    ({"w": {**GOOD["w"], "shape": ["2"]}}, "bad entry"),
    ({"w": {**GOOD["w"], "shape": [True]}}, "bad entry"),
    ({"w": {**GOOD["w"], "shape": [2.0]}}, "bad entry"),
    ({"w": {**GOOD["w"], "shape": [-2]}}, "bad entry"),
    ({"w": {**GOOD["w"], "data_offsets": [0, 8.0]}}, "bad entry"),
    ({"w": {**GOOD["w"], "data_offsets": [False, 8]}}, "bad entry"),
    ({"w": {**GOOD["w"], "data_offsets": [0, 8, 8]}}, "bad entry"),
    ({"w": {**GOOD["w"], "dtype": ["F32"]}}, "bad entry"),
    ({"w": [1, 2]}, "bad entry"),
    ({"__metadata__": 0, **GOOD}, "__metadata__"),
    ({"__metadata__": "", **GOOD}, "__metadata__"),
    ({"__metadata__": [], **GOOD}, "__metadata__"),
    ({"__metadata__": {"k": 1}, **GOOD}, "__metadata__"),
    ({"__metadata__": None, **GOOD}, "__metadata__"),
    ('{"w": {"dtype": "F32", "shape": [1e999], "data_offsets": [0, 8]}}', "bad entry"),
    ('{"w": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 8]}}', "not JSON"),
    ('{"w": {"dtype": "F32", "shape": [' + "9" * 5000 + '], "data_offsets": [0, 8]}}', "not JSON"),
    ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply|not JSON"),
    (json.dumps(GOOD)[:-1] + ', "w": ' + json.dumps(GOOD["w"]) + "}", "'w' twice"),
    ('{"__metadata__": {"k": "1", "k": "2"}, ' + json.dumps(GOOD)[1:], "'k' twice"),
    (" " + json.dumps(GOOD), "start with"),
  ],
)
def test_safetensors_header_rules(tmp_path, header, match):
  path = tmp_path / "bad.safetensors"
  path.write_bytes(st_bytes(header, DATA))
  with pytest.raises(ck.CheckpointError, match=match) as info:
    ck.open_checkpoint(path)
  assert str(path) in str(info.value) and "\n" not in str(info.value)


def json_values():
  scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70)
  scalars |= st.floats(allow_nan=False) | st.text(max_size=4)
  return st.recursive(
    scalars,
    lambda kids: (
      st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=3), kids, max_size=3)
    ),
    max_leaves=6,
  )


@st.composite
def safetensors_files(draw):
  """A valid file from the safetensors library, then one part of its header replaced."""
  from safetensors.numpy import save

  n = draw(st.integers(1, 3))
  tensors = {
    f"t{i}": np.arange(draw(st.integers(0, 4)), dtype=draw(st.sampled_from(["<f4", "<i2", "u1"])))
    for i in range(n)
  }
  data = save(tensors, metadata=draw(st.none() | st.just({"format": "pt"})))
  (size,) = struct.unpack("<Q", data[:8])
  header, body = json.loads(data[8 : 8 + size]), data[8 + size :]
  name = draw(st.sampled_from(sorted(header)))
  how = draw(
    st.sampled_from(
      ["value", "field", "shape", "offset", "metadata", "duplicate", "bytes", "truncate"]
    )
  )
  if how == "value":
    header[name] = draw(json_values())
  elif how == "field" and name != "__metadata__":
    header[name][draw(st.sampled_from(["dtype", "shape", "data_offsets", "extra"]))] = draw(
      json_values()
    )
  elif how in ("shape", "offset") and name != "__metadata__":
    key = "shape" if how == "shape" else "data_offsets"
    if header[name][key]:
      i = draw(st.integers(0, len(header[name][key]) - 1))
      v = header[name][key][i]
      # The same number spelled otherwise (2.0, "2", true), or another one.
      spelled = [float(v), str(v), v + 0.9, bool(v), -v, v + 1, [v], None]
      header[name][key][i] = draw(st.sampled_from(spelled) | st.floats(allow_nan=False))
  elif how == "metadata":
    header["__metadata__"] = draw(
      st.sampled_from([0, "", [], None, {"k": 1}, {"k": None}, {"k": "v"}]) | json_values()
    )
  raw = json.dumps(header)
  if how == "duplicate" and name != "__metadata__":  # the same name twice
    raw = raw[:-1] + f", {json.dumps(name)}: {json.dumps(header[name])}}}"
  if how == "bytes":
    i = draw(st.integers(0, len(raw) - 1))
    raw = raw[:i] + draw(st.sampled_from(list('{}[]",:0-9e. a'))) + raw[i + 1 :]
  blob = st_bytes(raw, body)
  if how == "truncate":
    blob = blob[: draw(st.integers(0, len(blob) - 1))]
  return blob


@SETTINGS
@given(blob=safetensors_files())
def test_safetensors_reader_returns_what_the_reference_does_or_refuses(tmp_path, blob):
  """Whatever the header: exactly what the safetensors library reads, or a CheckpointError that
  names the file (never another exception, never a file the library refuses)."""
  from safetensors.numpy import load as reference

  path = tmp_path / "fuzz.safetensors"
  path.write_bytes(blob)
  try:
    got = ck.load(path)
  except ck.CheckpointError as e:
    assert str(path) in str(e) and "\n" not in str(e)
    return
  want = reference(blob)  # raises if the reference loader refuses what we read
  assert set(got) == set(want)
  for k, v in want.items():
    assert got[k].dtype == v.dtype and got[k].shape == v.shape
    np.testing.assert_array_equal(got[k], v)


# ---------------------------------------------------------------------------
# 4. Readers: .npz


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize("case", sorted(BAD_NPZ))
def test_bad_npz_inspect_and_convert_exit_2_naming_the_input(tmp_path, capsys, case):
  path = tmp_path / "input.npz"
  BAD_NPZ[case](path)
  one_line(capsys, "inspect", path, needles=["input.npz"])
  dst = tmp_path / "out.safetensors"
  one_line(capsys, "convert", path, dst, "--from", "pytorch", "--to", "flax", needles=["input.npz"])
  assert not dst.exists() and os.listdir(tmp_path) == ["input.npz"]


def test_npz_deflate_member_claiming_more_than_deflate_can_expand(tmp_path):
  path = tmp_path / "bomb.npz"
  n = 2**30 - 64  # a .npy of 2**32 - 128 bytes, of which the member holds a few
  head = npy_member(b"{'descr': '<f4', 'fortran_order': False, 'shape': (%d,), }" % n)
  write_zip(path, [("x.npy", head + bytes(4096))], zipfile.ZIP_DEFLATED)
  raw = bytearray(path.read_bytes())
  cd = raw.rfind(b"PK\x01\x02")  # the central directory's uncompressed size, at +24
  struct.pack_into("<I", raw, cd + 24, len(head) + 4 * n)
  path.write_bytes(bytes(raw))
  with pytest.raises(ck.CheckpointError, match="more than deflate can expand") as e:
    ck.open_checkpoint(path)
  assert "bomb.npz" in str(e.value) and "\n" not in str(e.value)


@given(
  suffix=st.sampled_from([".npz", ".msgpack", ".safetensors"]),
  compressed=st.booleans(),
  cuts=st.lists(
    st.tuples(
      st.integers(0, 120) | st.integers(0, 10**6),  # mostly in the first header
      st.sampled_from(b"{}()[],:'\"-0123456789e. \n\xff\x00") | st.integers(0, 255),
    ),
    min_size=1,
    max_size=4,
  ),
  truncate=st.booleans(),
)
# The .npy header's "(" of the shape made "x": NumPy's parser raises tokenize's TokenError.
@example(suffix=".npz", compressed=False, cuts=[(50, ord("x"))], truncate=False)
@settings(SETTINGS, max_examples=80)
def test_corrupted_files_read_as_the_reference_reads_them_or_are_refused(
  tmp_path, suffix, compressed, cuts, truncate
):
  """Bytes flipped or cut anywhere: the same arrays as NumPy / Flax / safetensors read, or a
  CheckpointError naming the file; never another exception."""
  from flax import serialization
  from safetensors.numpy import load as st_load

  tensors = {"conv.weight": rand((2, 3, 2, 2), 1), "b": np.arange(5, dtype=np.int16)}
  path = tmp_path / f"f{suffix}"
  if suffix == ".npz":
    (np.savez_compressed if compressed else np.savez)(path, **tensors)
  else:
    ck.save(path, tensors)
  blob = bytearray(path.read_bytes())
  base = {".npz": max(blob.find(b"{'descr'"), 0), ".safetensors": 8}.get(suffix, 0)
  for at, value in cuts:
    blob[(base + at) % len(blob)] = value
  if truncate:
    blob = blob[: cuts[0][0] % len(blob)]
  path.write_bytes(bytes(blob))
  try:
    got = ck.load(path)
  except ck.CheckpointError as e:
    assert str(path) in str(e) and "\n" not in str(e)
    return
  if suffix == ".npz":
    with np.load(path) as z:
      want = {k: z[k] for k in z.files}
  elif suffix == ".msgpack":
    want = dict(flat_tree(serialization.msgpack_restore(blob)))
  else:
    want = st_load(bytes(blob))
  assert set(got) == set(want)
  for k, v in want.items():
    np.testing.assert_array_equal(got[k], v)


# ---------------------------------------------------------------------------
# 4. Readers: deep .msgpack, pickle dtypes, non-regular files


def nested(depth, leaf):
  tree = leaf
  for i in range(depth):
    tree = {f"l{i % 3}": tree}
  return tree


def test_msgpack_nested_500_deep_converts(tmp_path, capsys):
  from flax import serialization

  w = rand((3, 2), 1)
  src, dst = tmp_path / "deep.msgpack", tmp_path / "out.msgpack"
  src.write_bytes(serialization.msgpack_serialize(nested(500, w) | {"top": w + 1}))
  code, _, err = run_main(capsys, "convert", src, dst, "--from", "pytorch", "--to", "flax")
  assert code == 0, err
  back = serialization.msgpack_restore(dst.read_bytes())
  node = back
  for i in reversed(range(500)):
    node = node[f"l{i % 3}"]
  np.testing.assert_array_equal(node, w)
  np.testing.assert_array_equal(back["top"], w + 1)
  # Read, listed and converted to the flat formats too.
  code, out, err = run_main(capsys, "inspect", src)
  assert code == 0 and "2 tensors" in out, err
  code, _, err = run_main(
    capsys, "convert", src, tmp_path / "o.npz", "--from", "flax", "--to", "pytorch"
  )
  assert code == 0, err


@pytest.mark.parametrize("depth", [1000, 3000])
def test_msgpack_deeper_still_converts_or_is_one_clean_line(tmp_path, capsys, depth):
  # Hand-packed {"a": {"a": ... [1, 2]}}: past about 1000 levels Flax's reader (Python's
  # recursion limit) and then msgpack itself (3000) refuse. Flax decides which branch holds.
  from flax import serialization

  path, dst = tmp_path / "very.msgpack", tmp_path / "o.msgpack"
  path.write_bytes(b"\x81\xa1a" * depth + b"\x92\x01\x02")
  try:
    serialization.msgpack_restore(path.read_bytes())
    flax_reads_it = True
  except (RecursionError, ValueError):  # msgpack's StackError is a ValueError
    flax_reads_it = False
  code, _, err = run_main(capsys, "convert", path, dst, "--from", "pytorch", "--to", "flax")
  if flax_reads_it:  # (not with Python's default recursion limit of 1000)
    assert code == 0, err
    assert ck.load(dst) == {"/".join(["a"] * depth) + "/0": 1, "/".join(["a"] * depth) + "/1": 2}
  else:
    assert code == 2 and len(err) == 1 and "very.msgpack" in err[0], err
    assert "nested too deeply" in err[0] and not dst.exists()


@pytest.mark.parametrize("kind", ["float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "bfloat16"])
def test_allow_pickle_reads_float8_and_bfloat16_bit_for_bit(tmp_path, capsys, kind):
  torch = pytest.importorskip("torch")
  t = torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(0)).to(getattr(torch, kind))
  path = tmp_path / "m.pt"
  torch.save({"conv": {"weight": t}}, path)
  dst = tmp_path / ("o.msgpack" if kind == "float8_e4m3fnuz" else "o.safetensors")
  code, _, err = run_main(
    capsys, "convert", path, dst, "--from", "pytorch", "--to", "flax", "--allow-pickle"
  )
  assert code == 0, err
  got = ck.load(dst)["conv.weight"]
  assert got.dtype == np.dtype(getattr(ml_dtypes, kind))
  bits = t.view(torch.uint8 if t.element_size() == 1 else torch.int16).numpy()
  np.testing.assert_array_equal(got.view(bits.dtype), bits.transpose(2, 3, 1, 0))  # OIHW->HWIO


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch: sparse CSR is beta, qint8 deprecated
@pytest.mark.parametrize("make", ["sparse_coo", "sparse_csr", "quantized", "float4_e2m1fn_x2"])
def test_allow_pickle_refuses_what_it_cannot_read_in_one_line(tmp_path, capsys, make):
  torch = pytest.importorskip("torch")
  dense = torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
  t = {
    "sparse_coo": lambda: dense.to_sparse(),
    "sparse_csr": lambda: dense.to_sparse_csr(),
    "quantized": lambda: torch.quantize_per_tensor(dense, 0.1, 0, torch.qint8),
    "float4_e2m1fn_x2": lambda: torch.zeros(4, 4, dtype=torch.uint8).view(torch.float4_e2m1fn_x2),
  }[make]()
  path = tmp_path / "m.pt"
  torch.save({"layer.weight": t}, path)
  line = one_line(capsys, "inspect", path, "--allow-pickle", needles=["m.pt", "layer.weight"])
  assert make.split("_")[0] in line


def test_fifo_and_device_are_not_regular_files(tmp_path):
  fifo = tmp_path / "pipe.npz"
  os.mkfifo(fifo)
  zero = tmp_path / "zero.safetensors"
  zero.symlink_to("/dev/zero")
  convert = ("convert", fifo, tmp_path / "o.npz", "--from", "pytorch", "--to", "flax")
  for path, args in [(fifo, ("inspect", fifo)), (fifo, convert), (zero, ("detect", zero))]:
    result = run_cli(*args, timeout=60)  # a FIFO would block forever on open
    assert result.returncode == 2 and "not a regular file" in result.stderr, result.stderr
    assert path.name in result.stderr and "Traceback" not in result.stderr
  with pytest.raises(ck.CheckpointError, match="not a regular file"):
    ck.open_checkpoint(fifo)


@pytest.mark.parametrize(
  "error", [RuntimeError("boom\nsecond line"), RecursionError(), MemoryError(), KeyError("k")]
)
def test_main_turns_every_failure_into_one_line_and_exit_2(tmp_path, capsys, monkeypatch, error):
  def fail(*args, **kwargs):
    raise error

  monkeypatch.setattr(ck, "convert_file", fail)
  monkeypatch.setattr(ck, "open_checkpoint", fail)
  one_line(capsys, "convert", "a.npz", tmp_path / "b.npz", "--from", "pytorch", "--to", "flax")
  one_line(capsys, "inspect", "a.npz")


# ---------------------------------------------------------------------------
# 4. .onnx files: each initializer a tensor, named as in the graph


def torch_model():
  torch = pytest.importorskip("torch")
  torch.manual_seed(0)
  return torch.nn.Sequential(
    torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5)
  ).eval()


def export(model, path, **kw):
  import torch

  pytest.importorskip("onnx")
  torch.onnx.export(model, (torch.randn(1, 3, 8, 8),), str(path), dynamo=False, **kw)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_initializers_are_the_torch_state_dict(tmp_path, capsys):
  model = torch_model()
  path = tmp_path / "m.onnx"
  export(model, path, do_constant_folding=False)
  got = ck.load(path)
  sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  assert list(got) == list(sd)  # names as in the graph, in its order
  for k, v in sd.items():
    np.testing.assert_array_equal(got[k], v)
  code, out, err = run_main(capsys, "inspect", path, "--from", "pytorch", "--to", "flax")
  assert code == 0 and "onnx, 4 tensors" in out and "0.weight" in out, err
  dst = tmp_path / "flax.safetensors"
  code, _, err = run_main(capsys, "convert", path, dst, "--from", "pytorch", "--to", "flax")
  assert code == 0, err
  np.testing.assert_array_equal(ck.load(dst)["0.weight"], sd["0.weight"].transpose(2, 3, 1, 0))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_external_data_is_read_inside_the_model_folder_only(tmp_path):
  onnx = pytest.importorskip("onnx")
  model = torch_model()
  export(model, tmp_path / "plain.onnx", do_constant_folding=False)
  proto = onnx.load(str(tmp_path / "plain.onnx"))
  os.mkdir(tmp_path / "model")
  path = tmp_path / "model" / "ext.onnx"
  onnx.save_model(proto, str(path), save_as_external_data=True, location="w.bin", size_threshold=0)
  got = ck.load(path)
  for k, v in model.state_dict().items():
    np.testing.assert_array_equal(got[k], v.detach().numpy())

  def tamper(**fields):
    m = onnx.load(str(path), load_external_data=False)
    t = m.graph.initializer[0]
    for e in t.external_data:
      if e.key in fields:
        e.value = str(fields.pop(e.key))
    for key, value in fields.items():
      t.external_data.add(key=key, value=str(value))
    bad = path.parent / "bad.onnx"
    onnx.save_model(m, str(bad))
    return bad

  (tmp_path / "outside.bin").write_bytes(bytes(4096))
  (path.parent / "link.bin").symlink_to(tmp_path / "outside.bin")
  os.mkfifo(path.parent / "pipe.bin")
  for fields, match in [
    ({"location": "pipe.bin"}, "not a regular file"),
    ({"location": "link.bin"}, "inside the model's folder"),
    ({"location": "../outside.bin"}, "inside the model's folder"),
    ({"location": str(tmp_path / "outside.bin")}, "inside the model's folder"),
    ({"offset": 10**9}, "lie outside"),
    ({"length": 10**9}, "lie outside"),
    ({"length": 8}, "holds 8 bytes, not the 432"),
    ({"location": "missing.bin"}, "cannot read its external data"),
  ]:
    bad = tamper(**fields)
    with pytest.raises(ck.CheckpointError, match=match) as e:
      ck.load(bad)
    assert "bad.onnx" in str(e.value) and "\n" not in str(e.value)


def test_onnx_without_the_package_is_one_clear_line(tmp_path, monkeypatch, capsys):
  (tmp_path / "m.onnx").write_bytes(b"\x08\x07")
  monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
  one_line(capsys, "inspect", tmp_path / "m.onnx", needles=["m.onnx", "pip install onnx"])


def test_onnx_corrupt_or_refused(tmp_path):
  onnx = pytest.importorskip("onnx")
  from onnx import TensorProto, helper

  (tmp_path / "junk.onnx").write_bytes(b"\xff" * 64)
  with pytest.raises(ck.CheckpointError, match=r"junk\.onnx"):
    ck.open_checkpoint(tmp_path / "junk.onnx")

  def tensor(name, kind, dims, **data):
    return TensorProto(name=name, data_type=kind, dims=dims, **data)

  cases = {
    "dup": [tensor("w", TensorProto.FLOAT, [2], float_data=[1, 2])] * 2,
    "string": [tensor("s", TensorProto.STRING, [1], string_data=[b"x"])],
    "short": [tensor("w", TensorProto.FLOAT, [1000], float_data=[1.0, 2.0])],
    "negative": [tensor("w", TensorProto.FLOAT, [-1], float_data=[1.0])],
    "raw": [tensor("w", TensorProto.FLOAT, [4], raw_data=b"\0" * 15)],
  }
  for name, inits in cases.items():
    graph = helper.make_graph([], "g", [], [], initializer=inits)
    path = tmp_path / f"{name}.onnx"
    onnx.save_model(helper.make_model(graph), str(path))
    with pytest.raises(ck.CheckpointError, match=f"{name}.onnx"):
      ck.load(path)
  assert ck.file_format("x.onnx") == "onnx"
  with pytest.raises(ck.CheckpointError, match="unsupported output"):
    ck.file_format("x.onnx", role="output")


# ---------------------------------------------------------------------------
# Issue 15 (a): names as in the file, in the file's order


def test_inspect_and_plans_name_tensors_as_the_file_does_in_its_order(tmp_path, capsys):
  path = tmp_path / "m.npz"
  names = ["_blocks.2.weight", "_blocks.10.weight", "0.weight", "0.bias", "pos.embed"]
  shapes = [(4, 3, 3, 3), (4, 4, 1, 1), (5, 4), (5,), (1, 4, 6)]
  np.savez(path, **{n: rand(s, i) for i, (n, s) in enumerate(zip(names, shapes, strict=True))})
  code, out, err = run_main(capsys, "inspect", path, "--from", "pytorch", "--to", "flax")
  assert code == 0, err
  rows = [ln.split()[0] for ln in out.splitlines()[2:] if ln.split() and ln.split()[0] in names]
  assert rows == names
  assert "? rank 3" in next(ln for ln in out.splitlines() if ln.startswith("pos.embed"))
  dst = tmp_path / "o.npz"
  code, out, err = run_main(
    capsys, "convert", path, dst, "--from", "pytorch", "--to", "flax", "--dry-run"
  )
  assert code == 0, err
  planned = [ln.split()[0] for ln in out.splitlines()[1:] if " -> " in ln and "(" in ln]
  assert planned == ["_blocks.2.weight", "_blocks.10.weight", "0.weight"]
  result = ck.convert_file(path, dst, "pytorch", "flax", dry_run=True)
  assert [c.path for c in result.plan] == planned
  assert [u.path for u in result.unclassified] == ["pos.embed"]


# ---------------------------------------------------------------------------
# 5. Writers store the values, whatever the byte order; refuse what cannot read back


@pytest.mark.parametrize("dtype", [">f4", ">i2", ">f8", ">c8", ">u4"])
@pytest.mark.parametrize("suffix", [".msgpack", ".npz", ".safetensors"])
def test_big_endian_input_keeps_its_values_in_every_output(tmp_path, capsys, dtype, suffix):
  values = (np.arange(24).reshape(4, 6) - 7).astype(dtype)
  src, dst = tmp_path / "be.npz", tmp_path / f"out{suffix}"
  np.savez(src, **{"conv.weight": values.reshape(2, 3, 2, 2), "b": values[0]})
  code, _, err = run_main(capsys, "convert", src, dst, "--from", "pytorch", "--to", "flax")
  assert code == 0, err
  got = ck.load(dst)
  key = "conv.weight"
  np.testing.assert_array_equal(got[key], values.reshape(2, 3, 2, 2).transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(got["b"], values[0])
  if suffix == ".msgpack":
    from flax import serialization

    raw = serialization.msgpack_restore(dst.read_bytes())
    np.testing.assert_array_equal(raw["b"], values[0])


@pytest.mark.parametrize(
  "arr", [np.array(["ab", "c"]), np.array([b"ab"]), np.zeros(2, "V4"), np.zeros(2, "f4,i4")]
)
def test_msgpack_refuses_arrays_that_would_not_read_back(tmp_path, capsys, arr):
  src, dst = tmp_path / "s.npz", tmp_path / "o.msgpack"
  np.savez(src, w=np.ones(3, np.float32), s=arr)
  one_line(
    capsys, "convert", src, dst, "--from", "pytorch", "--to", "flax", needles=["o.msgpack", "'s'"]
  )
  assert not dst.exists() and sorted(os.listdir(tmp_path)) == ["s.npz"]
  with pytest.raises(ck.CheckpointError, match="cannot store"):
    ck.save(dst, {"s": arr})


@SETTINGS
@given(
  dtype=st.sampled_from(
    ["<f4", ">f4", ">i8", "<u2", ">c16", "|b1", ">f2", "bfloat16", "float8_e5m2"]
  ),
  shape=st.lists(st.integers(0, 3), max_size=3).map(tuple),
)
def test_every_writer_stores_the_values(tmp_path, dtype, shape):
  """Written and read back with the formats' own libraries: the same values, any byte order."""
  from flax import serialization

  dt = np.dtype(getattr(ml_dtypes, dtype, dtype))
  arr = (np.arange(int(np.prod(shape))).reshape(shape) % 7 - 3).astype(dt)
  for suffix in (".npz", ".safetensors", ".msgpack"):
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors" and dt.kind == "c" and dt.itemsize == 16:
      continue  # safetensors has no complex128
    ck.save(path, {"a": arr})
    if suffix == ".msgpack":
      back = serialization.msgpack_restore(path.read_bytes())["a"]
    elif suffix == ".npz":
      back = np.load(path)["a"]
      back = back.view(dt.newbyteorder("=")) if back.dtype.kind == "V" else back
    elif dt.type.__module__ == "ml_dtypes":  # safetensors.numpy has no bfloat16 or float8
      back = read_safetensors_plainly(path)["a"]
    else:
      from safetensors.numpy import load_file

      back = load_file(str(path))["a"]
    assert back.shape == arr.shape and back.dtype.newbyteorder("=") == dt.newbyteorder("=")
    np.testing.assert_array_equal(back, arr)


# ---------------------------------------------------------------------------
# 5. Colliding names are an error naming both; no tensor is lost


def test_msgpack_leaves_with_the_same_name_are_refused_naming_both(tmp_path, capsys):
  from flax import serialization

  path = tmp_path / "c.msgpack"
  path.write_bytes(serialization.msgpack_serialize({"a/b": np.ones(2), "a": {"b": np.zeros(2)}}))
  for args in (
    ("inspect", path),
    ("convert", path, tmp_path / "o.safetensors", "--from", "flax", "--to", "pytorch"),
  ):
    line = one_line(capsys, *args, needles=["c.msgpack", "['a/b']", "['a']['b']"])
    assert "a/b" in line
  assert not (tmp_path / "o.safetensors").exists()


def test_nest_with_names_that_nest_to_one_place_names_both(tmp_path, capsys):
  src, dst = tmp_path / "t.npz", tmp_path / "o.msgpack"
  np.savez(src, **{"conv.weight": rand((2, 3, 1, 1), 1), "conv/weight": rand((2, 3, 1, 1), 2)})
  one_line(
    capsys,
    "convert",
    src,
    dst,
    "--from",
    "pytorch",
    "--to",
    "flax",
    "--nest",
    needles=["'conv.weight'", "'conv/weight'"],
  )
  assert not dst.exists()
  # Without --nest the two are two tensors, kept apart in every format.
  for suffix in (".npz", ".safetensors", ".msgpack"):
    out = tmp_path / f"k{suffix}"
    code, _, err = run_main(capsys, "convert", src, out, "--from", "pytorch", "--to", "flax")
    assert code == 0, err
    got = ck.load(out)
    assert {"conv.weight", "conv/weight"} <= set(got) and len(got) == 2


def test_writers_refuse_two_tensors_of_one_name_and_names_that_nest_onto_each_other(tmp_path):
  info = ck.TensorInfo("w", (2,), np.dtype(np.float32))
  for suffix in (".npz", ".safetensors", ".msgpack"):
    path = tmp_path / f"d{suffix}"
    with pytest.raises(ck.CheckpointError, match="two tensors are named 'w'"):
      ck.write_checkpoint(path, [info, info], [np.ones(2, np.float32)] * 2)
    assert not path.exists() and not any(p.name.endswith(".partial") for p in tmp_path.iterdir())
  with pytest.raises(ck.CheckpointError, match="__metadata__"):
    ck.save(tmp_path / "m.safetensors", {"__metadata__": np.ones(1), "w": np.ones(1)})
  with pytest.raises(ck.CheckpointError, match=r"'a'.*'a/b'"):
    ck.save(tmp_path / "n.msgpack", {"a": np.ones(1), "a/b": np.ones(1)})
  with pytest.raises(ck.CheckpointError, match=r"'a/b/c'.*'a/b'"):
    ck.unflatten(["a/b/c", "a/b"], [1, 2])


def test_pickle_entries_with_the_same_dotted_name_are_refused(tmp_path, capsys):
  torch = pytest.importorskip("torch")
  path = tmp_path / "c.pt"
  torch.save({"a.b": torch.ones(2), "a": {"b": torch.zeros(2)}}, path)
  one_line(capsys, "inspect", path, "--allow-pickle", needles=["c.pt", "['a.b']", "['a']['b']"])


# ---------------------------------------------------------------------------
# 6. File-system faults


def test_no_overwrite_is_atomic_when_another_writer_publishes_first(tmp_path):
  """Writer A checks, B writes the same new file, A publishes: A must fail, B's file stays."""
  path = tmp_path / "out.npz"
  info = ck.TensorInfo("w", (3,), np.dtype(np.float32))

  def a_arrays():
    ck.write_checkpoint(path, [info], [np.full(3, 2.0, np.float32)], replace=False)  # B
    yield np.ones(3, np.float32)

  with pytest.raises(ck.CheckpointError, match=r"out\.npz' exists"):
    ck.write_checkpoint(path, [info], a_arrays(), replace=False)
  np.testing.assert_array_equal(np.load(path)["w"], np.full(3, 2.0))
  assert os.listdir(tmp_path) == ["out.npz"]


def test_two_concurrent_converts_to_one_new_file_exactly_one_wins(tmp_path):
  src = tmp_path / "src.npz"
  np.savez(src, **{f"t{i}.weight": rand((64, 64, 3, 3), i) for i in range(4)})
  # Both processes wait on a barrier file so that their writes overlap.
  script = textwrap.dedent(
    """
    import os, sys, time
    from flipconv import checkpoints as ck, cli
    go, read = sys.argv[1], ck.NpzReader.read
    def slow(self, name):
      open(f"{go}.{os.getpid()}", "w").close()
      while not os.path.exists(go):
        time.sleep(0.01)
      return read(self, name)
    ck.NpzReader.read = slow
    sys.exit(cli.main(sys.argv[2:]))
    """
  )
  go, dst = tmp_path / "go", tmp_path / "dst.npz"  # each process says it is ready in go.PID
  args = [
    sys.executable,
    "-c",
    script,
    go,
    "convert",
    src,
    dst,
    "--from",
    "pytorch",
    "--to",
    "flax",
  ]
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  procs = [
    subprocess.Popen(list(map(str, args)), stderr=subprocess.PIPE, text=True, env=env)
    for _ in range(2)
  ]
  deadline = time.monotonic() + 100
  while len([p for p in os.listdir(tmp_path) if p.startswith("go.")]) < 2:
    assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
    time.sleep(0.05)
  go.touch()
  results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
  codes = sorted(code for code, _ in results)
  assert codes == [0, 2], results
  loser = next(err for code, err in results if code == 2)
  assert "dst.npz' exists" in loser and "Traceback" not in loser
  assert sorted(p for p in os.listdir(tmp_path) if not p.startswith("go")) == ["dst.npz", "src.npz"]
  np.testing.assert_array_equal(
    np.load(dst)["t0.weight"], np.load(src)["t0.weight"].transpose(2, 3, 1, 0)
  )


@pytest.mark.parametrize("how", ["library", "cli"])
def test_sigterm_mid_write_removes_the_partial_file(tmp_path, how):
  script = textwrap.dedent(
    """
    import sys, time, numpy as np
    from flipconv import checkpoints as ck, cli
    src, dst, how = sys.argv[1:4]
    read = ck.NpzReader.read
    def slow(self, name):
      if name == "b":
        print("writing", flush=True)
        time.sleep(60)
      return read(self, name)
    ck.NpzReader.read = slow
    if how == "cli":
      sys.exit(cli.main(["convert", src, dst, "--from", "pytorch", "--to", "flax"]))
    ck.convert_file(src, dst, "pytorch", "flax")
    """
  )
  src, dst = tmp_path / "src.npz", tmp_path / "dst.safetensors"
  np.savez(src, a=rand((1000, 1000)), b=rand((10,)))
  proc = subprocess.Popen(
    [sys.executable, "-c", script, str(src), str(dst), how],
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  assert proc.stdout.readline().strip() == "writing"
  assert any(p.name.endswith(".partial") for p in tmp_path.iterdir())
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == 143, err
  assert "Traceback" not in err
  assert sorted(os.listdir(tmp_path)) == ["src.npz"]
  if how == "cli":
    assert err.strip() == "flipconv convert: terminated"


def test_messages_name_the_users_paths_never_the_temporary_file(tmp_path, capsys):
  src = tmp_path / "a.npz"
  np.savez(src, w=rand((2, 3, 1, 1)))
  folder = tmp_path / "isdir.safetensors"
  folder.mkdir()
  line = one_line(
    capsys,
    "convert",
    src,
    folder,
    "--from",
    "pytorch",
    "--to",
    "flax",
    "--force",
    needles=["isdir.safetensors", "directory"],
  )
  assert ".partial" not in line
  # A write that fails half-way (a full disk) names the output, and leaves nothing behind.
  info = ck.TensorInfo("w", (3,), np.dtype(np.float32))

  def full():
    yield np.ones(3, np.float32)
    raise OSError(28, "No space left on device")

  dst = tmp_path / "o.npz"
  with pytest.raises(ck.CheckpointError) as e:
    ck.write_checkpoint(dst, [info, ck.TensorInfo("v", (3,), info.dtype)], full())
  assert "o.npz" in str(e.value) and "No space left" in str(e.value)
  assert ".partial" not in str(e.value)
  assert sorted(os.listdir(tmp_path)) == ["a.npz", "isdir.safetensors"]
