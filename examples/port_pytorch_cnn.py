"""Port a PyTorch CNN to Flax, two ways, and check that all three give the same logits.

The story: someone hands you a PyTorch model (here a small CNN with random,
seeded weights: a 3x3 conv, a depthwise conv, a strided conv, a transposed
conv that upsamples, a flatten and a linear head) as a ``.safetensors`` file.
You want to run it in JAX.

(a) Convert the weights to Flax's conventions with the command line
    (``flipconv convert model.safetensors model_flax.msgpack --from pytorch
    --to flax``) and load them into a model of plain ``flax.linen`` layers
    (NHWC). Two things need saying: the transposed conv is named ``up``, which
    the automatic selection cannot recognise (``--select 'up.weight=conv_transpose'``),
    and the linear head reads a *flattened* feature map, which PyTorch flattens
    in (C, H, W) order and an NHWC model in (H, W, C) order: the head's kernel
    needs ``fc.convert_linear_kernel(..., feature_shape=(C, H, W))``. The
    example shows what you get if you forget.
(b) Keep the weights exactly as PyTorch stores them and use
    ``fc.linen.Conv`` / ``fc.linen.ConvTranspose`` with
    ``convention="pytorch"`` (NCHW input, OIHW kernels, PyTorch's padding
    arithmetic). The head is a ``flax.linen.Einsum`` that holds the
    ``(out, in)`` weight unchanged.

In both cases ``fc.nest_params`` turns the flat ``{"conv1.weight": ...}`` names
into the nested ``{"conv1": {"kernel": ...}}`` tree that linen expects.

Run it (needs torch and safetensors):

    python examples/port_pytorch_cnn.py

It prints each step and a line per check; exit code 0 only if all hold.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import safetensors.torch
import torch
from flax import serialization

import flipconv as fc
from flipconv import cli

N, C_IN, H, W = 2, 3, 8, 12  # a non-square input, so that H and W cannot be swapped silently
C_UP = 4  # channels of the feature map that is flattened
N_CLASSES = 10
TOL = 1e-5  # max |difference| / max |torch logits|: float32 rounding only
# What the names do not say: `up` is a transposed conv. Globs, first match wins.
SELECT = {"up.weight": "conv_transpose", "*": "auto"}


class TorchNet(torch.nn.Module):
  """The model as trained in PyTorch (NCHW)."""

  def __init__(self):
    super().__init__()
    self.conv1 = torch.nn.Conv2d(C_IN, 8, 3, padding=1)
    self.depthwise = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
    self.down = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)
    self.up = torch.nn.ConvTranspose2d(16, C_UP, 3, stride=2, padding=1, output_padding=1)
    self.head = torch.nn.Linear(C_UP * H * W, N_CLASSES)

  def forward(self, x):
    x = torch.relu(self.conv1(x))
    x = torch.relu(self.depthwise(x))
    x = torch.relu(self.down(x))
    x = torch.relu(self.up(x))
    return self.head(torch.flatten(x, 1))  # flattens (C, H, W)


class FlaxNet(nn.Module):
  """(a) Plain flax.linen layers, NHWC, weights converted to Flax's conventions."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(8, (3, 3), padding=1, name="conv1")(x))
    x = nn.relu(nn.Conv(8, (3, 3), padding=1, feature_group_count=8, name="depthwise")(x))
    x = nn.relu(nn.Conv(16, (3, 3), strides=2, padding=1, name="down")(x))
    # Flax pads the stride-dilated input: PyTorch's (k=3, padding=1, output_padding=1)
    # is (k - 1 - padding, k - 1 - padding + output_padding) = (1, 2) there.
    x = nn.relu(nn.ConvTranspose(C_UP, (3, 3), strides=2, padding=((1, 2), (1, 2)), name="up")(x))
    return nn.Dense(N_CLASSES, name="head")(x.reshape(x.shape[0], -1))  # flattens (H, W, C)


class PortedNet(nn.Module):
  """(b) flipconv layers in PyTorch's convention: NCHW, PyTorch's weights as they are."""

  @nn.compact
  def __call__(self, x):
    conv = lambda *a, **kw: fc.linen.Conv(*a, convention="pytorch", **kw)
    x = nn.relu(conv(8, (3, 3), padding=1, name="conv1")(x))
    x = nn.relu(conv(8, (3, 3), padding=1, feature_group_count=8, name="depthwise")(x))
    x = nn.relu(conv(16, (3, 3), strides=2, padding=1, name="down")(x))
    # PyTorch's own numbers: padding is the forward conv's, as in torch.
    x = nn.relu(
      fc.linen.ConvTranspose(
        C_UP, (3, 3), strides=2, padding=1, output_padding=1, convention="pytorch", name="up"
      )(x)
    )
    x = x.reshape(x.shape[0], -1)  # NCHW: flattens (C, H, W), like torch
    # nn.Linear's weight is (out, in): an Einsum holds it unchanged.
    return nn.Einsum((N_CLASSES, C_UP * H * W), "ni,oi->no", name="head")(x)


