"""Layout strings <-> ``lax.ConvDimensionNumbers``, for any spatial rank.

A data layout names the axes of an input or output with ``N`` (batch), ``C``
(channels) and one letter per spatial axis (``"NCHW"``, ``"NWC"``,
``"NDHWC"``). A kernel layout uses ``O`` (output channels), ``I`` (input
channels per group) and the same spatial letters (``"OIHW"``, ``"HWIO"``).
A data layout without ``N`` describes an unbatched array (Equinox style).

Spatial axes are matched by letter. The order in which per-dimension
arguments (strides, padding, dilation) are given is the order of the
spatial letters in the kernel layout, which is lax's rule; for every common
layout pair it is also the input's order.

Layouts in the conventions registry are written for 2-D (``H``, ``W``);
:func:`generalize` rewrites them for 1-D (drop ``H``) and 3-D (add ``D``
in front of ``H``). This module is the one place that rule lives.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from jax import lax

# Spatial letters for default layouts: the last n of these. lax writes 2-D
# as HW and 3-D as DHW; longer ranks borrow letters no layout reserves.
_SPATIAL_POOL = "TUVXYZDHW"
_DATA_RESERVED = frozenset("NC")
_KERNEL_RESERVED = frozenset("OI")
_ALL_RESERVED = frozenset("NCOI")


def default_spatial(n: int) -> str:
  """The spatial letters of the default layouts for ``n`` dimensions."""
  if n > len(_SPATIAL_POOL):
    raise ValueError(f"at most {len(_SPATIAL_POOL)} spatial dimensions are supported, got {n}.")
  return _SPATIAL_POOL[len(_SPATIAL_POOL) - n :]


def default_layouts(n: int) -> tuple[str, str]:
  """Channels-last defaults (JAX/Flax style): ``N...C`` and ``...IO``."""
  s = default_spatial(n)
  return "N" + s + "C", s + "IO"


def spatial_letters(layout: str, kind: str) -> str:
  """The spatial letters of a data (``kind="data"``) or kernel layout, in order."""
  reserved = _DATA_RESERVED if kind == "data" else _KERNEL_RESERVED
  return "".join(c for c in layout if c not in reserved)


def generalize(layout: str, n: int) -> str:
  """Rewrites a layout written for some rank (usually 2-D) for ``n`` dimensions.

  The spatial letters must form one contiguous block; it is replaced by the
  default letters for ``n`` dimensions (``W``; ``HW``; ``DHW``; ...), so
  ``"NCHW"`` becomes ``"NCW"`` for 1-D and ``"NCDHW"`` for 3-D, and
  ``"HWIO"`` becomes ``"WIO"`` and ``"DHWIO"``.

  Args:
    layout: a data or kernel layout string.
    n: the number of spatial dimensions wanted.

  Returns:
    The layout for ``n`` spatial dimensions (unchanged if it has ``n`` already).
  """
  positions = [i for i, c in enumerate(layout) if c not in _ALL_RESERVED]
  if len(positions) == n:
    return layout
  if not positions or positions != list(range(positions[0], positions[-1] + 1)):
    raise ValueError(
      f"layout {layout!r} has no contiguous block of spatial letters, so it cannot be "
      f"rewritten for {n} spatial dimensions; pass a layout with {n} spatial letters."
    )
  return layout[: positions[0]] + default_spatial(n) + layout[positions[-1] + 1 :]


@dataclasses.dataclass(frozen=True)
class Layouts:
  """The three layouts of one convolution, checked against each other.

  Attributes:
    lhs: the input's layout (``N`` optional: without it the input is unbatched).
    rhs: the kernel's layout.
    out: the output's layout (batched exactly when ``lhs`` is).
    order: the spatial letters in the order per-dimension arguments are given;
      ``""`` means their order in ``rhs`` (lax's rule for strings).
  """

  lhs: str
  rhs: str
  out: str
  order: str = ""

  @property
  def n(self) -> int:
    return len(self.rhs) - 2

  @property
  def spatial(self) -> str:
    """Spatial letters in the order per-dimension arguments are given."""
    return self.order or spatial_letters(self.rhs, "kernel")

  @property
  def batched(self) -> bool:
    return "N" in self.lhs

  def batched_specs(self) -> tuple[str, str, str]:
    """The layouts with ``N`` in front where the input is unbatched."""
    if self.batched:
      return self.lhs, self.rhs, self.out
    return "N" + self.lhs, self.rhs, "N" + self.out

  def dimension_numbers(self) -> lax.ConvDimensionNumbers:
    """``lax.ConvDimensionNumbers`` for the batched arrays (see ``batched_specs``)."""
    lhs, rhs, out = self.batched_specs()
    sp = self.spatial
    return lax.ConvDimensionNumbers(
      lhs_spec=(lhs.index("N"), lhs.index("C"), *(lhs.index(c) for c in sp)),
      rhs_spec=(rhs.index("O"), rhs.index("I"), *(rhs.index(c) for c in sp)),
      out_spec=(out.index("N"), out.index("C"), *(out.index(c) for c in sp)),
    )

  def axis(self, which: str, letter: str) -> int:
    """Axis of ``letter`` in the array described by ``which`` (lhs, rhs or out)."""
    return getattr(self, which).index(letter)

  def spatial_axes(self, which: str) -> tuple[int, ...]:
    """Axes of the spatial letters, in argument order, in the array ``which``."""
    layout = getattr(self, which)
    return tuple(layout.index(c) for c in self.spatial)


def check_letters(layout: Any, name: str, where: str, required: str) -> str:
  if not isinstance(layout, str):
    raise TypeError(
      f"{where}: {name} must be a layout string such as "
      f"{'NCHW' if required == 'NC' else 'OIHW'!r}, got {layout!r}."
    )
  if not layout.isalpha() or not layout.isupper():
    raise ValueError(f"{where}: {name} {layout!r} must be upper-case letters only.")
  repeated = sorted({c for c in layout if layout.count(c) > 1})
  if repeated:
    raise ValueError(
      f"{where}: {name} {layout!r} repeats the letter(s) {', '.join(repeated)}; "
      "each axis needs its own letter."
    )
  must = "C" if required == "NC" else "OI"
  missing = [c for c in must if c not in layout]
  if missing:
    what = "C (channels)" if required == "NC" else "O (output channels) and I (input channels)"
    raise ValueError(
      f"{where}: {name} {layout!r} lacks {', '.join(missing)}; it must contain "
      f"{what}" + (", optionally N (batch)" if required == "NC" else "") + "."
    )
  other = (_KERNEL_RESERVED if required == "NC" else _DATA_RESERVED) & set(layout)
  if other:
    raise ValueError(
      f"{where}: {name} {layout!r} uses {', '.join(sorted(other))}, which "
      f"{'belong' if len(other) > 1 else 'belongs'} to "
      f"{'kernel' if required == 'NC' else 'data'} layouts."
    )
  return layout


def _from_dimension_numbers(dn: lax.ConvDimensionNumbers) -> tuple[str, str, str, str]:
  """Letter strings (lhs, rhs, out, argument order) equal to index-based numbers."""
  n = len(dn.lhs_spec) - 2
  letters = default_spatial(n)

  def build(spec: Sequence[int], first: str, second: str) -> str:
    chars = [""] * len(spec)
    chars[spec[0]], chars[spec[1]] = first, second
    for i, axis in enumerate(spec[2:]):
      chars[axis] = letters[i]
    return "".join(chars)

  return (
    build(dn.lhs_spec, "N", "C"),
    build(dn.rhs_spec, "O", "I"),
    build(dn.out_spec, "N", "C"),
    letters,
  )


def parse_layouts(
  layout: Any,
  kernel_layout: Any,
  out_layout: Any,
  *,
  default_n: int,
  where: str,
  defaults: tuple[str, str] | None = None,
) -> Layouts:
  """Resolves the layout arguments of a conv into checked :class:`Layouts`.

  Args:
    layout: a data layout string, a 3-tuple of strings ``(lhs, rhs, out)``, a
      ``lax.ConvDimensionNumbers``, or ``None``.
    kernel_layout: a kernel layout string or ``None``.
    out_layout: a data layout string or ``None`` (then the same as ``layout``).
    default_n: the spatial rank to use when no layout string says it.
    where: the public function's name, for error messages.
    defaults: ``(data layout, kernel layout)`` used where ``None`` is given,
      written for any rank (generalised here); channels-last if ``None``.

  Returns:
    The checked layouts.
  """
  order = ""
  if isinstance(layout, lax.ConvDimensionNumbers) or (
    isinstance(layout, tuple) and len(layout) == 3
  ):
    if kernel_layout is not None or out_layout is not None:
      raise ValueError(
        f"{where}: layout is a full set of dimension numbers {layout!r}; "
        "do not pass kernel_layout or out_layout with it."
      )
    if isinstance(layout, lax.ConvDimensionNumbers):
      specs = layout
      if not all(isinstance(s, tuple) for s in specs):
        raise TypeError(f"{where}: layout {layout!r} must hold tuples of axis indices.")
      rank = len(specs.lhs_spec)
      for field, spec in zip(specs._fields, specs, strict=True):
        if rank < 3 or sorted(spec) != list(range(rank)):
          raise ValueError(
            f"{where}: layout {layout!r} is not valid dimension numbers: "
            f"{field} {spec!r} must name each axis 0..{rank - 1} once (one "
            "batch/feature axis pair and at least one spatial axis, the same "
            "rank in lhs_spec, rhs_spec and out_spec)."
          )
      lhs, rhs, out, order = _from_dimension_numbers(specs)
    else:
      lhs, rhs, out = layout
  else:
    lhs, rhs, out = layout, kernel_layout, out_layout

  # The rank comes from whichever layout string is given, else from the arrays.
  given = [s for s in (lhs, rhs, out) if isinstance(s, str)]
  n = sum(c not in _ALL_RESERVED for c in given[0]) if given else default_n
  d_lhs, d_rhs = defaults if defaults is not None else default_layouts(n)
  if lhs is None:
    lhs = generalize(d_lhs, n)
  if rhs is None:
    rhs = generalize(d_rhs, n)
  if out is None:
    out = lhs
  lhs = check_letters(lhs, "layout", where, "NC")
  rhs = check_letters(rhs, "kernel_layout", where, "OI")
  out = check_letters(out, "out_layout", where, "NC")
  sp_l, sp_r, sp_o = (
    spatial_letters(lhs, "data"),
    spatial_letters(rhs, "kernel"),
    spatial_letters(out, "data"),
  )
  if not (set(sp_l) == set(sp_r) == set(sp_o)):
    raise ValueError(
      f"{where}: layouts must name the same spatial axes: layout {lhs!r} has "
      f"{sp_l or 'none'}, kernel_layout {rhs!r} has {sp_r or 'none'}, out_layout {out!r} "
      f"has {sp_o or 'none'}."
    )
  if not sp_r:
    raise ValueError(
      f"{where}: layouts {lhs!r}/{rhs!r} have no spatial axis; a conv needs at least one."
    )
  if ("N" in lhs) != ("N" in out):
    raise ValueError(
      f"{where}: layout {lhs!r} and out_layout {out!r} must both have a "
      "batch axis N or both lack it."
    )
  return Layouts(lhs, rhs, out, order)
