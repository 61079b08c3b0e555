"""Every public name documents itself: a docstring with a runnable example, a real signature.

The examples themselves run as doctests (``--doctest-modules`` in pyproject.toml);
here we check that none is missing, and that ``help()`` and the Sphinx reference
show each class's constructor rather than ``(*args, **kwargs)``.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import flipconv as fc


def public_objects():
  for name in fc.__all__:
    if name not in ("linen", "nnx"):
      yield f"flipconv.{name}", getattr(fc, name)
  for module in (fc.linen, fc.nnx):
    for name in module.__all__:
      yield f"{module.__name__}.{name}", getattr(module, name)


PUBLIC = list(public_objects())


@pytest.mark.parametrize(("name", "obj"), PUBLIC, ids=[n for n, _ in PUBLIC])
def test_public_name_has_a_docstring_with_an_example(name, obj):
  doc = inspect.getdoc(obj) if callable(obj) else type(obj).__doc__
  assert doc and ">>> " in doc, f"{name} has no docstring example"


@pytest.mark.parametrize(
  ("name", "obj"),
  [(n, o) for n, o in PUBLIC if inspect.isclass(o) and not issubclass(o, Warning)],
  ids=[n for n, o in PUBLIC if inspect.isclass(o) and not issubclass(o, Warning)],
)
def test_class_signature_is_its_constructor(name, obj):
  params = inspect.signature(obj).parameters
  kinds = {p.kind for p in params.values()}
  assert kinds - {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD}, (
    f"{name}{inspect.signature(obj)}"
  )
  assert "self" not in params


def test_nnx_layer_instances_keep_their_call_signature():
  from flax import nnx

  layer = fc.nnx.Conv(2, 3, (3, 3), rngs=nnx.Rngs(0))
  # The call's own signature (Flax's: inputs, and out_sharding on Conv).
  assert (
    list(inspect.signature(layer).parameters)
    == list(inspect.signature(fc.nnx.Conv.__call__).parameters)[1:]
  )
  assert next(iter(inspect.signature(layer).parameters)) == "inputs"
  assert "in_features" in inspect.signature(fc.nnx.ConvTranspose).parameters


def test_every_public_name_has_an_entry_in_the_api_reference():
  api = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text(encoding="utf-8")
  entries = set(re.findall(r"^\.\. auto\w+:: (\S+)", api, flags=re.MULTILINE))
  assert {name for name, _ in PUBLIC} <= entries, sorted({n for n, _ in PUBLIC} - entries)
