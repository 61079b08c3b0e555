"""Hostile arguments and values for the ops, the FFT method and detect_convention (issue 16).

1. Arguments never crash the process or exhaust the machine: sizes beyond
   what XLA can hold, or beyond the device's memory, are a ``ValueError``
   naming the argument before XLA sees anything; ``method="fft"`` computes
   wherever ``method="direct"`` does. The cases that used to abort the process
   (SIGABRT inside XLA) or allocate terabytes run in a subprocess with a
   memory limit, so that a regression fails a test instead of killing pytest.
2. The FFT method gives NaN and infinities exactly where, and of the sign,
   that the direct method gives them (hypothesis over placements), and raises
   what the direct method raises.
3. detect_convention is bounded: fixed arguments with huge values cost no
   memory and little time; a search that reaches its budget says so.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import flipconv as fc
from flipconv import _auto, _fft

X1 = np.ones((2, 8, 4), np.float32)  # NWC
K1 = np.ones((3, 4, 4), np.float32)  # WIO

# ---------------------------------------------------------------------------
# 1. In a subprocess: what used to abort the process, hang, or allocate terabytes

_CHILD = textwrap.dedent(
  """
  import json, resource, signal, sys
  import numpy as np
  import flipconv as fc

  # 6 GB of address space, and the byte bound set to match (the real bound is
  # the device's memory; here it is pinned so that every machine agrees).
  resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
  try:
    from flipconv import _limits
    _limits.max_bytes = lambda: 300_000_000
  except ImportError:  # flipconv before issue 16: run the cases as they are
    pass
  x = np.arange(64, dtype=np.float32).reshape(2, 8, 4) / 64
  k = np.linspace(-1, 1, 48, dtype=np.float32).reshape(3, 4, 4)
  x2 = np.ones((1, 8, 8, 1), np.float32)
  k2 = np.ones((3, 3, 1, 1), np.float32)
  rng = np.random.default_rng(0)
  dx = rng.standard_normal((1, 2, 8, 8)).astype(np.float32)
  dw = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
  dy = np.asarray(fc.conv(dx, dw, convention="pytorch", padding=1))

  def count_detect(**kw):
    # detect_convention's outcome and how many spellings it checked
    from flipconv import _spec
    calls, real = [0], _spec.resolve_conv
    def counting(*args, **kwargs):
      calls[0] += 1
      return real(*args, **kwargs)
    _spec.resolve_conv = counting
    try:
      fc.detect_convention(dx, dw, dy, **kw)
      out = "returned"
    except ValueError as e:
      out = f"ValueError: {e}"
    finally:
      _spec.resolve_conv = real
    return f"{out} [resolves {calls[0]}]"

  def alarm(*args):
    raise TimeoutError("over 60 s")

  signal.signal(signal.SIGALRM, alarm)

  def same_as_direct(**kw):
    got = np.asarray(fc.conv(x, k, flip=True, **kw))
    want = np.asarray(fc.conv(x, k, flip=True, **{**kw, "method": "direct"}))
    return "equal" if np.array_equal(got, want) else f"differ: {got} vs {want}"

  CASES = {CASES}
  for name in sys.argv[1:]:
    print(json.dumps({"case": name, "started": True}), flush=True)
    signal.alarm(60)  # Python loops stop; a hang inside XLA meets the parent's timeout
    try:
      out = eval(CASES[name])
      result = out if isinstance(out, str) else "returned"
    except BaseException as e:
      result = f"{type(e).__name__}: {e}"
    finally:
      signal.alarm(0)
    print(json.dumps({"case": name, "result": result}), flush=True)
  """
)

# name: (expression evaluated in the child, regex its outcome must match)
SUBPROCESS_CASES = {
  # SIGABRT in XLA: "overflow in static extent product"
  "dilation-2**60-full": (
    "fc.conv(x, k, flip=True, dilation=2**60, padding='FULL')",
    r"^ValueError: conv: dilation=1152921504606846976 .*2\*\*24",
  ),
  "padding-2**31-fft-2d": (
    "fc.conv(x2, k2, flip=True, padding=2**31, method='fft')",
    r"^ValueError: conv: padding=\(2147483648, 2147483648\) .*2\*\*24",
  ),
  "fft-strides-10**18": ("same_as_direct(strides=10**18, method='fft')", r"^equal$"),
  "fft-dilation-2**22": (
    "same_as_direct(dilation=2**22, padding=2**23, method='fft')",
    r"^equal$",
  ),
  "fft-padding-stride-2**24": (
    "same_as_direct(padding=2**24, strides=2**24, method='fft')",
    r"^equal$",
  ),
  "auto-padding-stride-2**24": (
    "same_as_direct(padding=2**24, strides=2**24, method='auto')",
    r"^equal$",
  ),
  # Where XLA's direct conv returns wrong values (32-bit window positions).
  "padding-stride-2**30": (
    "fc.conv(x, k, flip=True, padding=2**30, strides=2**30)",
    r"^ValueError: conv: padding=\(1073741824, 1073741824\) .*2\*\*24",
  ),
  "fft-padding-stride-10**12": (
    "fc.conv(x, k, flip=True, padding=10**12, strides=10**12, method='fft')",
    r"^ValueError: conv: padding=\(1000000000000, 1000000000000\) .*2\*\*24",
  ),
  # Allocations beyond the machine (RESOURCE_EXHAUSTED, or the allocator trying).
  "padding-10**7": (
    "fc.conv(x, k, flip=True, padding=10**7)",
    r"^ValueError: conv: padding=\(10000000, 10000000\) .*output of shape \(2, 20000006, 4\)"
    r".*640\.0 MB of float32, more than the 300\.0 MB",
  ),
  "dilation-2**40-full": (
    "fc.conv(x, k, flip=True, dilation=2**40, padding='FULL')",
    r"^ValueError: conv: dilation=1099511627776 .*padding='FULL'.*2\*\*24",
  ),
  "padding-10**5-input-dilation-10**6": (
    "fc.conv(x2, k2, flip=True, padding=10**5, input_dilation=10**6)",
    r"^ValueError: conv: input_dilation=1000000 .*output of shape \(1, 7199999, 7199999, 1\)",
  ),
  "conv-transpose-strides-2**26": (
    "fc.conv_transpose(x, k.transpose(0, 2, 1), flip=True, strides=2**26)",
    r"^ValueError: conv_transpose: strides=67108864 .*output of shape \(2, 469762051, 4\)",
  ),
  "transpose-dilation-10**12": (
    "fc.conv_transpose(x, k.transpose(0, 2, 1), flip=True, dilation=10**12)",
    r"^ValueError: conv_transpose: dilation=1000000000000 .*2\*\*24",
  ),
  "detect-padding-10**9": (
    "count_detect(padding=10**9)",
    r"^ValueError: detect_convention: the search reached its budget without a match",
  ),
  "detect-strides-10**12": (
    "count_detect(strides=10**12)",
    r"^ValueError: detect_convention: the search reached its budget",
  ),
  "detect-padding-pairs-10**9": (
    "count_detect(padding=((0, 10**9), (10**9, 0)))",
    r"^ValueError: detect_convention: ",
  ),
  "detect-padding-dilation": (
    "count_detect(padding=10**9, dilation=10**8)",
    r"^ValueError: detect_convention: ",
  ),
  "detect-cannot-fit": (
    "count_detect(padding=10**9, strides=1)",
    r"^ValueError: detect_convention: .*no padding, stride or dilation .*padding=1000000000",
  ),
  # Used to run for minutes: last, so that a hang leaves the others reported.
  "conv-transpose-strides-10**12": (
    "fc.conv_transpose(x, k.transpose(0, 2, 1), flip=True, strides=10**12)",
    r"^ValueError: conv_transpose: strides=1000000000000 .*output of shape \(2, 7000000000003, 4\)",
  ),
  "detect-dilation-10**6": (
    "count_detect(dilation=10**6)",
    r"^ValueError: detect_convention: the search reached its budget",
  ),
}


@pytest.fixture(scope="module")
def subprocess_results():
  """Runs every case in one child process; returns {case: outcome} and the child's stderr."""
  pytest.importorskip("resource")  # POSIX: the child limits its own memory
  cases = {name: expr for name, (expr, _) in SUBPROCESS_CASES.items()}
  code = _CHILD.replace("{CASES}", repr(cases))
  env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
  try:
    proc = subprocess.run(
      [sys.executable, "-c", code, *cases],
      capture_output=True,
      text=True,
      timeout=240,
      env=env,
    )
    stdout, stderr, rc = proc.stdout, proc.stderr, proc.returncode
  except subprocess.TimeoutExpired as e:
    stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
    stderr, rc = "timed out after 240 s", None
  results, last = {}, None
  for line in stdout.splitlines():
    if line.startswith("{"):
      row = json.loads(line)
      last = row["case"]
      if "result" in row:
        results[row["case"]] = row["result"]
  return results, f"rc={rc}, last case started: {last}; stderr tail: {stderr[-2000:]}"


