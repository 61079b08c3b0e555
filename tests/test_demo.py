"""The Sobel and causal-filter sections of ``flipconv demo``, and their shared checks.

The sections check, on small synthetic inputs, the claims of
examples/sobel_edges.py and examples/causal_filter.py (tests/test_examples.py
runs those); here: the sections hold and are numbered in the demo, and their
checks fail where the claim is false (a correlation passed off as a
convolution).
"""

from __future__ import annotations

import numpy as np
import pytest

import flipconv
from flipconv import demo

pytest.importorskip("scipy")


def lines_of(section) -> tuple[bool, list[str]]:
  lines: list[str] = []
  ok = section(lines.append)
  return ok, "\n".join(lines).splitlines()


def test_sobel_section_holds():
  ok, lines = lines_of(demo.sobel_section)
  assert ok, "\n".join(lines)
  assert lines[0] == f"{demo.SECTIONS.index(demo.sobel_section) + 1}. Sobel edges: what the " + (
    "flip does to an edge detector"
  )
  checks = [ln for ln in lines if ln.startswith("  [")]
  assert len(checks) == 8 and all(ln.startswith("  [ok] ") for ln in checks)
  assert any("fc.correlate == -fc.convolve exactly" in ln for ln in checks)


def test_causal_section_holds():
  ok, lines = lines_of(demo.causal_section)
  assert ok, "\n".join(lines)
  assert lines[0].endswith(". A time series: the flip is causality")
  checks = [ln for ln in lines if ln.startswith("  [")]
  assert len(checks) == 5 and all(ln.startswith("  [ok] ") for ln in checks)
  assert any("responds 12 samples before the step" in ln for ln in checks)


def test_the_checks_fail_for_a_correlation_called_a_convolution(monkeypatch):
  monkeypatch.setattr(flipconv, "convolve", flipconv.correlate)
  checks, _ = demo.sobel_checks(demo.synthetic_scene())
  failed = [what for what, ok in checks if not ok]
  assert any("scipy.ndimage.sobel(axis=1)" in w for w in failed)
  assert any("scipy.signal.convolve2d" in w for w in failed)
  signal, baseline = demo.sensor_signal()
  checks, _, _ = demo.causal_checks(signal, baseline, 100, demo.exponential_taps(), "exp")
  failed = [what for what, ok in checks if not ok]
  assert any("== scipy.signal.lfilter" in w for w in failed)
  # The symmetric moving average cannot tell them apart: its convolution checks hold.
  checks, _, _ = demo.causal_checks(signal, baseline, 100, demo.MOVING_AVERAGE, "ma")
  assert all(ok for _, ok in checks)


def test_the_step_check_sees_a_filter_that_reads_the_future():
  signal, baseline = demo.sensor_signal(120, 60)
  taps = demo.exponential_taps(9, 2.0)
  _, out, starts = demo.causal_checks(signal, baseline, 60, taps, "exp")
  assert starts["convolve_causal"] == starts["correlate_causal"] == 60
  assert starts["correlate_same"] == starts["convolve_same"] == 60 - 9 // 2
  # The causal output is lfilter's (an independent float64 reference).
  np.testing.assert_allclose(out["convolve_causal"], out["lfilter"], rtol=1e-5, atol=1e-6)


def test_demo_runs_the_new_sections_in_order():
  lines: list[str] = []
  assert demo.run(lines.append) == 0, "\n".join(lines)
  headings = [ln for ln in lines if ln[:1].isdigit()]
  assert [h.split(".")[0] for h in headings] == [str(i) for i in range(1, len(headings) + 1)]
  assert any("Sobel edges" in h for h in headings) and any("causality" in h for h in headings)
  assert lines[-1].endswith("docs/why-flip.md.")
