"""Train a PyTorch-layout CNN of flipconv.linen layers data- and model-parallel.

The story: a small CNN written with ``fc.linen.Conv(..., convention="pytorch")``
(NCHW activations, OIHW kernels exactly as a PyTorch ``Conv2d.weight``) is
trained on a 4 x 2 mesh of devices: the batch is split over the mesh axis
``"data"`` (4 ways) and the channels over ``"model"`` (2 ways). The
partitioning is declared as Flax declares it, with
``nn.with_partitioning(initializer, names)``; the names are those of the
layer's own kernel axes, here ``(O, I, H, W)``:

* ``conv1``: ``("model", None, None, None)``, output channels split
  (column-parallel): its output comes out sharded (data, model);
* ``conv2``: ``(None, "model", None, None)``, input channels split
  (row-parallel): it reads conv1's sharded channels where they are, and XLA
  adds the partial sums (one all-reduce over ``"model"``);
* ``head`` (a 1x1 conv to the class logits): ``("model", None, None, None)``.

A few plain SGD steps (``jax.grad``, no optax) run under ``jax.jit`` with
explicit ``in_shardings``/``out_shardings``, and the same steps run again
unsharded on one device from the same initial parameters. The losses and the
trained parameters agree to float32 rounding.

No accelerator needed: 8 CPU "devices" are made from one host by
``XLA_FLAGS=--xla_force_host_platform_device_count=8``, set below before JAX
is imported (kept if it is already set).

    python examples/sharded_training.py [--steps 4] [--rng-impl rbg] [--out params.npz]

Most of its time on a CPU is XLA compiling the init's random numbers (the
default threefry PRNG: seconds per parameter shape); ``--rng-impl rbg`` makes
that a fraction of a second, as the smoke test runs it.

It prints the parameter shardings, the collectives of the compiled step, the
losses, and a line per check (``--out`` also saves the trained parameters,
in PyTorch's OIHW layout, as ``.npz``); exit code 0 only if all hold.
"""

from __future__ import annotations

import argparse
import os
import sys

# Before JAX is imported: the host platform splits into this many devices.
_DEVICES_FLAG = "--xla_force_host_platform_device_count=8"
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_DEVICES_FLAG}".strip()

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import flipconv as fc  # noqa: E402

BATCH, C_IN, SIZE, CLASSES = 16, 3, 16, 10
MESH_SHAPE = {"data": 4, "model": 2}
LEARNING_RATE = 0.1
LOSS_RTOL = 1e-5  # float32 rounding: the sharded program sums in another order
PARAM_RTOL, PARAM_ATOL = 1e-4, 1e-6
INIT = nn.initializers.lecun_normal()  # Flax's default; called with Flax's kernel shape
COLLECTIVES = ("all-gather", "all-to-all", "collective-permute", "all-reduce", "reduce-scatter")


def partitioned(names: tuple[str | None, ...]):
  """Flax's default kernel initialiser, with the mesh axes of the kernel's (O, I, H, W) axes."""
  return nn.with_partitioning(INIT, names)


