"""``python -m cluenet ...``: see cluenet/cli.py."""
import sys

from .cli import main

sys.exit(main())
