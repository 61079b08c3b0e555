"""``lax.conv_general_dilated`` computed through FFTs: the ``method="fft"`` path.

A direct convolution costs ``out * taps`` multiply-adds per channel pair;
through FFTs it costs ``O(n log n)`` per transform plus one product per
frequency, so long kernels are much faster this way.
:func:`conv_general_dilated_fft` takes exactly ``lax.conv_general_dilated``'s
arguments and returns the same array (to floating-point rounding);
:func:`plan` holds the shape arithmetic and the cost model that it and the
``method="auto"`` rule (:mod:`flipconv._auto`) share.

How it computes, per spatial dimension, for the input ``x`` after input
dilation and padding, an effective kernel ``k`` and a stride ``s``::

  y[i] = sum_j x[i*s + j] k[j]                       (lax's cross-correlation)
       = sum_r sum_q x_r[i + q] k_r[q]                x_r[m] = x[m*s + r], k_r[q] = k[q*s + r]

so a stride turns into ``s`` polyphase components that join the channel
sum, and only the outputs that are kept are computed. Each component is a
cross-correlation without padding, which a circular correlation of length
``n >= len(x_r)`` reproduces on its first ``len(x_r) - len(k_r) + 1``
outputs (nothing wraps around there)::

  irfft(rfft(x_r, n) * conj(rfft(k_r, n)), n)

Zero padding at the start of ``x`` costs no length: it is left out and the
circular output read from ``-pad`` on, so a ``"FULL"`` convolution needs
``n >= len(x) + len(k) - 1``, not ``len(x) + 2 (len(k) - 1)``. An axis that is
long next to the kernel is cut into overlapping blocks instead (overlap-save:
one short FFT per block, and a short kernel transform) when the cost model
says that is cheaper. FFT lengths are the smallest ``2^a 3^b 5^c 7^d`` that
fit, which FFT libraries handle fast.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_batching import custom_vmap

from flipconv import _limits
from flipconv._validate import shape_str

# Prime factors of the FFT lengths used: XLA's CPU FFT (ducc) and cuFFT are
# fastest on these; a length with a large prime factor can be ten times slower.
FAST_PRIMES = (2, 3, 5, 7)

# The FFT path's cost model on CPU, in nanoseconds: per call, per transformed
# point and log2 of the transform size, per transformed point, per complex
# product of the channel sum (and extra in 2-D and up), per input and output
# element (see FftPlan.work). Fitted by `python benchmarks/bench_fft.py --calibrate`
# (2-core x86 CPU, jax 0.10.2).
FFT_NS = (84_800.0, 0.134, 1.30, 0.187, 0.0856, 0.0)

# Channels summed per step of the CPU loop in `_contract`.
_CHUNK = 8
# Overlap-save block lengths tried: the smallest fast length >= this many
# times the kernel's (per-phase) size.
_BLOCK_FACTORS = (2, 4, 8, 16, 32)


@functools.lru_cache(maxsize=4096)
def fast_length(n: int) -> int:
  """The smallest ``2^a 3^b 5^c 7^d`` that is ``>= n``.

  Args:
    n: the least length wanted.

  Returns:
    The FFT length to use (1 for ``n <= 1``).

  Examples:
    >>> from flipconv._fft import fast_length
    >>> fast_length(65536 + 8191), fast_length(1000), fast_length(1021)
    (73728, 1000, 1024)
  """
  if n <= 1:
    return 1
  best = 1 << (n - 1).bit_length()  # a power of two always qualifies
  odd = [1]  # every product of the odd fast primes below `best`
  for p in FAST_PRIMES[1:]:
    more = []
    for q in odd:
      while q < best:
        more.append(q)
        q *= p
    odd = more
  for q in odd:
    m = q
    while m < n:
      m *= 2
    best = min(best, m)
  return best


@dataclasses.dataclass(frozen=True)
class Axis:
  """How one spatial dimension of an FFT convolution is computed.

  Attributes:
    out: outputs kept.
    stride: the window stride, which is also the number of polyphase components.
    taps: the effective (dilated) kernel size.
    kernel_dilation: the kernel's dilation.
    kernel_blocks: the length of each polyphase component of the kernel.
    pad: ``(low, high, interior)`` for ``lax.pad`` of the input: its padding
      and dilation, less what no kept output reads and the leading zeros that
      ``shift`` accounts for; the result has ``extent * stride`` elements.
    extent: the length of each polyphase component of the padded input.
    length: the FFT length.
    shift: (one transform) leading zero blocks left out of the input; the
      circular output is read from ``-shift`` on.
    block: outputs per overlap-save block, or 0 for one transform of the axis.
    count: the number of blocks (1 for one transform).
  """

  out: int
  stride: int
  taps: int
  kernel_dilation: int
  kernel_blocks: int
  pad: tuple[int, int, int]
  extent: int
  length: int
  shift: int = 0
  block: int = 0
  count: int = 1


@dataclasses.dataclass(frozen=True)
class FftPlan:
  """The static shape arithmetic of one FFT convolution.

  Attributes:
    batch: the batch size.
    groups: ``feature_group_count``.
    in_per_group: input channels per group (the kernel's ``I``).
    out_per_group: output channels per group.
    axes: one :class:`Axis` per spatial dimension, in lax's spatial order.
  """

  batch: int
  groups: int
  in_per_group: int
  out_per_group: int
  axes: tuple[Axis, ...]

  @property
  def contraction(self) -> int:
    """Terms summed per frequency and output: channels per group times phases."""
    return self.in_per_group * math.prod(a.stride for a in self.axes)

  @property
  def out(self) -> tuple[int, ...]:
    return tuple(a.out for a in self.axes)

  @property
  def lengths(self) -> tuple[int, ...]:
    return tuple(a.length for a in self.axes)

  def work(self) -> tuple[float, ...]:
    """The quantities the cost model is linear in.

    Returns:
      (points transformed times log2 of the transform size, points
      transformed, complex products of the channel sum, the same in 2-D and
      up (where XLA's fused sum indexes several frequency axes: 2-3x slower),
      input and output elements moved).
    """
    size = math.prod(self.lengths)
    blocks = self.batch * math.prod(a.count for a in self.axes)
    g, c, o = self.groups, self.contraction, self.out_per_group
    transforms = g * (blocks * c + o * c + blocks * o)
    freqs = size // self.lengths[-1] * (self.lengths[-1] // 2 + 1)
    moved = self.batch * g * (c * math.prod(a.extent for a in self.axes) + o * math.prod(self.out))
    products = blocks * g * o * c * freqs
    return (
      transforms * size * math.log2(max(size, 2)),
      transforms * size,
      products,
      products * (len(self.axes) > 1),
      moved,
    )

  def peak_elements(self) -> int:
    """Elements of the largest working arrays together: the padded input, its blocks,
    the spectra and the uncropped output, counting a complex value as two."""
    size = math.prod(self.lengths)
    freqs = 2 * size // self.lengths[-1] * (self.lengths[-1] // 2 + 1)
    blocks = self.batch * math.prod(a.count for a in self.axes)
    g, c, o = self.groups, self.contraction, self.out_per_group
    padded = self.batch * g * c * math.prod(a.extent for a in self.axes)
    return (
      padded + blocks * g * c * (size + freqs) + g * o * c * freqs + blocks * g * o * (freqs + size)
    )

  def fits(self, itemsize: int) -> bool:
    """Whether the working arrays fit in the device's memory (:func:`_limits.max_bytes`)."""
    count = self.peak_elements()
    return count <= _limits.MAX_EXTENT and count * itemsize <= _limits.max_bytes()

  def cost_ns(self) -> float:
    """Modelled CPU time of this plan, in nanoseconds (``FFT_NS``)."""
    return FFT_NS[0] + sum(c * w for c, w in zip(FFT_NS[1:], self.work(), strict=True))


def _tuple(value: Any, n: int, name: str) -> tuple[int, ...]:
  if value is None:
    return (1,) * n
  value = tuple(int(v) for v in value)
  if len(value) != n:
    raise ValueError(
      f"conv_general_dilated_fft: {name} has {len(value)} entries but the conv "
      f"has {n} spatial dimensions."
    )
  return value


def _axis_options(
  size: int, d: int, lo: int, hi: int, t: int, kd: int, s: int, force: int | None
) -> list[Axis]:
  """Ways to compute one axis: one transform (first), then overlap-save blocks."""
  full = (size - 1) * d + 1 + lo + hi if size > 0 else lo + hi
  m = max((full - t) // s + 1, 0)
  q = -(-t // s)
  p = m - 1 + q  # per-phase input length that the kept outputs read
  first = lo if lo >= 0 else lo % d  # the first sample among the p * s padded positions
  end = min(lo + (size - 1) * d + 1, p * s)
  if size == 0 or m == 0 or first >= end:
    c = z = 0
  else:  # blocks that are zeros in every phase: c leading, z trailing
    c, z = first // s, p - -(-end // s)
  whole = Axis(
    m,
    s,
    t,
    kd,
    q,
    (lo - c * s, hi + (p - z) * s - full, d - 1),
    p - c - z,
    fast_length(max(p - c - z + max(c, z), q, 1)),
    shift=c,
  )
  if force is not None:
    lengths = [force] if force else []
    if force and force < q:
      raise ValueError(
        f"conv_general_dilated_fft: block length {force} is shorter than the "
        f"kernel's {q} (per phase)."
      )
  else:
    lengths = sorted({fast_length(f * q) for f in _BLOCK_FACTORS})
    lengths = [n for n in lengths if n < whole.length and n - q + 1 < m]
  options = [] if force else [whole]
  for n in lengths:
    b = n - q + 1
    count, extra = -(-m // b), -(-(q - 1) // b)
    extent = (count + extra) * b
    options.append(
      Axis(m, s, t, kd, q, (lo, hi + extent * s - full, d - 1), extent, n, block=b, count=count)
    )
  return options


def plan(
  lhs_shape: Sequence[int],
  rhs_shape: Sequence[int],
  *,
  window_strides: Sequence[int],
  padding: str | Sequence[tuple[int, int]],
  lhs_dilation: Sequence[int] | None = None,
  rhs_dilation: Sequence[int] | None = None,
  dimension_numbers: Any = None,
  feature_group_count: int = 1,
  block_lengths: Sequence[int] | None = None,
  **unused: Any,
) -> FftPlan:
  """Shapes, pads, FFT lengths and blocking of an FFT convolution (no arrays).

  Args:
    lhs_shape: the input's shape.
    rhs_shape: the kernel's shape.
    window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
      feature_group_count: as in ``lax.conv_general_dilated``.
    block_lengths: per spatial dimension, the overlap-save FFT length, or 0
      for one transform of the axis; ``None`` picks the cheapest by the cost
      model (:meth:`FftPlan.cost_ns`).
    **unused: the other arguments of ``lax.conv_general_dilated``, ignored.

  Returns:
    An :class:`FftPlan`.

  Examples:
    >>> from flipconv._fft import plan
    >>> p = plan((1, 1, 65536), (1, 1, 8192), window_strides=(1,), padding=[(8191, 8191)],
    ...          block_lengths=(0,))
    >>> p.out, p.lengths  # "FULL": 73,727 outputs from one transform of 73,728
    ((73727,), (73728,))
  """
  del unused
  lhs_shape, rhs_shape = tuple(lhs_shape), tuple(rhs_shape)
  dn = lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers)
  n = len(lhs_shape) - 2
  x_shape = tuple(lhs_shape[a] for a in dn.lhs_spec)
  k_shape = tuple(rhs_shape[a] for a in dn.rhs_spec)
  strides = _tuple(window_strides, n, "window_strides")
  in_dil = _tuple(lhs_dilation, n, "lhs_dilation")
  k_dil = _tuple(rhs_dilation, n, "rhs_dilation")
  taps = tuple((k - 1) * d + 1 for k, d in zip(k_shape[2:], k_dil, strict=True))
  padding = lax_pads(padding, lhs_shape, rhs_shape, dimension_numbers, strides, k_dil)
  pads = tuple((int(lo), int(hi)) for lo, hi in padding)
  if len(pads) != n:
    raise ValueError(
      f"conv_general_dilated_fft: padding has {len(pads)} pairs but the conv has "
      f"{n} spatial dimensions."
    )
  groups = int(feature_group_count)
  (batch, channels), (o, i) = x_shape[:2], k_shape[:2]
  if groups < 1 or channels != i * groups or o % groups:
    raise ValueError(
      f"conv_general_dilated_fft: the kernel (O={o}, I={i}) does not fit an input with "
      f"{channels} channels and feature_group_count={groups} (lhs shape "
      f"{shape_str(lhs_shape)}, rhs shape {shape_str(rhs_shape)})."
    )
  force = _tuple(block_lengths, n, "block_lengths") if block_lengths is not None else (None,) * n
  options = [
    _axis_options(*args)
    for args in zip(
      x_shape[2:], in_dil, *zip(*pads, strict=True), taps, k_dil, strides, force, strict=True
    )
  ]
  plans = [FftPlan(batch, groups, i, o // groups, axes) for axes in itertools.product(*options)]
  return min(plans, key=FftPlan.cost_ns)


def _dtypes(dtype: Any, preferred_element_type: Any) -> tuple[Any, Any]:
  """(compute dtype, output dtype) for inputs of ``dtype``."""
  out = jnp.dtype(preferred_element_type) if preferred_element_type is not None else dtype
  wide = any(jnp.finfo(t).bits == 64 for t in (dtype, out) if jnp.issubdtype(t, jnp.inexact))
  if jnp.issubdtype(dtype, jnp.complexfloating) or jnp.issubdtype(out, jnp.complexfloating):
    return (jnp.complex128 if wide else jnp.complex64), out
  return (jnp.float64 if wide else jnp.float32), out


@custom_vmap
def _trusted(y: jnp.ndarray) -> jnp.ndarray:
  """Whether every value of ``y`` is finite.

  Under ``vmap`` it answers for the whole batch (one unbatched boolean), so the
  ``lax.cond`` it drives stays a branch instead of becoming a select that
  would run both methods.
  """
  return jnp.all(jnp.isfinite(y))


@_trusted.def_vmap
def _(axis_size: int, in_batched: Any, y: jnp.ndarray) -> tuple[jnp.ndarray, bool]:
  del axis_size, in_batched
  return _trusted(y), False


def _split_phases(a: jnp.ndarray, lead: int, strides: Sequence[int]) -> jnp.ndarray:
  """``(*lead, L1*s1, ..) -> (*lead, s1, .., L1, ..)``: polyphase components, phase-major."""
  if all(s == 1 for s in strides):
    return a
  head = a.shape[:lead]
  sizes = tuple(d // s for d, s in zip(a.shape[lead:], strides, strict=True))
  a = a.reshape(*head, *(v for pair in zip(sizes, strides, strict=True) for v in pair))
  n = len(strides)
  perm = (*range(lead), *(lead + 2 * j + 1 for j in range(n)), *(lead + 2 * j for j in range(n)))
  return a.transpose(perm)


def _windows(x: jnp.ndarray, axis: int, ax: Axis) -> jnp.ndarray:
  """Overlap-save blocks: axis of ``x`` -> ``(count, length)``, block ``j`` from ``j * block``.

  One gather (measured 2-3x faster on CPU than slices and a concatenate).
  """
  shape = (ax.count, ax.length)  # iotas, not a constant as large as the output
  index = lax.broadcasted_iota(np.int32, shape, 0) * ax.block + lax.broadcasted_iota(
    np.int32, shape, 1
  )
  return jnp.take(x, index, axis=axis, mode="clip")


def _take_circular(y: jnp.ndarray, axis: int, start: int, size: int) -> jnp.ndarray:
  """``y[(start + arange(size)) % n]`` along ``axis``, as contiguous slices."""
  n = y.shape[axis]
  pieces, pos, left = [], start % n, size
  while left > 0:
    step = min(n - pos, left)
    pieces.append(lax.slice_in_dim(y, pos, pos + step, axis=axis))
    pos, left = 0, left - step
  return pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces, axis=axis)


def _contract(xf: jnp.ndarray, kf: jnp.ndarray, precision: Any, platform: str) -> jnp.ndarray:
  """``y[b,g,o,t,f] = sum_c x[b,g,c,t,f] * k[g,o,c,f]``: the channel sum per frequency ``f``.

  ``t`` counts overlap-save blocks. One ``einsum`` on accelerators. On CPU a
  complex ``dot_general`` batched over thousands of frequencies runs at a
  fraction of the machine's speed, so the sum is a loop over chunks of
  channels, each a fused broadcast product (measured 3-10x faster than the
  einsum for 16-256 channels).
  """
  if platform != "cpu":
    return jnp.einsum("bgctf,gocf->bgotf", xf, kf, precision=precision)

  def chunk(start: Any, size: int) -> jnp.ndarray:
    x = lax.dynamic_slice_in_dim(xf, start, size, axis=2)
    k = lax.dynamic_slice_in_dim(kf, start, size, axis=2)
    return jnp.sum(x[:, :, None] * k[None, :, :, :, None], axis=3)

  c = xf.shape[2]
  first = c - (c - 1) // _CHUNK * _CHUNK  # 1.._CHUNK channels, then whole chunks
  y = chunk(0, first)
  if c > first:
    y = lax.fori_loop(
      0, (c - first) // _CHUNK, lambda i, acc: acc + chunk(first + i * _CHUNK, _CHUNK), y
    )
  return y


def conv_general_dilated_fft(
  lhs: jax.typing.ArrayLike,
  rhs: jax.typing.ArrayLike,
  window_strides: Sequence[int],
  padding: str | Sequence[tuple[int, int]],
  lhs_dilation: Sequence[int] | None = None,
  rhs_dilation: Sequence[int] | None = None,
  dimension_numbers: Any = None,
  feature_group_count: int = 1,
  precision: Any = None,
  preferred_element_type: Any = None,
  *,
  block_lengths: Sequence[int] | None = None,
  exact: bool = True,
) -> jax.Array:
  """``lax.conv_general_dilated`` computed through FFTs: the same result, faster for long kernels.

  Takes exactly the arguments of ``lax.conv_general_dilated`` (a
  cross-correlation: flip the kernel first for a true convolution), for any
  spatial rank, layout, feature groups, strides, input and kernel dilation,
  and explicit padding whose pairs may be negative (cropping) or a
  ``"VALID"``/``"SAME"``/``"SAME_LOWER"`` string. It is built from
  differentiable ``jnp`` operations, so it works under ``jit``, ``grad``
  (gradients equal the direct method's to rounding) and ``vmap``.

  * Real inputs use real FFTs (``rfftn``/``irfftn``), complex ones ``fftn``.
  * ``float16``/``bfloat16`` inputs are computed in ``float32`` and the
    result cast back (or to ``preferred_element_type``); ``float64`` and
    ``complex128`` stay in double precision.
  * Channels are summed in the frequency domain (one contraction per
    frequency); ``precision`` applies to it where it is a matrix product (on
    accelerators; ``None`` means ``HIGHEST`` there, since reduced-precision
    passes over large spectra would show up as errors everywhere in the
    output). The FFTs themselves run in float32 (float64).
  * Integer inputs are refused with a ``ValueError``: the result would be
    rounded floats, not exact integers; use the direct method for them.
    Arguments that ``lax.conv_general_dilated`` refuses (such as an integer
    ``preferred_element_type`` for float inputs) raise its error here too.
  * Non-finite values: a NaN or infinity in an input, or an overflow in a
    spectrum, makes every output of its transform NaN or infinite. So where
    the first value of some inverse transform is not finite, the direct
    method recomputes the result (one ``lax.cond`` on a single flag, per
    device under sharding and for the whole batch under ``vmap``): NaN and
    infinities come out exactly where, and of the sign, that the direct
    method gives them. Finite inputs pay that check and the branch.
  * Where the transforms would not fit in the device's memory (a huge stride
    or padding around a small input), the direct method computes the result.

  Accuracy (float32, Gaussian inputs, ``max|err| / max|y|`` against the
  float64 result, ``python benchmarks/bench_fft.py --accuracy``): 2.2e-7 to
  3.0e-7 for a 65,536-sample signal with 33 to 8,192 taps, for 8x16->16
  channels of 16,384 samples with 1,024 taps, and for a 512x512 image with
  7x7 to 63x63 kernels; the direct float32 conv gives 0.9e-7 to 4.0e-7 on the
  same cases. The error is spread evenly over the output (relative to its
  largest value, not to each element), so outputs that are tiny next to the
  largest one have a larger relative error than the direct method gives them.

  Args:
    lhs: the input.
    rhs: the kernel.
    window_strides: the strides, one per spatial dimension.
    padding: ``(low, high)`` pairs (negative crops) or a lax padding string.
    lhs_dilation: input dilation (``None``: 1).
    rhs_dilation: kernel dilation (``None``: 1).
    dimension_numbers: a ``lax.ConvDimensionNumbers``, a 3-tuple of layout
      strings, or ``None`` (``NC...``, ``OI...``).
    feature_group_count: feature groups (``== channels`` is depthwise).
    precision: ``lax.Precision`` for the frequency-domain channel sum.
    preferred_element_type: the output dtype (default: the inputs').
    block_lengths: per spatial dimension, an overlap-save FFT length or 0
      for one transform; ``None`` (default) lets the cost model choose.
    exact: recompute by the direct method where the output is not finite (see
      above); ``False`` is the bare FFT path, kept for the benchmark.

  Returns:
    What ``lax.conv_general_dilated`` returns for these arguments.

  Raises:
    ValueError: integer or boolean inputs, a kernel whose channels do not fit
      the input's and ``feature_group_count``, or arguments of the wrong length.
    TypeError: what ``lax.conv_general_dilated`` raises for these arguments.

  Examples:
    >>> import numpy as np
    >>> from jax import lax
    >>> from flipconv._fft import conv_general_dilated_fft
    >>> x = np.arange(8.).reshape(1, 1, 8)
    >>> k = np.array([1., 0., -1.]).reshape(1, 1, 3)
    >>> y = conv_general_dilated_fft(x, k, (2,), [(1, 1)])
    >>> y.shape, bool(np.allclose(y, lax.conv_general_dilated(x, k, (2,), [(1, 1)]), atol=1e-5))
    ((1, 1, 4), True)
  """
  where = "conv_general_dilated_fft"
  lhs, rhs = jnp.asarray(lhs), jnp.asarray(rhs)
  dtype = jnp.result_type(lhs, rhs)
  if not jnp.issubdtype(dtype, jnp.inexact):
    raise ValueError(
      f"{where}: method='fft' computes in floating point, so it does not take {dtype} inputs "
      "(the result would be rounded floats, not exact integers); use method='direct' for "
      "integer convolutions, or cast the inputs to a float dtype."
    )
  conv_kwargs = dict(
    window_strides=window_strides,
    padding=padding,
    lhs_dilation=lhs_dilation,
    rhs_dilation=rhs_dilation,
    dimension_numbers=dimension_numbers,
    feature_group_count=feature_group_count,
  )
  direct = functools.partial(
    lax.conv_general_dilated,
    **conv_kwargs,
    precision=precision,
    preferred_element_type=preferred_element_type,
  )
  # lax's own shape and dtype rules (no computation): what direct refuses, this refuses alike.
  jax.eval_shape(
    direct, jax.ShapeDtypeStruct(lhs.shape, lhs.dtype), jax.ShapeDtypeStruct(rhs.shape, rhs.dtype)
  )
  p = plan(lhs.shape, rhs.shape, **conv_kwargs, block_lengths=block_lengths)
  dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  compute, out_dtype = _dtypes(dtype, preferred_element_type)
  if 0 in p.out or p.batch == 0 or p.out_per_group == 0:
    out_perm = tuple(int(a) for a in np.argsort(dn.out_spec))
    shape = (p.batch, p.groups * p.out_per_group, *p.out)
    return jnp.zeros(tuple(shape[a] for a in out_perm), out_dtype)
  if not p.fits(jnp.dtype(compute).itemsize):
    # Transforms larger than memory (huge strides or padding around a small input): the
    # direct method computes the same result without them.
    return direct(lhs, rhs)
  raw, first, finish = _transform_conv(lhs, rhs, p, dn, compute, out_dtype, precision)
  if not exact:
    return finish(raw)
  # One value per transform (batch x output channel x block) tells: a NaN or
  # infinity in an input, an overflow in a spectrum, or an output beyond the
  # dtype (some frequency then exceeds it too) makes every output of that
  # transform NaN or infinite. A narrower output dtype can overflow on its own.
  if jnp.finfo(out_dtype).bits < jnp.finfo(compute).bits:
    y = finish(raw)
    raw, first, finish = y, y, lambda y: y
  # The kept outputs are cut and laid out inside the branch. (XLA may still copy the
  # branch's result once, into another layout: the measured cost on finite inputs.)
  pads = tuple(
    tuple(int(v) for v in pair)
    for pair in lax_pads(
      padding, lhs.shape, rhs.shape, dimension_numbers, window_strides, rhs_dilation
    )
  )
  slow = functools.partial(
    _direct_padded,
    pads=pads,
    **conv_kwargs,
    precision=precision,
    preferred_element_type=preferred_element_type,
  )
  return lax.cond(
    _trusted(lax.stop_gradient(first)),
    lambda r, a, b: finish(r),
    lambda r, a, b: slow(a, b),
    raw,
    lhs,
    rhs,
  )


def lax_pads(
  padding: Any,
  lhs_shape: Sequence[int],
  rhs_shape: Sequence[int],
  dimension_numbers: Any,
  window_strides: Any,
  rhs_dilation: Any = None,
) -> Any:
  """``padding`` as ``(low, high)`` pairs: a name (``"SAME"``, ...) by lax's rule, from the
  undilated input's size, as ``lax.conv_general_dilated`` applies it; pairs as they are."""
  if not isinstance(padding, str):
    return padding
  dn = lax.conv_dimension_numbers(tuple(lhs_shape), tuple(rhs_shape), dimension_numbers)
  n = len(lhs_shape) - 2
  k_dil = _tuple(rhs_dilation, n, "rhs_dilation")
  taps = [(rhs_shape[a] - 1) * d + 1 for a, d in zip(dn.rhs_spec[2:], k_dil, strict=True)]
  strides = _tuple(window_strides, n, "window_strides")
  return lax.padtype_to_pads([lhs_shape[a] for a in dn.lhs_spec[2:]], taps, strides, padding)


def _direct_padded(lhs: jax.Array, rhs: jax.Array, *, pads: Any, **kw: Any) -> jax.Array:
  """The direct conv with its padding and input dilation written into the input.

  Inside a ``lax.cond`` branch XLA's CPU convolution skips padded positions, so
  a NaN or infinite kernel tap over padding gives 0 there, where the top-level
  convolution multiplies the zeros and gives NaN. Zeros that are data are
  multiplied in both.
  """
  dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, kw["dimension_numbers"])
  n = len(pads)
  in_dil = kw.get("lhs_dilation") or (1,) * n
  config = [(0, 0, 0)] * lhs.ndim
  for axis, (lo, hi), d in zip(dn.lhs_spec[2:], pads, in_dil, strict=True):
    config[axis] = (lo, hi, d - 1)
  # The barrier keeps XLA from folding the pad back into the convolution's window.
  lhs = lax.optimization_barrier(lax.pad(lhs, jnp.zeros((), lhs.dtype), config))
  kw = {**kw, "padding": [(0, 0)] * n, "lhs_dilation": (1,) * n}
  return lax.conv_general_dilated(lhs, rhs, **kw)


def _transform_conv(
  lhs: jnp.ndarray,
  rhs: jnp.ndarray,
  p: FftPlan,
  dn: lax.ConvDimensionNumbers,
  compute: Any,
  out_dtype: Any,
  precision: Any,
) -> jnp.ndarray:
  """The FFT convolution of a plan, without the exactness fallback.

  Returns:
    The inverse transforms, the first value of each (see
    :func:`conv_general_dilated_fft`), and the function that makes the
    output of them (:func:`_finish`).
  """
  n, g, og, c = len(p.axes), p.groups, p.out_per_group, p.contraction
  out_perm = tuple(int(a) for a in np.argsort(dn.out_spec))
  strides = tuple(a.stride for a in p.axes)
  x = lhs.transpose(dn.lhs_spec).astype(compute)  # (B, C, *spatial)
  k = rhs.transpose(dn.rhs_spec).astype(compute)  # (O, I, *taps)
  zero = jnp.zeros((), compute)
  x = lax.pad(x, zero, ((0, 0, 0), (0, 0, 0), *(a.pad for a in p.axes)))
  k = lax.pad(
    k,
    zero,
    (
      (0, 0, 0),
      (0, 0, 0),
      *((0, a.kernel_blocks * a.stride - a.taps, a.kernel_dilation - 1) for a in p.axes),
    ),
  )
  x = _split_phases(x, 2, strides).reshape(p.batch, g, c, *(a.extent for a in p.axes))
  k = _split_phases(k, 2, strides).reshape(g, og, c, *(a.kernel_blocks for a in p.axes))

  # Overlap-save: each blocked axis becomes (count, length); the counts go
  # before the transformed axes, where the channel sum treats them as batch.
  blocked = [j for j, a in enumerate(p.axes) if a.block]
  for j in reversed(blocked):
    x = _windows(x, 3 + j, p.axes[j])
  count_axes = [3 + j + r for r, j in enumerate(blocked)]
  x = x.transpose(0, 1, 2, *count_axes, *(a for a in range(3, x.ndim) if a not in count_axes))
  counts = x.shape[3 : 3 + len(blocked)]

  axes = tuple(range(x.ndim - n, x.ndim))
  if jnp.issubdtype(compute, jnp.complexfloating):
    xf = jnp.fft.fftn(x, s=p.lengths, axes=axes)
    kf = jnp.conj(jnp.fft.fftn(jnp.conj(k), s=p.lengths, axes=tuple(range(3, 3 + n))))
  else:  # conj(fft(k)) is the transform of k circularly reversed: a correlation
    xf = jnp.fft.rfftn(x, s=p.lengths, axes=axes)
    kf = jnp.conj(jnp.fft.rfftn(k, s=p.lengths, axes=tuple(range(3, 3 + n))))
  freq = xf.shape[x.ndim - n :]
  yf = _contract(
    xf.reshape(p.batch, g, c, math.prod(counts), -1),
    kf.reshape(g, og, c, -1),
    lax.Precision.HIGHEST if precision is None else precision,
    jax.default_backend(),
  ).reshape(p.batch, g, og, *counts, *freq)
  if jnp.issubdtype(compute, jnp.complexfloating):
    y = jnp.fft.ifftn(yf, s=p.lengths, axes=axes)
  else:
    y = jnp.fft.irfftn(yf, s=p.lengths, axes=axes)
  first = y[(Ellipsis, *(0,) * n)]
  return (
    y,
    first,
    functools.partial(
      _finish, p=p, axes=axes, blocked=tuple(blocked), out_perm=out_perm, out_dtype=out_dtype
    ),
  )


def _finish(
  y: jnp.ndarray, *, p: FftPlan, axes: Any, blocked: Any, out_perm: Any, out_dtype: Any
) -> jnp.ndarray:
  """The kept outputs of the inverse transforms, in lax's output layout and dtype."""
  n, g, og = len(p.axes), p.groups, p.out_per_group
  for axis, a in zip(axes, p.axes, strict=True):
    y = (
      lax.slice_in_dim(y, 0, a.block, axis=axis)
      if a.block
      else _take_circular(y, axis, -a.shift, a.out)
    )
  if blocked:  # (B, G, O/G, *counts, *sizes) -> (B, G, O/G, ..., count_j, block_j, ...)
    pos = {j: 3 + r for r, j in enumerate(blocked)}
    perm = [0, 1, 2]
    for j in range(n):
      perm += [pos[j], axes[j]] if j in pos else [axes[j]]
    y = y.transpose(perm).reshape(p.batch, g, og, *(a.count * (a.block or a.out) for a in p.axes))
    y = y[(Ellipsis, *(slice(0, m) for m in p.out))]
  y = y.reshape(p.batch, g * og, *p.out).transpose(out_perm)
  if jnp.issubdtype(y.dtype, jnp.complexfloating) and not jnp.issubdtype(
    out_dtype, jnp.complexfloating
  ):
    y = y.real
  return y.astype(out_dtype)
