"""Smoke tests of examples/: each script runs as a user runs it, and its checks hold.

Every example checks its own claims and exits 0 only if all hold. Here each one
is run as ``python examples/NAME.py ARGS`` would run it (``runpy`` with
``__name__ == "__main__"`` and ``sys.argv`` set, in an empty working folder),
but in the test's own interpreter, which has JAX imported already: a fresh
interpreter per example would triple the runtime. Its exit code and key lines
of its output are asserted. The PyTorch port skips without torch or
safetensors, the PNG ones without matplotlib; the Sobel example
uses scikit-image's photograph if it is installed and is run once more without
it (and without PyTorch), as on a machine that lacks them.
"""

from __future__ import annotations

import builtins
import importlib.util
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


def assert_wrote_only_a_png(png: Path, folder: Path, min_bytes: int) -> None:
  """``png`` is a PNG of at least ``min_bytes``, and all the example wrote to ``folder``."""
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert png.stat().st_size > min_bytes
  top = png.parent if png.parent != folder else png  # the --out folder it made, or the file
  assert list(folder.iterdir()) == [top]


def test_port_pytorch_cnn(tmp_path, capsys, monkeypatch):
  pytest.importorskip("torch")
  pytest.importorskip("safetensors")
  out = run_example("port_pytorch_cnn.py", cwd=tmp_path, capsys=capsys, monkeypatch=monkeypatch)
  assert_lines(
    out,
    "--like ",
    "--flatten 'head=CHW:HWC:C=4,H=8,W=12'",
    "wrote ",  # flipconv convert's own report
    "params/up/kernel         <-  up.weight         (16, 4, 3, 3)  ->  (3, 3, 16, 4)",
    "flip H W",
    "dense after flatten CHW -> HWC",
    "10 target leaves in 5 layers: 10 matched by name, 0 by order, 0 unmatched.",
    "ok     the CLI's --like file loads with from_bytes into exactly what convert_params returns",
    "ok     without flatten=, flipconv warns about the head, whose logits are then wrong",
    "ok     torch == flax.linen filled by like=",
    "ok     convention='pytorch' layers hold PyTorch's kernels unchanged",
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
  # Nothing written next to the example (its default output) when --out is given.
  assert_wrote_only_a_png(png, tmp_path, 10_000)


def test_sobel_edges(tmp_path, capsys, monkeypatch):
  pytest.importorskip("scipy")
  pytest.importorskip("matplotlib")
  photo = importlib.util.find_spec("skimage") is not None
  png = tmp_path / "figure" / "sobel_edges.png"
  out = run_example(
    "sobel_edges.py", "--out", str(png), cwd=tmp_path, capsys=capsys, monkeypatch=monkeypatch
  )
  assert_lines(
    out,
    "on skimage.data.camera(), 512x512" if photo else "on a synthetic scene",
    *(
      f"ok     G{a}: fc.convolve(pad_mode='symmetric') == scipy.ndimage.sobel(axis={axis}) "
      "(default mode='reflect'), every pixel"
      for a, axis in (("x", 1), ("y", 0))
    ),
    "ok     Gx: fc.convolve(padding='SAME') == scipy.signal.convolve2d(mode='same')",
    "ok     Gy: fc.convolve(padding='SAME') == scipy.signal.convolve2d(mode='same')",
    "ok     Gx: fc.correlate == -fc.convolve exactly",
    "ok     Gy: fc.correlate == -fc.convolve exactly",
    "ok     north-east kernel: fc.correlate is not +-fc.convolve",
    "ok     so they fire on different edges",
    "ok     NCHW batch (4, 1, 256, 256) -> (4, 2, 256, 256): fc.linen.Conv(convention='pytorch')",
    "ok     the same layer with the textbook kernels unflipped",
    f"wrote {png}",
  )
  torch = importlib.util.find_spec("torch") is not None
  if torch:
    assert_lines(out, "ok     torch.nn.Conv2d(1, 2, 3, padding=1) with that weight")
  assert out.count("ok     ") == 10 + torch
  assert_wrote_only_a_png(png, tmp_path, 50_000)


def test_sobel_edges_without_scikit_image_or_torch(tmp_path, capsys, monkeypatch):
  pytest.importorskip("scipy")
  pytest.importorskip("matplotlib")
  # `import skimage` / `import torch` raise ImportError, as where they are not installed
  # (not None in sys.modules: SciPy looks torch up there to recognise its arrays).
  real_import = builtins.__import__

  def no_skimage_or_torch(name, *args, **kwargs):
    if name.split(".")[0] in ("skimage", "torch"):
      raise ImportError(f"No module named {name!r}")
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, "__import__", no_skimage_or_torch)
  png = tmp_path / "sobel.png"
  out = run_example(
    "sobel_edges.py", "--out", str(png), cwd=tmp_path, capsys=capsys, monkeypatch=monkeypatch
  )
  assert_lines(
    out,
    "on a synthetic scene (pip install scikit-image for the photograph), 128x128",
    "ok     so they fire on different edges",
    "ok     NCHW batch (4, 1, 64, 64) -> (4, 2, 64, 64)",
    "(PyTorch is not installed: the layer is checked against SciPy only)",
  )
  assert out.count("ok     ") == 10
  assert_wrote_only_a_png(png, tmp_path, 10_000)


