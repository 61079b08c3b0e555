"""Reading the committed Theano/Lasagne fixtures (tests/fixtures/theano, made by PyTensor).

Shared by tests/test_against_theano.py (the functional ops) and
tests/test_modules_against_frameworks.py (the Flax modules): where the files are,
how one is loaded, which test it belongs to, and how Theano's ``border_mode`` and
Lasagne's ``pad``/``crop`` read as flipconv paddings.
"""

from __future__ import annotations

import ast
from pathlib import Path

import jax
import numpy as np
import pytest

FIXTURE_DIR = Path(__file__).parent / "fixtures" / "theano"
FILES = sorted(FIXTURE_DIR.glob("*.npz"))
MISSING = (
  f"no Theano fixtures in {FIXTURE_DIR}: they are committed; regenerate them with "
  "`python tests/fixtures/make_theano_fixtures.py`"
)
TOL = 1e-10  # the fixtures are float64


def load(path: Path) -> dict:
  """The arrays and arguments of one fixture (no pickles: every entry is a plain array)."""
  with np.load(path, allow_pickle=False) as data:
    return {k: data[k] for k in data.files}


def kind(path: Path) -> str:
  """Which test a fixture belongs to, from its stored ``op`` and Lasagne layer."""
  with np.load(path, allow_pickle=False) as data:
    if "lasagne_layer" in data.files:
      return str(data["lasagne_layer"])
    return str(data["op"])


def cases(*kinds: str) -> list:
  """One pytest param per fixture of ``kinds``; a failing placeholder if there are none."""
  found = [pytest.param(p, id=p.stem) for p in FILES if kind(p) in kinds]
  return found or [pytest.param(None, id="missing-fixtures")]


def x64():
  """A context in which JAX computes in float64, as the fixtures were made."""
  if hasattr(jax, "enable_x64"):
    return jax.enable_x64(True)
  from jax.experimental import enable_x64  # jax before the top-level context manager

  return enable_x64()


def theano_padding(border_mode: str):
  """flipconv's ``padding`` for Theano's ``border_mode`` (stored as a string)."""
  if border_mode in ("valid", "full", "half"):
    return border_mode.upper()
  value = ast.literal_eval(border_mode)  # an int, a tuple of ints or of (low, high) pairs
  return value if isinstance(value, int) else tuple(value)


def lasagne_padding(pad_repr: str):
  """flipconv's ``padding`` for Lasagne's ``pad``/``crop`` (stored as its Python literal)."""
  pad = ast.literal_eval(pad_repr)
  if isinstance(pad, str):
    # Lasagne 'same' pads filter_size // 2 on both sides: Theano's 'half'.
    return {"valid": "VALID", "full": "FULL", "same": "HALF"}[pad]
  return pad


def ints(a) -> tuple[int, ...]:
  return tuple(int(v) for v in np.atleast_1d(a))
