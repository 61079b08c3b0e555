"""Every code block of README.md and docs/*.md runs as written, and prints what the docs show.

The rules (which fences run, how output is compared, how a block is marked
illustration only) are in tests/_docblocks.py and README.md, "Documentation".
"""

from __future__ import annotations

import re

import pytest

pytest.importorskip("sybil")  # the test extra brings it

from _docblocks import LANGUAGES, ROOT, fences, markdown_files, run_document

FILES = markdown_files()
IDS = [str(p.relative_to(ROOT)) for p in FILES]
SKIP_DIRECTIVE = re.compile(r"<!--\s*skip:\s*(\w+)(.*?)-->", re.DOTALL)


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_every_block_runs_and_prints_what_is_shown(path, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  report = run_document(path)
  if report.skipped:
    pytest.skip(
      f"{len(report.ran)} blocks ran; skipped: "
      + "; ".join(f"line {line}: {why}" for line, why in report.skipped)
    )


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_every_fence_is_code_output_or_a_sphinx_directive(path):
  for line, info in fences(path):
    assert info in LANGUAGES or re.fullmatch(r"\{[\w:-]+\}.*", info), (
      f"{path.name}:{line}: fence {info!r}; use one of {LANGUAGES} (see tests/_docblocks.py)"
    )


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_every_skipped_block_says_why(path):
  for match in SKIP_DIRECTIVE.finditer(path.read_text(encoding="utf-8")):
    action, reason = match.group(1), match.group(2).strip()
    if action != "end":
      assert reason.startswith(('"illustration: ', "if(missing(")), (
        f"{path.name}: skip directive {match.group(0)!r} needs a reason: "
        '"illustration: <why>" or if(missing("module"), reason="...")'
      )
