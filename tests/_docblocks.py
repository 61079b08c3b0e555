"""The code blocks of README.md and docs/*.md as tests, with Sybil.

How the Markdown is read (documented for writers in README.md, "Documentation"):

* A ```` ```python ```` block runs as written, in file order, in one namespace
  per file (``__name__ == "__main__"``, as a pasted script). A block that
  starts with ``>>>`` is a doctest: its shown output is compared.
* A ```` ```bash ```` block runs with ``bash -eu -o pipefail`` in the file's
  temporary folder, where the Python blocks of that file ran too; ``flipconv``
  and ``python`` there are ``python -m flipconv`` and ``python`` of the
  interpreter running the tests. A non-zero exit status fails.
* A ```` ```text ```` block is what the nearest Python or bash block above it
  prints (stdout), compared line by line (trailing spaces and surrounding blank
  lines ignored). A block whose code did not run is not compared.
* ``<!-- skip: next "illustration: <why>" -->`` before a block (Sybil's skip
  directive) marks it illustration only: it is shown, never run. Blocks that
  need an optional package say so with ``<!-- skip: next if(missing("torch"),
  reason="needs torch") -->`` (or ``skip: start`` ... ``skip: end`` around
  several); without the package they skip, and with it they must run.
* Other fences are refused (tests/test_docs.py), except MyST directives
  (```` ```{toctree} ````), which are Sphinx's and not code.
"""

from __future__ import annotations

import contextlib
import doctest
import importlib.util
import io
import os
import re
import subprocess
import sys
import textwrap
import unittest
from dataclasses import dataclass, field
from pathlib import Path

from sybil import Document, Example, Sybil
from sybil.evaluators.python import PythonEvaluator
from sybil.parsers.abstract.codeblock import PythonDocTestOrCodeBlockParser
from sybil.parsers.markdown.codeblock import CodeBlockParser
from sybil.parsers.markdown.lexers import RawFencedCodeBlockLexer
from sybil.parsers.markdown.skip import SkipParser

import flipconv

ROOT = Path(__file__).resolve().parent.parent
LANGUAGES = ("python", "bash", "text")
ILLUSTRATION = "illustration"
BASH_TIMEOUT_S = 300


def markdown_files() -> list[Path]:
  """README.md and every docs/*.md (not the Sphinx build)."""
  return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def missing(module: str) -> bool:
  """For ``skip: next if(missing("torch"), ...)`` directives: the module is not installed."""
  return importlib.util.find_spec(module) is None


@dataclass
class _Output:
  """What the last code block of a document printed; ``None``: it did not run."""

  line: int
  text: str | None
  why_not: str = ""  # why the block did not run


def _set_output(example: Example, text: str | None, why_not: str = "") -> None:
  example.document.flipconv_output = _Output(example.line, text, why_not)  # type: ignore[attr-defined]


def _normalized(text: str) -> str:
  return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


class _PythonBlock:
  """Runs a Python block as Sybil does, and keeps what it printed."""

  def __init__(self) -> None:
    self.run = PythonEvaluator()

  def __call__(self, example: Example) -> None:
    buffer = io.StringIO()
    _set_output(example, None)
    with contextlib.redirect_stdout(buffer):
      self.run(example)
    _set_output(example, buffer.getvalue())


def _shims(folder: Path) -> Path:
  """``flipconv`` and ``python`` commands that run this interpreter (and this flipconv)."""
  bin_ = folder / ".docs-bin"
  bin_.mkdir(exist_ok=True)
  for name, args in (("flipconv", '-m flipconv "$@"'), ("python", '"$@"')):
    script = bin_ / name
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" {args}\n')
    script.chmod(0o755)
  return bin_


