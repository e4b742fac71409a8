"""`python -m nextword.cli`: the `nextword` console script."""

import sys

from nextword.cli import main

sys.exit(main())
