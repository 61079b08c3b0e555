"""convert_params and `flipconv convert` on a ResNet-shaped checkpoint, against a plain copy.

The tree has ResNet-50's layer shapes and PyTorch's names (``conv1.weight``,
``layer1.0.conv2.weight``, ``fc.weight``, BatchNorm statistics, ...), with
ResNet-101's block counts (3, 4, 23, 3) so that it holds about 45M float32
parameters (178 MB). Prints, in one run:

* convert_params(pytorch -> flax) on NumPy arrays, and the same onto the Flax
  model's variables (``like=``: matching, renaming, shape checks included):
  throughput over the bytes of the converted kernels, and its ratio to
  ``np.copy`` of the same arrays (target >= 0.5); also NumPy's plain
  ``ascontiguousarray(transpose)``, which the tiled copy in ``flipconv.params``
  replaces. Medians of interleaved runs (``benchmarks/_timing.py``).
* peak memory traced during convert_params (tracemalloc), beyond its output.
* ``flipconv convert`` of the same tree as a .safetensors file: wall time and
  the peak RSS of the process against one that only reads the header
  (``flipconv inspect``), compared with the largest tensor and the file.

  python benchmarks/bench_params.py [--repeats 7] [--blocks 3,4,23,3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc

import jax
import numpy as np
from _timing import interleaved  # benchmarks/_timing.py, beside this script

import flipconv as fc
from flipconv import checkpoints


def resnet_state(blocks: tuple[int, ...], seed: int = 0) -> dict[str, np.ndarray]:
  """A torchvision-style ResNet (bottleneck) state_dict as float32 NumPy arrays."""
  rng = np.random.default_rng(seed)
  sd: dict[str, np.ndarray] = {}

  def conv(name: str, o: int, i: int, k: int) -> None:
    sd[f"{name}.weight"] = rng.standard_normal((o, i, k, k), np.float32)

  def bn(name: str, c: int) -> None:
    for p in ("weight", "bias", "running_mean", "running_var"):
      sd[f"{name}.{p}"] = rng.standard_normal(c, np.float32)
    sd[f"{name}.num_batches_tracked"] = np.array(0, np.int64)

  conv("conv1", 64, 3, 7)
  bn("bn1", 64)
  c_in = 64
  for stage, (n, width) in enumerate(zip(blocks, (64, 128, 256, 512), strict=True), 1):
    for b in range(n):
      pre = f"layer{stage}.{b}"
      conv(f"{pre}.conv1", width, c_in, 1)
      bn(f"{pre}.bn1", width)
      conv(f"{pre}.conv2", width, width, 3)
      bn(f"{pre}.bn2", width)
      conv(f"{pre}.conv3", width * 4, width, 1)
      bn(f"{pre}.bn3", width * 4)
      if b == 0:
        conv(f"{pre}.downsample.0", width * 4, c_in, 1)
        bn(f"{pre}.downsample.1", width * 4)
      c_in = width * 4
  sd["fc.weight"] = rng.standard_normal((1000, 2048), np.float32)
  sd["fc.bias"] = rng.standard_normal(1000, np.float32)
  return sd


def child_peak_rss(args: list[str]) -> tuple[float, float]:
  """(wall seconds, peak RSS in MB) of `flipconv ARGS` in a fresh process."""
  # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent.
  code = (
    "import sys\nfrom flipconv.cli import main\nrc = main(sys.argv[1:])\n"
    "hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0]\n"
    "print('PEAK_KB', hwm.split()[1], file=sys.stderr)\nsys.exit(rc)"
  )
  t0 = time.perf_counter()
  r = subprocess.run(
    [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
  )
  wall = time.perf_counter() - t0
  kb = int(next(ln.split()[1] for ln in r.stderr.splitlines() if ln.startswith("PEAK_KB")))
  return wall, kb / 1024


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--blocks", default="3,4,23,3")
  args = parser.parse_args()
  blocks = tuple(int(b) for b in args.blocks.split(","))

  sd = resnet_state(blocks)
  plan = fc.plan_params(sd, "pytorch", "flax")
  kernels = [sd[c.path.replace("/", ".")] for c in plan]
  k_bytes = sum(k.nbytes for k in kernels)
  n_params = sum(v.size for v in sd.values())
  print(
    f"tree: {len(sd)} arrays, {n_params / 1e6:.1f}M parameters, "
    f"{sum(v.nbytes for v in sd.values()) / 1e6:.0f} MB; {len(plan)} kernels converted "
    f"({k_bytes / 1e6:.0f} MB, largest {max(k.nbytes for k in kernels) / 1e6:.1f} MB)"
  )

  perms = {id(k): c.permutation for k, c in zip(kernels, plan, strict=True)}
  # The Flax model's variables, shapes only: what `like=` is given (matched by name).
  like = jax.tree_util.tree_map(
    lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
    fc.nest_params(fc.convert_params(sd, "pytorch", "flax"), collections=True),
  )
  cases = {
    "np.copy (baseline)": lambda: [np.copy(k) for k in kernels],
    "fc.convert_params": lambda: fc.convert_params(sd, "pytorch", "flax"),
    "fc.convert_params(like=variables)": lambda: fc.convert_params(
      sd, "pytorch", "flax", like=like
    ),
    "np.ascontiguousarray(transpose)": lambda: [
      np.ascontiguousarray(k.transpose(perms[id(k)])) for k in kernels
    ],
  }
  times = interleaved(cases, args.repeats)
  base = statistics.median(times["np.copy (baseline)"])
  print(f"\nthroughput over the kernels' bytes (median of {args.repeats}, interleaved):")
  for name, ts in times.items():
    t = statistics.median(ts)
    print(
      f"  {name:34s} {k_bytes / t / 1e9:6.2f} GB/s  {t * 1e3:7.1f} ms  "
      f"ratio to copy {base / t:4.2f}"
    )

  tracemalloc.start()
  out = fc.convert_params(sd, "pytorch", "flax")
  _, peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()
  out_bytes = sum(out[k].nbytes for k in out if out[k] is not sd[k])
  del out
  print(
    f"\nconvert_params memory (tracemalloc): peak {peak / 1e6:.0f} MB = its output "
    f"{out_bytes / 1e6:.0f} MB + {(peak - out_bytes) / 1e6:.1f} MB transient"
  )

  with tempfile.TemporaryDirectory() as tmp:
    src, dst = os.path.join(tmp, "resnet.safetensors"), os.path.join(tmp, "flax.safetensors")
    checkpoints.save(src, sd)
    size = os.path.getsize(src)
    _, base_rss = child_peak_rss(["inspect", src])
    walls, peaks = [], []
    for _ in range(3):
      if os.path.exists(dst):
        os.remove(dst)
      wall, rss = child_peak_rss(["convert", src, dst, "--from", "pytorch", "--to", "flax"])
      walls.append(wall)
      peaks.append(rss)
    largest = max(v.nbytes for v in sd.values())
    print(
      f"\nflipconv convert ({size / 1e6:.0f} MB .safetensors, largest tensor "
      f"{largest / 1e6:.1f} MB): wall {statistics.median(walls):.2f} s (process start and "
      f"imports included); peak RSS {statistics.median(peaks):.0f} MB vs "
      f"{base_rss:.0f} MB for `flipconv inspect` (header only): "
      f"+{statistics.median(peaks) - base_rss:.0f} MB for the conversion"
    )


if __name__ == "__main__":
  main()
