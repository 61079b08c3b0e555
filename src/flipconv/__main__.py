"""``python -m flipconv``: the same as the ``flipconv`` command."""

import sys

from flipconv.cli import main

sys.exit(main())
