"""Sphinx configuration: the API reference from the docstrings, and the Markdown pages.

Build (offline, warnings as errors), from the repository root:

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Needs the ``docs`` extra (``pip install ".[docs]"``). No theme or extension here
downloads anything at build time: the theme is Sphinx's own alabaster, and there
is no intersphinx (its inventories of JAX and Flax would have to be fetched);
JAX and Flax names in the docstrings render as code, not links.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # document the checkout, installed or not

import flipconv  # noqa: E402

project = "flipconv"
author = "the flipconv authors"
copyright = "the flipconv authors"
release = version = flipconv.__version__

extensions = [
  "myst_parser",
  "sphinx.ext.autodoc",
  "sphinx.ext.napoleon",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build"]

# Markdown: README's in-page links (#why) and docs/*.md links resolve as in GitHub.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# Docstrings: Google style; attributes as fields of their class (no duplicate entries).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
napoleon_use_rtype = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True  # `kernel_init=default_kernel_init`, not a function repr

html_theme = "alabaster"
html_title = f"flipconv {release}"
html_static_path: list[str] = []
