"""Every example script says what it shows in --help, and takes --out.

Run in-process as ``python examples/NAME.py --help`` would run them (``runpy``,
``__name__ == "__main__"``); an example whose imports are missing (torch,
scipy, matplotlib) skips.
"""

from __future__ import annotations

import csv
import os
import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = sorted(EXAMPLES.glob("*.py"))


# The optional packages an example may need; a missing module of any other name (flipconv's
# own, after a rename) is a failure, not a skip.
OPTIONAL = {"torch", "safetensors", "scipy", "matplotlib", "skimage", "flax"}


def run(script: Path, *args: str, cwd: Path, monkeypatch) -> int:
  monkeypatch.chdir(cwd)  # an empty folder, as test_examples.py runs them
  monkeypatch.setattr(sys, "argv", [str(script), *args])
  # sharded_training.py sets XLA_FLAGS when it is imported: undone after the test.
  monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
  try:
    runpy.run_path(str(script), run_name="__main__")
  except ModuleNotFoundError as e:
    if (e.name or "").split(".")[0] not in OPTIONAL:
      raise
    pytest.skip(f"{script.name} needs {e.name}")
  except SystemExit as e:
    return e.code or 0
  return 0


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_help_says_what_the_example_shows_and_offers_out(script, capsys, monkeypatch, tmp_path):
  assert run(script, "--help", cwd=tmp_path, monkeypatch=monkeypatch) == 0
  assert list(tmp_path.iterdir()) == []  # --help writes nothing
  out = capsys.readouterr().out
  first_line = script.read_text(encoding="utf-8").split('"""')[1].splitlines()[0].strip()
  assert first_line in " ".join(out.split()), out
  assert "--out" in out, out


def test_lasagne_weights_writes_its_error_table(tmp_path, capsys, monkeypatch):
  pytest.importorskip("scipy")
  table = tmp_path / "errors.csv"
  script = EXAMPLES / "lasagne_weights.py"
  assert run(script, "--out", str(table), cwd=tmp_path, monkeypatch=monkeypatch) == 0
  assert capsys.readouterr().out.rstrip().endswith("All checks held.")
  with table.open() as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 4
  for row in rows:  # the right ways are float32 rounding, the missing flip is order 1
    assert float(row["fc.linen"]) < 1e-5 and float(row["converted"]) < 1e-5
    assert float(row["no flip"]) > 0.1
  assert list(tmp_path.iterdir()) == [table]  # nothing else written