@pytest.mark.parametrize("case", list(SUBPROCESS_CASES))
def test_sizes_xla_cannot_hold_are_a_value_error_not_a_crash(subprocess_results, case):
  results, info = subprocess_results
  assert case in results, f"the child died or hung on this case ({info})"
  assert re.search(SUBPROCESS_CASES[case][1], results[case]), results[case]
  checked = re.search(r"\[resolves (\d+)\]$", results[case])
  assert bool(checked) == case.startswith("detect-"), results[case]
  if checked:  # detect: the spellings it checked are within its budget
    from flipconv import detect

    combos = len(fc.conventions) + len(detect.DATA_LAYOUTS) * len(detect.KERNEL_LAYOUTS)
    budget = combos * (detect.MAX_DILATION + 1) * (detect.MAX_CANDIDATES + 1)
    assert 1 <= int(checked.group(1)) <= budget  # 0: the count missed detect's calls


# ---------------------------------------------------------------------------
# 1. In process: arguments that cannot be sizes, operands that cannot be arrays

BAD_ARGUMENTS = {
  "strides-2**63": (
    ValueError,
    r"conv: strides=9223372036854775808 is larger than any size XLA can use",
    lambda: fc.conv(X1, K1, flip=True, strides=2**63),
  ),
  "padding-10**30": (
    ValueError,
    r"conv: padding=10{30} is larger",
    lambda: fc.conv(X1, K1, flip=True, padding=10**30),
  ),
  "dilation-2**63-fft": (
    ValueError,
    r"conv: dilation=9223372036854775808 is larger",
    lambda: fc.conv(X1, K1, flip=True, dilation=2**63, padding="FULL", method="fft"),
  ),
  "input-dilation-2**62+1": (
    ValueError,
    r"conv: input_dilation=4611686018427387905 is larger",
    lambda: fc.conv(X1, K1, flip=True, input_dilation=2**62 + 1),
  ),
  "transpose-strides-2**63": (
    ValueError,
    r"conv_transpose: strides=9223372036854775808 is larger",
    lambda: fc.conv_transpose(X1, K1.transpose(0, 2, 1), flip=True, strides=2**63),
  ),
  "x-none": (
    TypeError,
    r"conv: x must be an array, got None",
    lambda: fc.conv(None, K1, flip=True),
  ),
  "kernel-none": (
    TypeError,
    r"conv: kernel must be an array, got None",
    lambda: fc.correlate(X1, None),
  ),
  "x-ragged": (
    ValueError,
    r"conv: x cannot be made an array .*inhomogeneous",
    lambda: fc.convolve([[[1.0], [2.0]], [[1.0]]], K1[:, :1]),
  ),
  "x-int-beyond-int64": (
    ValueError,
    r"conv: x cannot be made an array",
    lambda: fc.convolve([[[10**30]] * 4], K1[:, :1, :1]),
  ),
  "transpose-x-none": (
    TypeError,
    r"conv_transpose: x must be an array, got None",
    lambda: fc.conv_transpose(None, K1, flip=True),
  ),
}


