"""``python -m finegym_ray.cli``: the same as ``finegym-ray``."""

import sys

from . import main

sys.exit(main())
