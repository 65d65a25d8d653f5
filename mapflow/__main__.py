"""``python -m mapflow`` works like the ``mapflow`` script."""

import sys

from .cli import main

sys.exit(main())
