"""``python -m threefactor`` is the ``threefactor`` command."""
import sys

from .cli import main

sys.exit(main())
