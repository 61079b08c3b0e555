"""The ``flipconv`` command line, run as a user runs it: the installed entry point.

Outputs are read back with the formats' own libraries and compared with
permutations written out by hand; the ``--dry-run`` plan is checked against
the file that ``convert`` then writes.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

from flipconv import checkpoints as ck

FLIPCONV = (
  [shutil.which("flipconv")] if shutil.which("flipconv") else [sys.executable, "-m", "flipconv.cli"]
)


def flipconv(*args, cwd=None) -> subprocess.CompletedProcess:
  return subprocess.run(
    [*FLIPCONV, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120
  )


def rand(shape, seed=0, dtype=np.float32):
  return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def torch_state():
  return {
    "encoder.conv.weight": rand((6, 3, 3, 3), 1),
    "encoder.conv.bias": rand((6,), 2),
    "encoder.bn.num_batches_tracked": np.array(4, np.int64),
    "decoder.deconv.weight": rand((6, 2, 4, 4), 3),
    "head.weight": rand((5, 6), 4),
    "head.bias": rand((5,), 5),
  }


def write_safetensors(path, tensors, metadata=None):
  st = pytest.importorskip("safetensors.numpy")
  st.save_file(tensors, str(path), metadata=metadata)


def header_names(path):
  raw = path.read_bytes()
  (n,) = struct.unpack("<Q", raw[:8])
  return [k for k in json.loads(raw[8 : 8 + n]) if k != "__metadata__"]


def one_error_line(result, *needles):
  assert result.returncode == 2, (result.stdout, result.stderr)
  lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
  assert "Traceback" not in result.stderr
  assert any(all(n in ln for n in needles) for ln in lines), result.stderr
  return lines


def test_convert_safetensors_pytorch_to_flax(tmp_path):
  st = pytest.importorskip("safetensors.numpy")
  from safetensors import safe_open

  src, dst = tmp_path / "torch.safetensors", tmp_path / "flax.safetensors"
  sd = torch_state()
  write_safetensors(src, sd, {"format": "pt"})
  before = src.read_bytes()
  result = flipconv("convert", src, dst, "--from", "pytorch", "--to", "flax")
  assert result.returncode == 0, result.stderr
  assert "wrote" in result.stdout and "3 converted (1 flipped)" in result.stdout
  assert src.read_bytes() == before
  out = st.load_file(str(dst))
  np.testing.assert_array_equal(
    out["encoder.conv.weight"], sd["encoder.conv.weight"].transpose(2, 3, 1, 0)
  )
  # PyTorch ConvTranspose (in, out, kh, kw) -> Flax ConvTranspose (kh, kw, in, out), flipped.
  np.testing.assert_array_equal(
    out["decoder.deconv.weight"], sd["decoder.deconv.weight"].transpose(2, 3, 0, 1)[::-1, ::-1]
  )
  np.testing.assert_array_equal(out["head.weight"], sd["head.weight"].T)
  for k in ("encoder.conv.bias", "encoder.bn.num_batches_tracked", "head.bias"):
    np.testing.assert_array_equal(out[k], sd[k])
  with safe_open(str(dst), "numpy") as f:
    assert f.metadata() == {"format": "pt"}
  assert header_names(dst) == header_names(src)  # tensor order kept


def test_dry_run_prints_the_plan_that_convert_then_carries_out(tmp_path):
  src, dst = tmp_path / "a.npz", tmp_path / "b.npz"
  sd = torch_state()
  np.savez(src, **sd)
  dry = flipconv("convert", src, dst, "--from", "lasagne", "--to", "tensorflow", "--dry-run")
  assert dry.returncode == 0, dry.stderr
  assert not dst.exists() and "nothing written" in dry.stdout
  planned = {}
  for line in dry.stdout.splitlines():
    m = re.match(r"(\S+)\s+(conv|conv_transpose|linear)\s+(\(.*?\))\s+->\s+(\(.*?\))\s+(.*)$", line)
    if m:
      planned[m[1]] = (m[2], ast.literal_eval(m[3]), ast.literal_eval(m[4]), m[5])
  # Named as in the file, in its order; head.weight is IO dense in both conventions.
  assert list(planned) == ["encoder.conv.weight", "decoder.deconv.weight"]
  real = flipconv("convert", src, dst, "--from", "lasagne", "--to", "tensorflow")
  assert real.returncode == 0, real.stderr
  out = np.load(dst)
  for name, (_, old, new, what) in planned.items():
    assert sd[name].shape == old and out[name].shape == new
    assert "flip H W" in what  # Lasagne's true convolution -> TensorFlow's correlation
    perm = tuple(int(a) for a in re.search(r"transpose \(([\d, ]+)\)", what)[1].split(","))
    expected = sd[name].transpose(perm)[::-1, ::-1]  # HWIO: spatial axes first
    np.testing.assert_array_equal(out[name], expected)
  assert planned["decoder.deconv.weight"][0] == "conv_transpose"
  np.testing.assert_array_equal(out["head.weight"], sd["head.weight"])


def test_existing_dst_needs_force_and_src_is_never_the_dst(tmp_path):
  src, dst = tmp_path / "a.npz", tmp_path / "b.npz"
  np.savez(src, **torch_state())
  dst.write_bytes(b"precious")
  one_error_line(
    flipconv("convert", src, dst, "--from", "pytorch", "--to", "flax"), "b.npz", "--force"
  )
  assert dst.read_bytes() == b"precious"
  assert (
    flipconv("convert", src, dst, "--from", "pytorch", "--to", "flax", "--force").returncode == 0
  )
  assert np.load(dst)["head.weight"].shape == (6, 5)
  one_error_line(
    flipconv("convert", src, src, "--from", "pytorch", "--to", "flax", "--force"), "input file"
  )


def test_pickle_is_refused_unless_allowed(tmp_path):
  pt = tmp_path / "model.pt"
  pt.write_bytes(b"\x80\x04K\x01.")
  one_error_line(
    flipconv("convert", pt, tmp_path / "out.npz", "--from", "pytorch", "--to", "flax"),
    "model.pt",
    "pickle",
    "--allow-pickle",
  )
  torch = pytest.importorskip("torch")
  torch.save({"conv.weight": torch.randn(4, 3, 2, 2)}, pt)
  result = flipconv(
    "convert", pt, tmp_path / "out.npz", "--from", "pytorch", "--to", "flax", "--allow-pickle"
  )
  assert result.returncode == 0, result.stderr
  np.testing.assert_array_equal(
    np.load(tmp_path / "out.npz")["conv.weight"],
    torch.load(pt)["conv.weight"].numpy().transpose(2, 3, 1, 0),
  )


def test_bad_files_give_one_line_and_exit_2(tmp_path):
  good = tmp_path / "good.safetensors"
  ck.save(good, torch_state())
  cut = tmp_path / "cut.safetensors"
  cut.write_bytes(good.read_bytes()[:-50])
  one_error_line(flipconv("inspect", cut), "cut.safetensors", "truncated")
  empty = tmp_path / "empty.npz"
  empty.write_bytes(b"")
  one_error_line(
    flipconv("convert", empty, tmp_path / "o.npz", "--from", "pytorch", "--to", "flax"),
    "empty.npz",
    "not a valid npz",
  )
  one_error_line(flipconv("inspect", tmp_path / "notes.txt"), "notes.txt", "unsupported")


def test_unknown_convention_lists_the_known_ones(tmp_path):
  result = flipconv("convert", "a.npz", "b.npz", "--from", "pytroch", "--to", "flax")
  assert result.returncode == 2
  assert "pytroch" in result.stderr and "Known:" in result.stderr and "lasagne" in result.stderr


def test_inspect_shows_tensors_and_the_plan(tmp_path):
  src = tmp_path / "m.safetensors"
  sd = torch_state() | {"pos_embed": rand((1, 4, 6), 9)}
  ck.save(src, sd, metadata={"format": "pt"})
  plain = flipconv("inspect", src)
  assert plain.returncode == 0, plain.stderr
  n_params = sum(v.size for v in sd.values())
  assert f"{len(sd)} tensors, {n_params:,} parameters" in plain.stdout
  assert "metadata format = pt" in plain.stdout
  assert re.search(r"encoder\.conv\.weight\s+float32\s+\(6, 3, 3, 3\)", plain.stdout)
  planned = flipconv("inspect", src, "--from", "pytorch", "--to", "flax")
  assert planned.returncode == 0, planned.stderr
  lines = {ln.split()[0]: ln for ln in planned.stdout.splitlines()[2:] if ln.strip()}
  assert "conv -> (3, 3, 3, 6)" in lines["encoder.conv.weight"]
  assert "conv_transpose -> (4, 4, 6, 2)" in lines["decoder.deconv.weight"]
  assert "linear -> (6, 5)" in lines["head.weight"]
  assert lines["head.bias"].rstrip().endswith("-")
  assert "? rank 3" in lines["pos_embed"]


def test_select_rules(tmp_path):
  src, dst = tmp_path / "a.npz", tmp_path / "b.npz"
  np.savez(src, **torch_state())
  # The deconv as a plain conv, everything else by name: first match wins.
  result = flipconv(
    "convert",
    src,
    dst,
    "--from",
    "pytorch",
    "--to",
    "flax",
    "--select",
    "decoder.*=conv",
    "--select",
    "*=auto",
  )
  assert result.returncode == 0, result.stderr
  assert np.load(dst)["decoder.deconv.weight"].shape == (4, 4, 2, 6)  # HWIO, not HWOI
  one_error_line(
    flipconv(
      "convert",
      src,
      tmp_path / "c.npz",
      "--from",
      "pytorch",
      "--to",
      "flax",
      "--select",
      "enc/*/kernel=conv",
    ),
    "'enc/*/kernel'",
    "matches no",
  )
  bad = flipconv("convert", src, dst, "--from", "pytorch", "--to", "flax", "--select", "x=y")
  assert bad.returncode == 2 and "GLOB=KIND" in bad.stderr


def test_npz_to_flax_msgpack_and_back(tmp_path):
  from flax import serialization

  src = tmp_path / "a.npz"
  sd = torch_state()
  np.savez(src, **sd)
  assert (
    flipconv("convert", src, tmp_path / "f.msgpack", "--from", "pytorch", "--to", "flax").returncode
    == 0
  )
  tree = serialization.msgpack_restore((tmp_path / "f.msgpack").read_bytes())
  np.testing.assert_array_equal(
    tree["encoder.conv.weight"], sd["encoder.conv.weight"].transpose(2, 3, 1, 0)
  )
  back = flipconv(
    "convert", tmp_path / "f.msgpack", tmp_path / "b.npz", "--from", "flax", "--to", "pytorch"
  )
  assert back.returncode == 0, back.stderr
  out = np.load(tmp_path / "b.npz")
  for k, v in sd.items():
    np.testing.assert_array_equal(out[k], v)


def test_demo_converts_a_checkpoint_and_checks_it():
  result = flipconv("demo")
  assert result.returncode == 0, result.stdout + result.stderr
  assert "Converting a checkpoint" in result.stdout
  assert "FAILED" not in result.stdout and "All checks held." in result.stdout
  assert "does not even fit" in result.stdout and "computes something else" in result.stdout


def test_nest_writes_the_params_a_flax_module_takes(tmp_path):
  nn = pytest.importorskip("flax.linen")
  from flax import serialization

  state = {"conv1.weight": rand((8, 3, 3, 3), 1), "conv1.bias": rand((8,), 2)}
  np.savez(tmp_path / "torch.npz", **state)
  dst = tmp_path / "flax.msgpack"
  done = flipconv(
    "convert", tmp_path / "torch.npz", dst, "--from", "pytorch", "--to", "flax", "--nest"
  )
  assert done.returncode == 0, done.stderr
  variables = serialization.msgpack_restore(dst.read_bytes())
  assert set(variables) == {"params"}  # no norm layer: no batch_stats
  params = variables["params"]
  assert set(params) == {"conv1"} and set(params["conv1"]) == {"kernel", "bias"}
  assert params["conv1"]["kernel"].shape == (3, 3, 3, 8)
  x = rand((2, 6, 6, 3), 3)  # NHWC
  y = nn.Conv(8, (3, 3), padding=1).apply({"params": params["conv1"]}, x)
  # The same layer in PyTorch's terms: correlation of NCHW x with the OIHW weight.
  import flipconv as fc

  want = fc.conv(x.transpose(0, 3, 1, 2), state["conv1.weight"], convention="pytorch", padding=1)
  want = np.asarray(want) + state["conv1.bias"][:, None, None]
  np.testing.assert_allclose(np.asarray(y), want.transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)
  # Only a msgpack holds nested params.
  bad = flipconv(
    "convert",
    tmp_path / "torch.npz",
    tmp_path / "x.npz",
    "--from",
    "pytorch",
    "--to",
    "flax",
    "--nest",
  )
  assert bad.returncode == 2 and "msgpack" in bad.stderr and not (tmp_path / "x.npz").exists()
