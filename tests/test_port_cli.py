"""`flipconv convert --like` and `--nest` against PyTorch: a file in, a Flax model out, no glue."""

from __future__ import annotations

import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest
from flax import serialization

from _reference import rel_err
from flipconv import checkpoints, cli

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

C, H, W = 6, 4, 4


class TorchNet(torch.nn.Module):
  """Conv, BatchNorm (with running statistics), PReLU, flatten into a Linear."""

  def __init__(self):
    super().__init__()
    self.conv = torch.nn.Conv2d(3, C, 3, padding=1)
    self.bn = torch.nn.BatchNorm2d(C)
    self.act = torch.nn.PReLU()
    self.fc = torch.nn.Linear(C * H * W, 5)

  def forward(self, x):
    x = self.act(self.bn(self.conv(x)))
    return self.fc(torch.flatten(x, 1))


class FlaxNet(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.Conv(C, (3, 3), padding=1, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-5, name="bn")(x)
    x = nn.PReLU(name="act")(x)
    return nn.Dense(5, name="fc")(x.reshape(x.shape[0], -1))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("port")
  torch.manual_seed(0)
  net = TorchNet()
  net.train()
  with torch.no_grad():  # running statistics that are not the initial 0 and 1
    for _ in range(3):
      net(torch.randn(8, 3, H, W) * 2 + 1)
    net.act.weight.fill_(0.1)
  net.eval()
  x = np.random.default_rng(1).standard_normal((2, 3, H, W)).astype(np.float32)
  with torch.no_grad():
    want = net(torch.from_numpy(x)).numpy()
  src = tmp / "model.safetensors"
  safetensors_torch.save_file(net.state_dict(), str(src))
  like = FlaxNet().init(jax.random.key(0), x.transpose(0, 2, 3, 1))
  template = tmp / "template.msgpack"
  template.write_bytes(serialization.to_bytes(like))
  return tmp, src, template, like, x, want


def run(*args):
  return subprocess.run(
    [sys.executable, "-m", "flipconv", *map(str, args)], capture_output=True, text=True, timeout=300
  )


def test_like_round_trip_equals_torch(setup):
  tmp, src, template, like, x, want = setup
  dst = tmp / "flax.msgpack"
  done = run(
    "convert", src, dst, "--from", "pytorch", "--to", "flax", "--like", template,
    "--flatten", f"fc=CHW:HWC:C={C},H={H},W={W}",
  )  # fmt: skip
  assert done.returncode == 0, done.stderr
  variables = serialization.from_bytes(like, dst.read_bytes())
  assert jax.tree.structure(variables) == jax.tree.structure(like)
  assert float(variables["batch_stats"]["bn"]["var"].min()) != 1.0  # real statistics arrived
  y = FlaxNet().apply(variables, x.transpose(0, 2, 3, 1))
  assert rel_err(y, want) < 1e-5
  # Without the flatten order: a warning on stderr naming the layer, and wrong logits.
  naive = tmp / "naive.msgpack"
  done = run("convert", src, naive, "--from", "pytorch", "--to", "flax", "--like", template)
  assert done.returncode == 0, done.stderr
  assert "FlattenWarning" in done.stderr and "'fc'" in done.stderr
  y = FlaxNet().apply(serialization.from_bytes(like, naive.read_bytes()), x.transpose(0, 2, 3, 1))
  assert rel_err(y, want) > 0.1


def test_like_dry_run_prints_the_plan_in_file_names_and_writes_nothing(setup, capsys):
  tmp, src, template, *_ = setup
  dst = tmp / "dry.msgpack"
  args = ["convert", str(src), str(dst), "--from", "pytorch", "--to", "flax"]
  args += ["--like", str(template), "--flatten", f"fc=CHW:HWC:C={C},H={H},W={W}", "--dry-run"]
  assert cli.main(args) == 0
  out = capsys.readouterr().out
  assert not dst.exists() and "nothing written." in out
  rows = [line.split() for line in out.splitlines() if "<-" in line]
  targets = [r[0] for r in rows]
  # One row per template leaf, in the template's (init) order, with the file's names.
  assert targets[:2] == ["params/conv/kernel", "params/conv/bias"]
  assert "batch_stats/bn/var" in targets and len(targets) == 9
  sources = dict((r[0], r[2]) for r in rows)
  assert sources["batch_stats/bn/var"] == "bn.running_var"
  assert sources["params/act/negative_slope"] == "act.weight"


def test_like_mismatch_is_one_line_and_exit_2(setup, tmp_path):
  _, src, _, _, x, _ = setup

  class Other(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Conv(C + 1, (3, 3), padding=1, name="conv")(x)

  template = tmp_path / "other.msgpack"
  template.write_bytes(
    serialization.to_bytes(Other().init(jax.random.key(0), x.transpose(0, 2, 3, 1)))
  )
  dst = tmp_path / "out.msgpack"
  done = run("convert", src, dst, "--from", "pytorch", "--to", "flax", "--like", template)
  assert done.returncode == 2 and not dst.exists()
  assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
  assert "params/conv/kernel" in done.stderr


def test_like_refuses_a_non_msgpack_template_or_output(setup, tmp_path):
  _, src, template, *_ = setup
  with pytest.raises(checkpoints.CheckpointError, match=r"only \.msgpack"):
    checkpoints.port_file(src, tmp_path / "x.npz", "pytorch", "flax", like_path=template)
  with pytest.raises(checkpoints.CheckpointError, match=r"template must be a \.msgpack"):
    checkpoints.port_file(src, tmp_path / "x.msgpack", "pytorch", "flax", like_path=src)
  bad = run("convert", src, tmp_path / "y.msgpack", "--from", "pytorch", "--to", "flax",
            "--flatten", "fc=CHW:HWC:C=6,H=4,W=4")  # fmt: skip
  assert bad.returncode == 2 and "only with --like" in bad.stderr


@pytest.mark.parametrize("text", ["fc", "fc=CHW:HWC", "fc=CHW:HWC:C=x", "=CHW:HWC:C=1"])
def test_flatten_option_parse_errors(text, capsys):
  with pytest.raises(SystemExit) as exit_:
    cli.build_parser().parse_args(
      ["convert", "a.npz", "b.msgpack", "--from", "pytorch", "--to", "flax", "--flatten", text]
    )
  assert exit_.value.code == 2  # argparse's usage error, not --help's 0
  err = capsys.readouterr().err
  assert "--flatten" in err and repr(text) in err, err


def test_nest_maps_batchnorm_into_params_and_batch_stats(setup, tmp_path):
  src = setup[1]
  dst = tmp_path / "nested.msgpack"
  done = run("convert", src, dst, "--from", "pytorch", "--to", "flax", "--nest")
  assert done.returncode == 0, done.stderr
  variables = serialization.msgpack_restore(dst.read_bytes())
  assert set(variables) == {"params", "batch_stats"}
  assert set(variables["params"]["bn"]) == {"scale", "bias"}
  assert set(variables["batch_stats"]["bn"]) == {"mean", "var"}
  assert "num_batches_tracked" not in str(jax.tree_util.tree_structure(variables))
  assert set(variables["params"]["act"]) == {"negative_slope"}
  # The values are the file's (as safetensors itself reads them), renamed; only the kernels
  # are re-laid-out.
  ported = {k: v.numpy() for k, v in safetensors_torch.load_file(str(src)).items()}
  np.testing.assert_array_equal(variables["batch_stats"]["bn"]["var"], ported["bn.running_var"])
  np.testing.assert_array_equal(
    variables["params"]["conv"]["kernel"], ported["conv.weight"].transpose(2, 3, 1, 0)
  )
