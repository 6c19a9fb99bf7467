"""``python -m threefactor`` is the ``threefactor`` command."""
import sys

from threefactor.cli.main import main

sys.exit(main())
