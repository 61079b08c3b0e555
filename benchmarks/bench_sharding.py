"""Sharded conv step (forward + backward) through flipconv vs the same raw-lax program.

Runs on 8 host devices (set before jax is imported), mesh data=4 x model=2:
batch-sharded NCHW input, output-channel-sharded OIHW kernel. Prints, per
case, the median time of each program (interleaved repeats) and the ratio
flipconv / lax (target <= 1.02), and the collectives each compiled program has.

  python benchmarks/bench_sharding.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import flipconv as fc

COLLECTIVES = ("all-gather", "all-to-all", "collective-permute", "all-reduce")


def step_fns(flip: bool, padding, strides):
  def fc_loss(k, x):
    return jnp.sum(
      fc.conv(
        x, k, flip=flip, layout="NCHW", kernel_layout="OIHW", padding=padding, strides=strides
      )
      ** 2
    )

  def lax_loss(k, x):
    kk = lax.rev(k, (2, 3)) if flip else k
    return jnp.sum(
      lax.conv_general_dilated(
        x, kk, (strides, strides), padding, dimension_numbers=("NCHW", "OIHW", "NCHW")
      )
      ** 2
    )

  return (
    jax.jit(jax.value_and_grad(fc_loss, argnums=(0, 1))),
    jax.jit(jax.value_and_grad(lax_loss, argnums=(0, 1))),
  )


def found(fn, *args):
  text = fn.lower(*args).compile().as_text()
  return ",".join(c for c in COLLECTIVES if c in text) or "none"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--repeats", type=int, default=30)
  args = parser.parse_args()
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
  rng = np.random.default_rng(0)
  cases = [
    ("16x32x32x32 3x3 SAME", (16, 32, 32, 32), (64, 32, 3, 3), "SAME", 1),
    ("16x16x64x64 5x5 SAME s2", (16, 16, 64, 64), (32, 16, 5, 5), "SAME", 2),
    ("8x64x16x16 3x3 VALID", (8, 64, 16, 16), (64, 64, 3, 3), "VALID", 1),
  ]
  print(f"devices: {len(jax.devices())} x {jax.devices()[0].platform}, mesh data=4 x model=2")
  print(f"{'case':28} {'flip':5} {'fc ms':>8} {'lax ms':>8} {'ratio':>6}  collectives fc | lax")
  for name, xs, ks, padding, strides in cases:
    x = jax.device_put(rng.standard_normal(xs, np.float32), NamedSharding(mesh, P("data")))
    k = jax.device_put(rng.standard_normal(ks, np.float32), NamedSharding(mesh, P("model")))
    for flip in (False, True):
      f_fc, f_lax = step_fns(flip, padding, strides)
      for f in (f_fc, f_lax):
        jax.block_until_ready(f(k, x))
      t_fc, t_lax = [], []
      for _ in range(args.repeats):  # interleaved, so drift hits both alike
        for f, acc in ((f_fc, t_fc), (f_lax, t_lax)):
          t0 = time.perf_counter()
          jax.block_until_ready(f(k, x))
          acc.append(time.perf_counter() - t0)
      a, b = statistics.median(t_fc) * 1e3, statistics.median(t_lax) * 1e3
      print(
        f"{name:28} {flip!s:5} {a:8.2f} {b:8.2f} {a / b:6.3f}  "
        f"{found(f_fc, k, x)} | {found(f_lax, k, x)}"
      )


if __name__ == "__main__":
  main()