@pytest.mark.parametrize("case", list(BAD_ARGUMENTS.values()), ids=list(BAD_ARGUMENTS))
def test_impossible_arguments_raise_naming_the_argument(case):
  exc, pattern, call = case
  with pytest.raises(exc, match=pattern):
    call()


def test_the_checks_run_at_trace_time_and_the_bound_is_the_device_memory(monkeypatch):
  """jit/eval_shape see the ValueError (no XLA); the byte bound is max_bytes(), exactly."""
  from flipconv import _limits

  spec = jax.ShapeDtypeStruct((2, 8, 4), jnp.float32)
  with pytest.raises(ValueError, match=r"padding=\(10{12}, 10{12}\)"):
    jax.eval_shape(lambda a: fc.conv(a, K1, flip=True, padding=10**12), spec)
  # By default the bound is the device's memory (physical memory on CPU).
  if jax.default_backend() == "cpu" and hasattr(os, "sysconf"):
    assert _limits.max_bytes() == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  # Output (2, 8 + 2p - 2, 4) float32 = 64 (p + 3) bytes: 6400 bytes at p = 97.
  monkeypatch.setattr(_limits, "max_bytes", lambda: 6400)
  assert fc.conv(X1, K1, flip=True, padding=97).shape == (2, 200, 4)
  with pytest.raises(ValueError, match=r"padding=\(98, 98\) .*6,464 B of float32.*6,400 B"):
    fc.conv(X1, K1, flip=True, padding=98)
  # preferred_element_type sets the output's bytes.
  with pytest.raises(ValueError, match=r"float64"):
    jax.eval_shape(
      lambda a: fc.conv(a, K1, flip=True, padding=60, preferred_element_type=jnp.float64),
      jax.ShapeDtypeStruct((2, 8, 4), jnp.float64),
    )


