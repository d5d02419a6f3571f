"""`python -m siamrec COMMAND [overrides]`: see siamrec.cli."""

import sys

from siamrec.cli import main

sys.exit(main())
