"""``python -m mapflow ARGS``: the same command line as the ``mapflow`` script, from a chosen interpreter."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