def test_fft_whose_transforms_do_not_fit_computes_with_the_direct_method(monkeypatch):
  """Where only the FFT's working arrays exceed the bound, fft returns direct's result."""
  from flipconv import _limits

  rng = np.random.default_rng(1)
  x = rng.standard_normal((1, 40, 2)).astype(np.float32)
  k = rng.standard_normal((9, 2, 3)).astype(np.float32)
  direct = np.asarray(fc.conv(x, k, flip=True, strides=3, padding=50))
  fft = np.asarray(fc.conv(x, k, flip=True, strides=3, padding=50, method="fft"))
  assert not np.array_equal(fft, direct)  # the FFT path ran: rounding differs
  np.testing.assert_allclose(fft, direct, rtol=1e-4, atol=1e-4)
  monkeypatch.setattr(_limits, "max_bytes", lambda: direct.nbytes + 1)
  for method in ("fft", "auto"):
    got = np.asarray(fc.conv(x, k, flip=True, strides=3, padding=50, method=method))
    np.testing.assert_array_equal(got, direct)


@settings(max_examples=40, deadline=None)
@given(
  exps=st.lists(st.integers(0, 70), min_size=4, max_size=4),
  padding=st.sampled_from(["VALID", "SAME", "FULL", "int"]),
  transposed=st.booleans(),
)
def test_any_argument_size_is_checked_or_fits(exps, padding, transposed):
  """Strides, dilation, input dilation and padding from 1 to 2**70: either a named
  ValueError, or an output that exists and fits in memory (eval_shape: nothing runs)."""
  s, d, i, p = (2**e for e in exps)
  pad = p if padding == "int" else padding
  spec = jax.ShapeDtypeStruct((2, 8, 4), jnp.float32)
  if transposed:
    fn = lambda a: fc.conv_transpose(a, K1, flip=True, strides=s, dilation=d, padding=pad)
  else:
    fn = lambda a: fc.conv(
      a, K1, flip=True, strides=s, dilation=d, input_dilation=i, padding=pad, method="fft"
    )
  try:
    out = jax.eval_shape(fn, spec)
  except ValueError as e:
    assert any(
      name in str(e) for name in ("strides", "dilation", "padding", "input_dilation", "kernel")
    ), e
    return
  from flipconv import _limits

  assert 0 < np.prod(out.shape) * 4 <= _limits.max_bytes()


# ---------------------------------------------------------------------------
# 2. The FFT method gives NaN and infinities exactly where direct gives them

_CONFIGS = {
  # name: (x shape, kernel shape, layout, kernel layout, conv arguments)
  "1d-same": ((2, 48, 3), (7, 3, 2), "NWC", "WIO", dict(padding="SAME")),
  "1d-stride-dilated": ((1, 3, 64), (2, 3, 9), "NCW", "OIW", dict(strides=2, dilation=2)),
  "1d-blocks": ((1, 600, 1), (41, 1, 1), "NWC", "WIO", dict(padding="FULL")),
  "2d-groups": ((1, 4, 12, 10), (4, 2, 3, 4), "NCHW", "OIHW", dict(padding=(2, 1), groups=2)),
}


