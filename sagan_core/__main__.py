"""`python -m sagan_core train|sample|pack`."""

import sys

from .cli import main

sys.exit(main())