def rel_err(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def check(checks: list[bool], ok: bool, claim: str) -> None:
  checks.append(bool(ok))
  print(f"  {'ok' if ok else 'FAILED':6s} {claim}")


def convert_with_cli(src: Path, dst: Path) -> int:
  """``flipconv convert`` as a user runs it in a shell; returns its exit code."""
  args = ["convert", str(src), str(dst), "--from", "pytorch", "--to", "flax"]
  for glob, kind in SELECT.items():
    args += ["--select", f"{glob}={kind}"]
  print("  $ flipconv " + " ".join(a if "=" not in a else f"'{a}'" for a in args))
  # The `flipconv` console script is flipconv.cli:main; calling it here saves starting a
  # second Python (`python -m flipconv.cli ...` in a subprocess does the same).
  print("  ", end="", flush=True)
  return cli.main(args)


def main(argv: list[str] | None = None) -> int:
  # On a GPU or TPU a float32 conv may run in reduced precision (TF32, bf16 passes); the
  # checks compare with float32/float64 references on the CPU, so ask for full float32.
  with jax.default_matmul_precision("float32"):
    return _main(argv)


def _main(argv: list[str] | None) -> int:
  del argv  # no options
  torch.manual_seed(0)
  net = TorchNet().eval()
  x = np.random.default_rng(0).standard_normal((N, C_IN, H, W)).astype(np.float32)  # NCHW
  with torch.no_grad():
    y_torch = net(torch.from_numpy(x)).numpy()
  sd = {k: v.numpy() for k, v in net.state_dict().items()}  # what the file will hold
  print(f"PyTorch model: input {x.shape} (NCHW) -> logits {y_torch.shape}; state_dict:")
  for k, v in sd.items():
    print(f"  {k:18s} {v.shape}")
  checks: list[bool] = []

  with tempfile.TemporaryDirectory() as tmp:
    src, dst = Path(tmp) / "model.safetensors", Path(tmp) / "model_flax.msgpack"
    safetensors.torch.save_file(net.state_dict(), str(src))

    print("\n(a) Convert the file to Flax's conventions, load into plain flax.linen layers")
    if convert_with_cli(src, dst) != 0:
      print("flipconv convert failed.")
      return 1
    print("  the plan, as fc.plan_params(state_dict, 'pytorch', 'flax', select=SELECT) says:")
    plan = fc.plan_params(sd, "pytorch", "flax", select=SELECT)
    print("    " + str(plan).replace("\n", "\n    "))
    flat = serialization.msgpack_restore(dst.read_bytes())  # {"conv1.weight": ..., ...}

  # The same conversion in memory: the file holds exactly what convert_params returns.
  in_memory = fc.convert_params(sd, "pytorch", "flax", select=SELECT)
  same_as_file = flat.keys() == sd.keys() and all(np.array_equal(flat[k], in_memory[k]) for k in sd)

  params = fc.nest_params(flat)  # {"conv1": {"kernel": HWIO, "bias": ...}, ...}
  x_nhwc = x.transpose(0, 2, 3, 1)
  flax_net = jax.jit(FlaxNet().apply)  # one compiled program instead of op-by-op dispatch
  y_naive = flax_net({"params": params}, x_nhwc)
  # The flatten trap: the head's inputs are a (C, H, W) flatten in torch, (H, W, C) here.
  params["head"]["kernel"] = fc.convert_linear_kernel(
    sd["head.weight"], "pytorch", "flax", feature_shape=(C_UP, H, W)
  )
  y_flax = flax_net({"params": params}, x_nhwc)
  print(
    f"  head converted as a plain dense kernel (OI -> IO only): relative error "
    f"{rel_err(y_naive, y_torch):.2f}  <- the NCHW vs NHWC flatten trap"
  )
  print(
    f"  head converted with feature_shape=(C, H, W) = {(C_UP, H, W)}: relative error "
    f"{rel_err(y_flax, y_torch):.1e}"
  )

  print("\n(b) PyTorch's weights unchanged in fc.linen layers with convention='pytorch'")
  ported = fc.nest_params(sd)  # only the names change: {"conv1": {"kernel": OIHW, ...}}
  # The model's own params, shapes only (eval_shape: nothing is initialised or compiled).
  shapes_as_init = jax.tree_util.tree_map(
    lambda a: a.shape, jax.eval_shape(PortedNet().init, jax.random.key(0), x)["params"]
  )
  shapes_ok = jax.tree_util.tree_map(lambda a: a.shape, ported) == shapes_as_init
  y_ported = jax.jit(PortedNet().apply)({"params": ported}, x)
  kernels = ", ".join(f"{m} {p['kernel'].shape}" for m, p in ported.items())
  print(f"  kernels as stored by PyTorch: {kernels}")
  print(f"  relative error against torch: {rel_err(y_ported, y_torch):.1e}")

  print("\nChecks:")
  check(
    checks,
    same_as_file,
    "the CLI's file holds exactly what fc.convert_params returns (same names, same arrays)",
  )
  check(
    checks,
    rel_err(y_naive, y_torch) > 0.1,
    "without feature_shape, the converted head gives wrong logits (the flatten trap)",
  )
  check(
    checks,
    rel_err(y_flax, y_torch) < TOL,
    f"torch == flax.linen with converted weights (relative error < {TOL:g})",
  )
  check(
    checks,
    shapes_ok,
    "PyTorch's state_dict has exactly the shapes of the fc.linen model's own params",
  )
  check(
    checks,
    rel_err(y_ported, y_torch) < TOL,
    f"torch == fc.linen convention='pytorch' with unchanged weights (relative error < {TOL:g})",
  )
  check(checks, rel_err(y_ported, y_flax) < TOL, f"both JAX ports agree (relative error < {TOL:g})")
  ok = all(checks)
  print("All checks held." if ok else "Some checks FAILED.")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
