"""`python -m sagan_core.bench train|ddp|eval|loader|quality ...`."""

from . import main

raise SystemExit(main())
