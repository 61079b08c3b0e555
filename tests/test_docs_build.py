"""The documentation site builds offline with zero warnings (the command in docs/conf.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_sphinx_builds_the_docs_with_warnings_as_errors(tmp_path):
  pytest.importorskip("sphinx", reason="the docs extra brings Sphinx")
  pytest.importorskip("myst_parser", reason="the docs extra brings myst-parser")
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "sphinx",
      "-W",
      "--keep-going",
      "-q",
      "-b",
      "html",
      "docs",
      str(tmp_path / "html"),
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert result.returncode == 0, result.stdout + result.stderr
  api = (tmp_path / "html" / "api.html").read_text(encoding="utf-8")
  # Every class shows its constructor, not the nnx metaclass's (*args, **kwargs).
  assert "*args" not in api
  assert (tmp_path / "html" / "porting.html").exists()