@functools.cache
def _jitted(op: str, config: str, method: str):
  _, _, layout, kernel_layout, kw = _CONFIGS[config]
  f = fc.conv if op == "conv" else fc.conv_transpose
  kw = dict(kw, flip=True, layout=layout, kernel_layout=kernel_layout, method=method)
  if op == "conv_transpose":
    kw.pop("groups", None)
  return jax.jit(lambda x, k: f(x, k, **kw))


def _operands(op: str, config: str):
  x_shape, k_shape, layout, kernel_layout, kw = _CONFIGS[config]
  rng = np.random.default_rng(0)
  k = rng.standard_normal(k_shape).astype(np.float32)
  x = rng.standard_normal(x_shape).astype(np.float32)
  if op == "conv_transpose":  # its input has the kernel's O channels, and no groups
    if "groups" in kw:
      k = k[:, :2] if kernel_layout.startswith("O") else k
      x = x[:, : k.shape[0]]
    else:
      shape = list(x_shape)
      shape[layout.index("C")] = k.shape[kernel_layout.index("O")]
      x = rng.standard_normal(shape).astype(np.float32)
  return x, k


def assert_same_nonfinite(got, want):
  got, want = np.asarray(got), np.asarray(want)
  for cls in (np.isnan, np.isposinf, np.isneginf):
    np.testing.assert_array_equal(cls(got), cls(want), err_msg=cls.__name__)
  finite = np.isfinite(want)
  scale = max(1.0, float(np.abs(want[finite]).max(initial=0)))
  np.testing.assert_allclose(got[finite], want[finite], rtol=0, atol=2e-5 * scale)


# No huge finite values here: where a sum overflows, NaN or inf depends on the order of
# summation, which XLA does not fix (test_fft_overflowing_transforms... covers them).
_VALUES = st.sampled_from([np.nan, np.inf, -np.inf])


@settings(max_examples=30, deadline=None)
@given(
  op=st.sampled_from(["conv", "conv_transpose"]),
  config=st.sampled_from(list(_CONFIGS)),
  method=st.sampled_from(["fft", "auto"]),
  x_bad=st.lists(st.tuples(st.integers(0, 10**6), _VALUES), min_size=0, max_size=3),
  k_bad=st.lists(st.tuples(st.integers(0, 10**6), _VALUES), min_size=0, max_size=1),
)
def test_fft_nonfinite_values_land_where_direct_puts_them(op, config, method, x_bad, k_bad):
  x, k = _operands(op, config)
  for arr, bad in ((x, x_bad), (k, k_bad)):
    flat = arr.reshape(-1)
    for pos, value in bad:
      flat[pos % flat.size] = value
  got = _jitted(op, config, method)(x, k)
  want = _jitted(op, config, "direct")(x, k)
  assert_same_nonfinite(got, want)


def test_one_nan_in_a_long_signal_stays_local_with_auto():
  """The issue's case: auto picks the FFT for 65,536 samples and 2,049 taps; one NaN."""
  x = np.random.default_rng(2).standard_normal((1, 65536, 1)).astype(np.float32)
  k = np.random.default_rng(3).standard_normal((2049, 1, 1)).astype(np.float32)
  kw = dict(window_strides=(1,), padding=[(1024, 1024)], dimension_numbers=("NWC", "WIO", "NWC"))
  assert _auto.choose_method(x.shape, k.shape, platform="cpu", **kw) == "fft"
  x[0, 30000, 0] = np.nan
  got = fc.convolve(x, k, padding="SAME", method="auto")
  want = fc.convolve(x, k, padding="SAME")
  assert int(np.isnan(np.asarray(want)).sum()) == 2049
  assert_same_nonfinite(got, want)


def test_fft_overflowing_transforms_fall_back_where_direct_is_finite():
  """Finite values near float32's largest: the spectra overflow, the direct sums do not."""
  x = np.zeros((1, 64, 1), np.float32)
  x[0, ::8, 0] = 3e38
  k = np.zeros((5, 1, 1), np.float32)
  k[0, 0, 0] = 1.0
  want = np.asarray(fc.correlate(x, k))
  assert np.isfinite(want).all()
  assert_same_nonfinite(fc.correlate(x, k, method="fft"), want)
  raw = _fft.conv_general_dilated_fft(
    x, k, (1,), [(0, 0)], dimension_numbers=("NWC", "WIO", "NWC"), exact=False
  )
  assert not np.isfinite(np.asarray(raw)).all()  # what the bare FFT path gives


