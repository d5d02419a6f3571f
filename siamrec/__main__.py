"""`python -m siamrec COMMAND [overrides]`: see siamrec.cli."""

import sys

from siamrec.cli import main

if __name__ == "__main__":  # guarded: decoding workers re-import this module when they spawn
    sys.exit(main())
