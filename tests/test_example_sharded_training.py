"""Smoke test of examples/sharded_training.py: it runs as a user runs it, and its checks hold.

As in tests/test_examples.py, the script runs as ``python
examples/sharded_training.py`` would (``runpy`` with ``__name__ ==
"__main__"``), in this interpreter, whose 8 host devices conftest.py set up. A
second, short check runs a fresh interpreter without ``XLA_FLAGS`` to show that
the script's own flag gives it the 8 devices.
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import jax
import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "sharded_training.py"


@pytest.mark.skipif(len(jax.devices()) < 8, reason="needs 8 devices (see conftest)")
def test_sharded_training_example_runs_and_its_checks_hold(tmp_path, capsys, monkeypatch):
  monkeypatch.chdir(tmp_path)
  # rbg: the init compiles in ~1 s instead of ~25 s (threefry on XLA:CPU); the default
  # threefry path of sharded init is tested in test_sharding_fft_modules.py.
  monkeypatch.setattr(sys, "argv", [str(EXAMPLE), "--steps", "3", "--rng-impl", "rbg"])
  with pytest.raises(SystemExit) as exit_:
    runpy.run_path(str(EXAMPLE), run_name="__main__")
  out = capsys.readouterr().out
  assert exit_.value.code == 0, out
  assert "FAILED" not in out, out
  assert out.rstrip().endswith("All checks held."), out
  lines = out.splitlines()
  for needle in (
    "conv1/kernel   (16, 3, 3, 3)    P('model', None, None, None)",
    "conv2/kernel   (16, 16, 3, 3)   P(None, 'model', None, None)",
    "head/kernel    (10, 16, 1, 1)   P('model', None, None, None)",
    "collectives in the compiled sharded step: all-reduce",
    "ok     the sharded losses equal the single-device losses",
  ):
    assert any(needle in line for line in lines), f"no line with {needle!r} in:\n{out}"
  assert out.count("ok     ") == 6
  assert list(tmp_path.iterdir()) == []  # it writes nothing


def test_sharded_training_example_sets_its_own_device_count():
  """Imported in a fresh interpreter without XLA_FLAGS: the script's flag gives 8 devices."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  code = (
    "import runpy, sys; runpy.run_path(sys.argv[1], run_name='example'); "
    "import jax; print(len(jax.devices()))"
  )
  done = subprocess.run(
    [sys.executable, "-c", code, str(EXAMPLE)],
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
    check=False,
  )
  assert done.returncode == 0, done.stderr
  assert done.stdout.split() == ["8"], done.stdout
