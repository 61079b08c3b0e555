"""The ``flipconv`` command line.

Sub-commands are registered in ``_COMMANDS``; each takes the parsed
arguments and returns the exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _demo(args: argparse.Namespace) -> int:
  from flipconv import demo

  return demo.run()


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="flipconv",
      description="Explicit flip and layout for convolutions, and weight conversion "
                  "between frameworks' conventions.")
  sub = parser.add_subparsers(dest="command", required=True)
  p = sub.add_parser("demo", help="show what a flip does, checking every claim")
  p.set_defaults(func=_demo)
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  return args.func(args)


if __name__ == "__main__":  # pragma: no cover
  sys.exit(main())
