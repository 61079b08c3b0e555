"""Smoke tests of examples/: each script runs as a user runs it, and its checks hold.

Every example checks its own claims and exits 0 only if all hold. Here each one
is run as ``python examples/NAME.py ARGS`` would run it (``runpy`` with
``__name__ == "__main__"`` and ``sys.argv`` set, in an empty working folder),
but in the test's own interpreter, which has JAX imported already: a fresh
interpreter per example would triple the runtime. Its exit code and key lines
of its output are asserted. The PyTorch port skips without torch or
safetensors, the PNG one without matplotlib.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str, cwd: Path, capsys, monkeypatch) -> str:
  """Runs ``examples/name`` as a script; returns its stdout after checking its exit code."""
  monkeypatch.chdir(cwd)
  monkeypatch.setattr(sys, "argv", [str(EXAMPLES / name), *args])
  with pytest.raises(SystemExit) as exit_:
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
  captured = capsys.readouterr()
  output = captured.out + captured.err
  assert exit_.value.code == 0, f"{name} exited with {exit_.value.code!r}:\n{output}"
  assert "FAILED" not in captured.out, output
  assert captured.out.rstrip().endswith("All checks held."), output
  return captured.out


def assert_lines(output: str, *needles: str) -> None:
  lines = output.splitlines()
  for needle in needles:
    assert any(needle in line for line in lines), f"no line with {needle!r} in:\n{output}"


def test_port_pytorch_cnn(tmp_path, capsys, monkeypatch):
  pytest.importorskip("torch")
  pytest.importorskip("safetensors")
  out = run_example("port_pytorch_cnn.py", cwd=tmp_path, capsys=capsys, monkeypatch=monkeypatch)
  assert_lines(
    out,
    "--select 'up.weight=conv_transpose' --select '*=auto'",
    "wrote ",  # flipconv convert's own report
    "up/weight         conv_transpose  (16, 4, 3, 3)  ->  (3, 3, 16, 4)",
    "flip H W",
    "ok     the CLI's file holds exactly what fc.convert_params returns",
    "ok     without feature_shape, the converted head gives wrong logits (the flatten trap)",
    "ok     torch == flax.linen with converted weights",
    "ok     PyTorch's state_dict has exactly the shapes of the fc.linen model's own params",
    "ok     torch == fc.linen convention='pytorch' with unchanged weights",
    "ok     both JAX ports agree",
  )
  assert out.count("ok     ") == 6
  # The example cleans up after itself: nothing left where it ran.
  assert list(tmp_path.iterdir()) == []


def test_lasagne_weights(tmp_path, capsys, monkeypatch):
  pytest.importorskip("scipy")
  out = run_example("lasagne_weights.py", cwd=tmp_path, capsys=capsys, monkeypatch=monkeypatch)
  for case in ("3x3, pad=valid", "3x3, pad='same'", "4x4, pad=valid", "4x4, pad=2 (half)"):
    assert_lines(
      out,
      f"ok     {case}: fc.linen.Conv(convention='lasagne') with W unchanged == the original",
      f"ok     {case}: flax.linen.Conv with fc.convert_kernel(W, 'lasagne', 'flax') == the "
      "original",
      f"ok     {case}: flax.linen.Conv with W only transposed (no flip) is wrong",
    )
  assert_lines(
    out,
    "input 9x9 -> 'HALF' 10x10 (one larger), 'SAME' 9x9",
    "ok     'SAME' (extra zero at the end) == 'HALF' output without its first row and column",
    "ok     'SAME_LOWER' (extra zero at the start) == 'HALF' output without its last row",
    "ok     so 'SAME' is the 'HALF' output shifted by one pixel",
    "ok     flax.linen.Conv(padding='SAME') with the converted 4x4 kernel",
  )
  assert out.count("ok     ") == 18
  # The table: the no-flip column shows errors of order 1, the right ways float32 rounding.
  rows = [ln.split() for ln in out.splitlines() if ln.startswith("  (4, 3, ")]
  assert len(rows) == 4
  for row in rows:
    right_1, right_2, no_flip = (float(v) for v in row[-3:])
    assert right_1 < 1e-5 and right_2 < 1e-5 and no_flip > 0.1


def test_true_convolution(tmp_path, capsys, monkeypatch):
  pytest.importorskip("scipy")
  pytest.importorskip("matplotlib")
  png = tmp_path / "figure" / "true_convolution.png"
  out = run_example(
    "true_convolution.py", "--out", str(png), cwd=tmp_path, capsys=capsys, monkeypatch=monkeypatch
  )
  assert_lines(
    out,
    "ok     fc.convolve(padding='FULL') == scipy.signal.convolve2d(mode='full')",
    "ok     fc.convolve(padding='VALID') == scipy.signal.convolve2d(mode='valid')",
    "ok     fc.convolve(padding='SAME') == scipy.signal.convolve2d(mode='same')",
    "ok     fc.correlate(padding='SAME') == scipy.signal.correlate2d(mode='same')",
    "ok     convolving one bright pixel gives the kernel as drawn",
    "ok     so with this kernel they differ",
    "ok     scipy.signal.convolve2d(mode='same') == fc.convolve(padding='SAME_LOWER')",
    "ok     fc.convolve(padding='SAME') is that output moved one pixel up and left",
    f"wrote {png}",
  )
  assert out.count("ok     ") == 13
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert png.stat().st_size > 10_000
  # Nothing written next to the example (its default output) when --out is given.
  assert list(tmp_path.iterdir()) == [png.parent]