def test_causal_filter(tmp_path, capsys, monkeypatch):
  pytest.importorskip("scipy")
  pytest.importorskip("matplotlib")
  png = tmp_path / "figure" / "causal_filter.png"
  out = run_example(
    "causal_filter.py", "--out", str(png), cwd=tmp_path, capsys=capsys, monkeypatch=monkeypatch
  )
  for name in ("exponential decay", "moving average"):
    assert_lines(
      out,
      f"ok     {name}: fc.convolve(padding='CAUSAL') == scipy.signal.lfilter(taps, 1, x)",
      f"ok     {name}: causal: nothing moves before the step at t = 150; the output moves at it",
    )
  assert_lines(
    out,
    "ok     exponential decay: fc.correlate(padding='CAUSAL') != lfilter, off by ",
    "ok     exponential decay: fc.correlate(padding='SAME') reads the future: it responds 12 "
    "samples before the step",
    "ok     exponential decay: so does fc.convolve(padding='SAME') (12 samples early)",
    "ok     moving average: symmetric taps, so fc.correlate(padding='CAUSAL') == lfilter",
    "ok     moving average: fc.correlate(padding='SAME') reads the future: it responds 2 "
    "samples before the step",
    "ok     64 channels x 16384 samples, 1024 taps: method='auto' picks the FFT "
    "(flipconv._auto.choose_method says 'fft'",
    "ok     fc.convolve(padding='CAUSAL', method='auto') == scipy.signal.lfilter per channel",
    "ok     causal in every channel",
    "ok     gradient descent through fc.convolve learns the taps h",
    "ok     through fc.correlate, from the mirrored start (as likely as the start itself), it "
    "learns h reversed; every step is the mirror image of the other's",
    "ok     so either form fits the data; what matters is moving the weights",
    f"wrote {png}",
  )
  assert out.count("ok     ") == 16
  # The correlation's difference from lfilter is of the order of the output, not rounding.
  (line,) = [ln for ln in out.splitlines() if "!= lfilter, off by " in ln]
  diff = line.split("off by ")[1].split()[0]
  assert float(diff) > 0.1
  # docs/why-flip.md quotes these numbers.
  doc = " ".join((EXAMPLES.parent / "docs" / "why-flip.md").read_text().split())
  assert f"differs from `lfilter` by {diff} of the output's maximum" in doc
  assert "the correlation responds 12 samples before the step with the 24 taps, 2 with" in doc
  assert_wrote_only_a_png(png, tmp_path, 30_000)


@pytest.mark.parametrize("name", ["sobel_edges.py", "causal_filter.py"])
def test_examples_take_help(name, capsys, monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(sys, "argv", [str(EXAMPLES / name), "--help"])
  with pytest.raises(SystemExit) as exit_:
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
  assert exit_.value.code == 0
  assert "--out OUT" in capsys.readouterr().out
  assert list(tmp_path.iterdir()) == []


def test_why_flip_links_what_exists():
  """docs/why-flip.md: every relative link resolves, every test it names exists there."""
  import re

  docs = EXAMPLES.parent / "docs"
  text = (docs / "why-flip.md").read_text()
  links = re.findall(r"\]\(([^)#]+)\)", text)
  assert len(links) > 10
  for link in links:
    if "://" not in link:
      assert (docs / link).resolve().exists(), link
  named = set(re.findall(r"`(test_\w+)`", text))
  assert len(named) >= 4
  tests = "".join(p.read_text() for p in (EXAMPLES.parent / "tests").glob("test_*.py"))
  for name in named:
    assert f"def {name}(" in tests, name
  examples = set(re.findall(r"examples/(\w+\.py)", text))
  assert {"sobel_edges.py", "causal_filter.py"} <= examples
  for example in examples:
    assert f'"{example}"' in Path(__file__).read_text(), f"{example} is not run here"
