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


def _doc(tmp_path, text):
  path = tmp_path / "doc.md"
  path.write_text(text, encoding="utf-8")
  return path


def test_the_runner_fails_on_output_that_differs_from_the_docs(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  path = _doc(tmp_path, "```python\nprint(1 + 1)\n```\n\n```text\n3\n```\n")
  with pytest.raises(AssertionError, match="printed"):
    run_document(path)


def test_the_runner_fails_on_a_failing_block_and_reports_the_later_ones(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  path = _doc(
    tmp_path,
    "```python\nundefined_name\n```\n\n```bash\nflipconv nonsense\n```\n\n```python\nx = 1\n```\n",
  )
  with pytest.raises(AssertionError, match=r"2 block\(s\) failed") as e:
    run_document(path)
  assert "line 1" in str(e.value) and "line 5" in str(e.value)


def test_the_runner_shares_one_namespace_and_folder_and_skips_what_is_marked(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  path = _doc(
    tmp_path,
    '<!-- skip: next "illustration: never run" -->\n```bash\nexit 1\n```\n\n'
    "```text\nnot compared\n```\n\n"
    '<!-- skip: next if(missing("no_such_module_xyz"), reason="needs it") -->\n'
    "```python\nimport no_such_module_xyz\n```\n\n"
    '```python\nn = 3\nopen("f.txt", "w").write("a b c")\n```\n\n'
    "```bash\nwc -w < f.txt\n```\n\n```text\n3\n```\n\n"
    "```python\nprint(n * 2)\n```\n\n```text\n6\n```\n",
  )
  report = run_document(path)
  assert [why for _, why in report.illustration] == ["illustration: never run"] * 2
  assert [why for _, why in report.skipped] == ["needs it"]
  assert len(report.ran) == 5
