"""Argument checks shared by the ops, the transposed conv and the modules.

Every public entry point normalises its arguments here, so that a bad value
gets the same wording wherever it is passed, and always before lax is called.
"""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


def is_int(value: Any) -> bool:
  """True for Python and NumPy integers, False for bools (a common slip)."""
  return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def as_bool(value: Any, name: str, where: str) -> bool:
  """Accepts ``True``/``False`` (Python or NumPy) and nothing else."""
  if isinstance(value, (bool, np.bool_)):
    return bool(value)
  raise TypeError(f"{where}: {name} must be True or False, got {value!r}.")


def as_int_tuple(value: Any, n: int, name: str, where: str, *, minimum: int = 1) -> tuple[int, ...]:
  """Normalises an int or a sequence of ``n`` ints, each ``>= minimum``.

  Args:
    value: an int (used for every spatial dimension) or a sequence of ``n`` ints.
    n: the number of spatial dimensions.
    name: the argument's name, for the error message.
    where: the public function's name, for the error message.
    minimum: the smallest value allowed.

  Returns:
    A tuple of ``n`` Python ints.
  """
  if is_int(value):
    values = (int(value),) * n
  elif (isinstance(value, Sequence) and not isinstance(value, str)) or isinstance(
    value, np.ndarray
  ):
    values = tuple(value)
    if not all(is_int(v) for v in values):
      raise TypeError(f"{where}: {name} must be an int or a sequence of {n} ints, got {value!r}.")
    values = tuple(int(v) for v in values)
    if len(values) != n:
      raise ValueError(
        f"{where}: {name} has {len(values)} values {values} but the conv has {n} spatial "
        f"dimension{'s' if n != 1 else ''}; give one int or {n} ints."
      )
  else:
    raise TypeError(f"{where}: {name} must be an int or a sequence of {n} ints, got {value!r}.")
  bad = [v for v in values if v < minimum]
  if bad:
    raise ValueError(f"{where}: {name} must be >= {minimum} in every dimension, got {value!r}.")
  return values


def choice(value: Any, name: str, where: str, allowed: dict[str, str]) -> str:
  """Maps a case-insensitive name (or alias) to its canonical spelling.

  Args:
    value: what the user passed.
    name: the argument's name, for the error message.
    where: the public function's name, for the error message.
    allowed: alias (lower case) -> canonical name.

  Returns:
    The canonical name.
  """
  if not isinstance(value, str):
    raise TypeError(
      f"{where}: {name} must be a string, one of {sorted(set(allowed))}; got {value!r}."
    )
  key = value.lower()
  if key not in allowed:
    raise ValueError(
      f"{where}: unknown {name} {value!r}{did_you_mean(key, allowed)}; "
      f"allowed: {', '.join(sorted(set(allowed)))}."
    )
  return allowed[key]


def did_you_mean(word: str, options: Iterable[str]) -> str:
  """``"; did you mean 'x'?"`` for the closest option, or ``""``."""
  close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
  return f"; did you mean {close[0]!r}?" if close else ""


def shape_str(shape: Sequence[int]) -> str:
  """``(2, 3)`` written as Python writes a tuple, also for length 1."""
  return str(tuple(int(s) for s in shape))
