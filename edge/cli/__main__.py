"""``python -m edge.cli``: the ``portal`` command."""

import sys

from edge.cli import main

sys.exit(main())