def _bash_block(example: Example) -> str | None:
  _set_output(example, None)
  cwd = Path.cwd()
  env = dict(os.environ)
  env["PATH"] = f"{_shims(cwd)}{os.pathsep}{env.get('PATH', '')}"
  # The flipconv under test, wherever it was imported from (a checkout's src or site-packages).
  src = str(Path(flipconv.__file__).resolve().parent.parent)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
  result = subprocess.run(
    ["bash", "-eu", "-o", "pipefail", "-c", str(example.parsed)],
    cwd=cwd,
    env=env,
    capture_output=True,
    text=True,
    timeout=BASH_TIMEOUT_S,
    check=False,
  )
  if result.returncode != 0:
    return (
      f"bash block exited with {result.returncode}:\n{example.parsed}\n"
      f"--- stdout\n{result.stdout}--- stderr\n{result.stderr}"
    )
  _set_output(example, result.stdout)
  return None


def _text_block(example: Example) -> str | None:
  output = getattr(example.document, "flipconv_output", None)
  if output is None:
    return "a text block must follow the python or bash block whose output it shows"
  if output.text is None:
    # The output of an illustration is illustration too; else say which block did not run.
    why = output.why_not if output.why_not.startswith(ILLUSTRATION) else ""
    raise unittest.SkipTest(why or f"the block at line {output.line} did not run")
  shown, printed = _normalized(str(example.parsed)), _normalized(output.text)
  if shown == printed:
    return None
  return (
    f"the block at line {output.line} printed\n{textwrap.indent(printed, '  ')}\n"
    f"but the docs show\n{textwrap.indent(shown, '  ')}"
  )


class _PythonParser(PythonDocTestOrCodeBlockParser):
  codeblock_parser_class = CodeBlockParser

  def __init__(self) -> None:
    super().__init__(doctest_optionflags=doctest.ELLIPSIS)
    self.codeblock_parser = CodeBlockParser("python", _PythonBlock())


SYBIL = Sybil(
  parsers=[
    SkipParser(),
    _PythonParser(),
    CodeBlockParser("bash", _bash_block),
    CodeBlockParser("text", _text_block),
  ],
  patterns=["*.md"],
)


def fences(path: Path) -> list[tuple[int, str]]:
  """Every fenced block of a Markdown file: (line, info string)."""
  document = Document(path.read_text(encoding="utf-8"), str(path))
  lexer = RawFencedCodeBlockLexer(
    info_pattern=re.compile(r"(?P<info>[^\n]*)\n"), mapping={"info": "info"}
  )
  return [
    (document.text.count("\n", 0, r.start) + 1, r.lexemes["info"].strip()) for r in lexer(document)
  ]


@dataclass
class Report:
  """What running one document did."""

  ran: list[int] = field(default_factory=list)
  illustration: list[tuple[int, str]] = field(default_factory=list)
  skipped: list[tuple[int, str]] = field(default_factory=list)
  failed: list[tuple[int, str]] = field(default_factory=list)


def run_document(path: Path) -> Report:
  """Evaluates every block of ``path`` in order, in the current working folder.

  Raises AssertionError naming the file and the line of every block that failed
  (the later blocks of a file run after a failure too).
  """
  document = SYBIL.parse(path)
  document.namespace.update(__name__="__main__", missing=missing)
  report = Report()
  for example in document:
    try:
      example.evaluate()
    except unittest.SkipTest as e:
      reason = str(e)
      _set_output(example, None, reason)
      where = report.illustration if reason.startswith(ILLUSTRATION) else report.skipped
      where.append((example.line, reason))
      continue
    except Exception as e:  # keep going: one report with every failing block
      _set_output(example, None)
      report.failed.append((example.line, f"{type(e).__name__}: {e}"))
      continue
    if example.region.evaluator is not SYBIL.parsers[0].skipper:
      report.ran.append(example.line)
  if report.failed:
    rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    raise AssertionError(
      f"{rel}: {len(report.failed)} block(s) failed\n"
      + "\n".join(f"--- the block at line {line}:\n{why}" for line, why in report.failed)
    )
  return report