class CNN(nn.Module):
  """NCHW images -> class logits; every kernel is a PyTorch OIHW weight."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    bias_on_model = nn.with_partitioning(nn.initializers.zeros_init(), ("model",))
    x = fc.linen.Conv(
      16,
      (3, 3),
      padding=1,
      convention="pytorch",
      name="conv1",
      kernel_init=partitioned(("model", None, None, None)),
      bias_init=bias_on_model,
    )(x)
    x = nn.relu(x)
    x = fc.linen.Conv(
      16,
      (3, 3),
      strides=2,
      padding=1,
      convention="pytorch",
      name="conv2",
      kernel_init=partitioned((None, "model", None, None)),
    )(x)
    x = nn.relu(x)
    x = fc.linen.Conv(
      CLASSES,
      (1, 1),
      convention="pytorch",
      name="head",
      kernel_init=partitioned(("model", None, None, None)),
      bias_init=bias_on_model,
    )(x)
    return x.mean(axis=(2, 3))  # global average pool: (N, classes)


def loss_fn(params, x, labels):
  logits = CNN().apply({"params": params}, x)
  log_p = jax.nn.log_softmax(logits)
  return -jnp.mean(jnp.take_along_axis(log_p, labels[:, None], axis=1))


def train_step(params, x, labels):
  """One SGD step: returns the new parameters and the loss before the step."""
  loss, grads = jax.value_and_grad(loss_fn)(params, x, labels)
  return jax.tree.map(lambda p, g: p - LEARNING_RATE * g, params, grads), loss


def found_collectives(compiled) -> list[str]:
  text = compiled.as_text()
  return [c for c in COLLECTIVES if c in text]


def path_str(path) -> str:
  return "/".join(str(getattr(k, "key", k)) for k in path)


def check(checks: list[bool], ok: bool, claim: str) -> None:
  checks.append(bool(ok))
  print(f"  {'ok' if ok else 'FAILED':6s} {claim}")


def main(argv: list[str] | None = None) -> int:
  # Full float32 in every conv, so that the two runs differ by summation order only.
  with jax.default_matmul_precision("float32"):
    return _main(argv)


def _main(argv: list[str] | None) -> int:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument(
    "--out", default=None, metavar="NPZ", help="save the trained parameters to this .npz"
  )
  parser.add_argument("--steps", type=int, default=4, help="SGD steps (default 4)")
  parser.add_argument(
    "--rng-impl",
    default=None,
    choices=("threefry2x32", "rbg"),
    help="PRNG of the init key (default: JAX's, threefry2x32). 'rbg' (XLA's RngBitGenerator) "
    "compiles the init in a fraction of the time on CPU and, as JAX documents, gives "
    "the same numbers whatever the sharding; each device draws whole arrays, which is "
    "fine for a small model.",
  )
  args = parser.parse_args(argv)
  n_devices = MESH_SHAPE["data"] * MESH_SHAPE["model"]
  if len(jax.devices()) < n_devices:
    print(
      f"needs {n_devices} devices, found {len(jax.devices())}: run with "
      f"XLA_FLAGS={_DEVICES_FLAG} (set before JAX is imported)"
    )
    return 1
  mesh = Mesh(
    np.array(jax.devices()[:n_devices]).reshape(tuple(MESH_SHAPE.values())), tuple(MESH_SHAPE)
  )
  rng = np.random.default_rng(0)
  x_np = rng.standard_normal((BATCH, C_IN, SIZE, SIZE)).astype(np.float32)  # NCHW
  labels_np = rng.integers(0, CLASSES, BATCH).astype(np.int32)
  model = CNN()
  key = jax.random.key(0, impl=args.rng_impl)
  checks: list[bool] = []

  # The shardings come from the abstract init (Flax's pattern); the jitted init then
  # returns every parameter already sharded (with the default threefry PRNG each device
  # draws only its own shard).
  abstract = jax.eval_shape(model.init, key, x_np)
  shardings = nn.get_sharding(abstract, mesh)
  variables = jax.jit(model.init, out_shardings=shardings)(key, x_np)
  params, param_shardings = nn.unbox(variables)["params"], shardings["params"]
  names = nn.get_partition_spec(abstract)["params"]

  print(
    f"mesh {dict(mesh.shape)} of {len(mesh.devices.flat)} {jax.devices()[0].platform} "
    "devices; parameters (PyTorch layouts: OIHW kernels):"
  )
  leaves = jax.tree_util.tree_leaves_with_path(params)
  for path, p in leaves:
    shard = p.addressable_shards[0].data.shape
    print(f"  {path_str(path):14s} {p.shape!s:16s} {p.sharding.spec!s:34s} per device {shard}")
  wanted = jax.tree_util.tree_leaves(names, is_leaf=lambda v: isinstance(v, P))
  check(
    checks,
    all(
      p.sharding.is_equivalent_to(NamedSharding(mesh, spec), p.ndim)
      for (_, p), spec in zip(leaves, wanted, strict=True)
    ),
    "every parameter is sharded as its nn.with_partitioning names say",
  )

  x_sharding = NamedSharding(mesh, P("data", None, None, None))
  labels_sharding = NamedSharding(mesh, P("data"))
  x = jax.device_put(x_np, x_sharding)
  labels = jax.device_put(labels_np, labels_sharding)
  step = (
    jax.jit(
      train_step,
      in_shardings=(param_shardings, x_sharding, labels_sharding),
      out_shardings=(param_shardings, NamedSharding(mesh, P())),
    )
    .lower(params, x, labels)
    .compile()
  )
  collectives = found_collectives(step)
  print(f"\ncollectives in the compiled sharded step: {', '.join(collectives) or 'none'}")

  # The single-device run starts from the same numbers.
  one = jax.devices()[0]
  params_1 = jax.device_put(jax.device_get(params), one)
  x_1, labels_1 = jax.device_put(x_np, one), jax.device_put(labels_np, one)
  step_1 = jax.jit(train_step).lower(params_1, x_1, labels_1).compile()

  losses, losses_1 = [], []
  for _ in range(args.steps):
    params, loss = step(params, x, labels)
    params_1, loss_1 = step_1(params_1, x_1, labels_1)
    losses.append(float(loss))
    losses_1.append(float(loss_1))
  print(f"\n  {'step':>4s} {'sharded loss':>14s} {'1-device loss':>14s} {'rel. diff':>10s}")
  for i, (a, b) in enumerate(zip(losses, losses_1, strict=True)):
    print(f"  {i:4d} {a:14.7f} {b:14.7f} {abs(a - b) / abs(b):10.1e}")

  print("\nChecks:")
  check(
    checks,
    np.allclose(losses, losses_1, rtol=LOSS_RTOL, atol=0),
    f"the sharded losses equal the single-device losses (rtol {LOSS_RTOL:g})",
  )
  close = jax.tree.map(
    lambda a, b: np.allclose(np.asarray(a), np.asarray(b), rtol=PARAM_RTOL, atol=PARAM_ATOL),
    params,
    params_1,
  )
  check(
    checks,
    all(jax.tree_util.tree_leaves(close)),
    f"so do the trained parameters (rtol {PARAM_RTOL:g}, atol {PARAM_ATOL:g})",
  )
  check(
    checks,
    all(
      p.sharding.is_equivalent_to(s, p.ndim)
      for p, s in zip(
        jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(param_shardings), strict=True
      )
    ),
    "the trained parameters keep their shardings",
  )
  check(
    checks,
    collectives == ["all-reduce"],
    "the step communicates by all-reduce only (the gradient sum over 'data', conv2's "
    "partial sums over 'model'): no gather of activations or weights",
  )
  check(checks, losses[-1] < losses[0], "the loss went down")
  if args.out is not None:
    flat = jax.tree_util.tree_leaves_with_path(jax.device_get(params))
    np.savez(args.out, **{jax.tree_util.keystr(k, simple=True, separator="."): v for k, v in flat})
    print(f"wrote {args.out}")
  ok = all(checks)
  print("All checks held." if ok else "Some checks FAILED.")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
