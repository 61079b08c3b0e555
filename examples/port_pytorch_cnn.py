"""Port a PyTorch CNN to Flax, two ways, and check that all of them give the same logits.

The story: someone hands you a PyTorch model (here a small CNN with random,
seeded weights: a 3x3 conv, a depthwise conv, a strided conv, a transposed
conv that upsamples, a flatten and a linear head) as a ``.safetensors`` file.
You want to run it in JAX. You write the Flax model; flipconv fills it.

(a) Plain ``flax.linen`` layers (NHWC). One call fills the model's variables
    from the ``state_dict`` (torch tensors as they are)::

        variables = fc.convert_params(state_dict, "pytorch", "flax", like=variables,
                                      flatten={"head": ("CHW", "HWC", {"C": 4, "H": 8, "W": 12})})

    Every layer of the Flax model is matched to one PyTorch module (here by
    name), every kernel converted as its layer needs (``up`` is found to be a
    transposed conv by its shape), every shape checked. The one thing no
    weight file says is the order of the flatten before the linear head:
    PyTorch flattens NCHW in (C, H, W) order, an NHWC model in (H, W, C)
    order. ``flatten=`` says it; without it flipconv warns, and the example
    shows the wrong logits you would get. The same from the command line:
    ``flipconv convert model.safetensors model.msgpack --from pytorch --to flax
    --like template.msgpack --flatten 'head=CHW:HWC:C=4,H=8,W=12'``, then
    ``flax.serialization.from_bytes(variables, data)``.
(b) Keep the weights exactly as PyTorch stores them and use
    ``fc.linen.Conv`` / ``fc.linen.ConvTranspose`` with
    ``convention="pytorch"`` (NCHW input, OIHW kernels, PyTorch's padding
    arithmetic). The head is a ``flax.linen.Einsum`` that holds the
    ``(out, in)`` weight unchanged; ``like=`` does the renaming.

Run it (needs torch and safetensors):

    python examples/port_pytorch_cnn.py [--out DIR]

``--out DIR`` keeps the files it writes there (``model.safetensors``,
``template.msgpack``, ``model_flax.msgpack``) instead of in a temporary folder.
It prints each step and a line per check; exit code 0 only if all hold.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
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
# What no weight file says: the head reads a feature map flattened in (C, H, W) order by
# torch.flatten of NCHW, and in (H, W, C) order by the NHWC Flax model.
FLATTEN = {"head": ("CHW", "HWC", {"C": C_UP, "H": H, "W": W})}
FLATTEN_ARG = f"head=CHW:HWC:C={C_UP},H={H},W={W}"


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


def convert_with_cli(src: Path, dst: Path, template: Path) -> int:
  """``flipconv convert --like`` as a user runs it in a shell; returns its exit code."""
  args = ["convert", str(src), str(dst), "--from", "pytorch", "--to", "flax"]
  args += ["--like", str(template), "--flatten", FLATTEN_ARG]
  print("  $ flipconv " + " ".join(a if "=" not in a else f"'{a}'" for a in args))
  # The `flipconv` console script is flipconv.cli:main; calling it here saves starting a
  # second Python (`python -m flipconv ...` in a subprocess does the same).
  print("  ", end="", flush=True)
  return cli.main(args)


def main(argv: list[str] | None = None) -> int:
  # On a GPU or TPU a float32 conv may run in reduced precision (TF32, bf16 passes); the
  # checks compare with float32/float64 references on the CPU, so ask for full float32.
  with jax.default_matmul_precision("float32"):
    return _main(argv)


def _main(argv: list[str] | None) -> int:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument(
    "--out",
    type=Path,
    default=None,
    metavar="DIR",
    help="keep the files written on the way in DIR (default: a temporary folder, removed)",
  )
  args = parser.parse_args(argv)
  torch.manual_seed(0)
  net = TorchNet().eval()
  x = np.random.default_rng(0).standard_normal((N, C_IN, H, W)).astype(np.float32)  # NCHW
  with torch.no_grad():
    y_torch = net(torch.from_numpy(x)).numpy()
  state_dict = net.state_dict()  # torch tensors, as the model holds them
  print(f"PyTorch model: input {x.shape} (NCHW) -> logits {y_torch.shape}; state_dict:")
  for k, v in state_dict.items():
    print(f"  {k:18s} {tuple(v.shape)}")
  checks: list[bool] = []
  x_nhwc = x.transpose(0, 2, 3, 1)

  print("\n(a) Fill a plain flax.linen model: convert_params(..., like=variables)")
  flax_net = FlaxNet()
  like = flax_net.init(jax.random.key(0), x_nhwc)  # only its structure and shapes are used
  print("  the plan: fc.plan_params(state_dict, 'pytorch', 'flax', like=like, flatten=FLATTEN)")
  plan = fc.plan_params(state_dict, "pytorch", "flax", like=like, flatten=FLATTEN)
  print("    " + str(plan).replace("\n", "\n    "))
  variables = fc.convert_params(state_dict, "pytorch", "flax", like=like, flatten=FLATTEN)
  apply = jax.jit(flax_net.apply)  # one compiled program instead of op-by-op dispatch
  y_flax = apply(variables, x_nhwc)
  print(f"  relative error against torch: {rel_err(y_flax, y_torch):.1e}")
  # What forgetting the flatten order costs: flipconv warns, and the logits are wrong.
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    naive = fc.convert_params(state_dict, "pytorch", "flax", like=like)
  warned = [w for w in caught if issubclass(w.category, fc.FlattenWarning)]
  y_naive = apply(naive, x_nhwc)
  print(
    f"  without flatten=: {len(warned)} FlattenWarning, relative error "
    f"{rel_err(y_naive, y_torch):.2f}  <- the NCHW vs NHWC flatten trap"
  )

  with tempfile.TemporaryDirectory() as tmp:
    folder = args.out or Path(tmp)
    folder.mkdir(parents=True, exist_ok=True)
    src, dst = folder / "model.safetensors", folder / "model_flax.msgpack"
    template = folder / "template.msgpack"
    safetensors.torch.save_file(state_dict, str(src))
    template.write_bytes(serialization.to_bytes(like))
    print("\n  the same from the command line, with the model's variables as the template:")
    if convert_with_cli(src, dst, template) != 0:
      print("flipconv convert failed.")
      return 1
    from_file = serialization.from_bytes(like, dst.read_bytes())
  same_as_file = jax.tree_util.tree_all(
    jax.tree_util.tree_map(lambda a, b: np.array_equal(a, b), from_file, variables)
  )

  print("\n(b) PyTorch's weights unchanged in fc.linen layers with convention='pytorch'")
  ported_like = jax.eval_shape(PortedNet().init, jax.random.key(0), x)  # shapes only
  ported = fc.convert_params(state_dict, "pytorch", "pytorch", like=ported_like)
  unchanged = all(
    np.array_equal(ported["params"][m]["kernel"], state_dict[f"{m}.weight"].numpy())
    for m in ("conv1", "depthwise", "down", "up", "head")
  )
  y_ported = jax.jit(PortedNet().apply)(ported, x)
  kernels = ", ".join(f"{m} {p['kernel'].shape}" for m, p in ported["params"].items())
  print(f"  kernels as stored by PyTorch: {kernels}")
  print(f"  relative error against torch: {rel_err(y_ported, y_torch):.1e}")

  print("\nChecks:")
  check(
    checks,
    same_as_file,
    "the CLI's --like file loads with from_bytes into exactly what convert_params returns",
  )
  check(
    checks,
    warned and "head" in str(warned[0].message) and rel_err(y_naive, y_torch) > 0.1,
    "without flatten=, flipconv warns about the head, whose logits are then wrong",
  )
  check(
    checks,
    rel_err(y_flax, y_torch) < TOL,
    f"torch == flax.linen filled by like= (relative error < {TOL:g})",
  )
  check(checks, unchanged, "convention='pytorch' layers hold PyTorch's kernels unchanged")
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
