"""`python -m pirl_core.cli ...`: the same as `pirl ...`."""

import sys

from . import main

sys.exit(main())