def test_fft_under_vmap_and_grad_with_nonfinite_members():
  """vmap: each member as direct gives it; grad of finite inputs as before."""
  x, k = _operands("conv", "1d-same")
  xs = np.stack([x, x, x])
  xs[1, 0, 5, 1] = np.inf
  f = lambda a, m: fc.conv(a, k, flip=True, padding="SAME", method=m)
  assert_same_nonfinite(
    jax.jit(jax.vmap(lambda a: f(a, "fft")))(xs), jax.vmap(lambda a: f(a, "direct"))(xs)
  )
  g = jax.grad(lambda a: jnp.sum(jnp.sin(f(a, "fft"))))(x)
  np.testing.assert_allclose(
    g, jax.grad(lambda a: jnp.sum(jnp.sin(f(a, "direct"))))(x), rtol=1e-4, atol=1e-4
  )


@pytest.mark.skipif(len(jax.devices()) < 8, reason="needs 8 devices (see conftest)")
def test_fft_sharded_nonfinite_values_match_direct():
  """Per shard (custom_partitioning): the check is local, the result exact."""
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
  rng = np.random.default_rng(4)
  x = rng.standard_normal((8, 4, 12, 10)).astype(np.float32)
  k = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
  x[3, 1, 4, 4] = np.nan
  x[6, 0, 0, 9] = -np.inf
  kw = dict(flip=True, layout="NCHW", kernel_layout="OIHW", padding="SAME")
  xs = jax.device_put(x, NamedSharding(mesh, P("data")))
  ks = jax.device_put(k, NamedSharding(mesh, P("model")))
  got = jax.jit(lambda a, b: fc.conv(a, b, method="fft", **kw))(xs, ks)
  assert_same_nonfinite(got, fc.conv(x, k, **kw))


@pytest.mark.parametrize("method", ["fft", "auto"])
@pytest.mark.parametrize("op", ["conv", "conv_transpose"])
def test_fft_raises_what_direct_raises_for_an_integer_preferred_type(op, method):
  x, k = _operands(op, "1d-same")
  f = fc.conv if op == "conv" else fc.conv_transpose
  kw = dict(flip=True, padding="SAME", preferred_element_type=jnp.int32)
  with pytest.raises(TypeError) as direct:
    f(x, k, **kw)
  with pytest.raises(TypeError) as other:
    f(x, k, method=method, **kw)
  assert str(other.value) == str(direct.value)


# ---------------------------------------------------------------------------
# 3. detect_convention: bounded work and memory


def _detect_arrays():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((1, 2, 8, 8)).astype(np.float32)
  w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
  return x, w, np.asarray(fc.conv(x, w, convention="pytorch", padding=1))


def test_detect_still_finds_the_layer_with_fixed_values_and_budget_says_so(monkeypatch):
  from flipconv import detect

  x, w, y = _detect_arrays()
  best = fc.detect_convention(x, w, y, padding=1, strides=1)[0]
  assert "pytorch" in best.names and best.kwargs["padding"] == 1
  monkeypatch.setattr(detect, "MAX_CANDIDATES", 0)
  with pytest.raises(ValueError, match=r"budget .*more than 0 candidate spellings"):
    fc.detect_convention(x, w, y)


def test_fft_float16_nonfinite_and_overflow_match_direct():
  """float16 is computed in float32: NaN, and outputs beyond float16's range, as direct."""
  rng = np.random.default_rng(5)
  x = rng.standard_normal((1, 64, 2)).astype(np.float16)
  k = rng.standard_normal((5, 2, 2)).astype(np.float16)
  x[0, 20, 1] = np.nan
  x[0, 40:44, 0] = 3e4  # times taps near 1: sums beyond 65504 are inf in float16
  k[:, 0, :] = np.abs(k[:, 0, :]) + 1
  want = np.asarray(fc.correlate(x, k, padding="SAME"))
  assert np.isposinf(want).any() and np.isnan(want).any()
  for method in ("fft", "auto"):
    got = np.asarray(fc.correlate(x, k, padding="SAME", method=method))
    assert got.dtype == np.float16
    for cls in (np.isnan, np.isposinf, np.isneginf):
      np.testing.assert_array_equal(cls(got), cls(want), err_msg=cls.__name__)
