"""``python -m volseg`` is the same as the ``volseg`` command."""

import sys

from volseg.cli import main

sys.exit(main())
