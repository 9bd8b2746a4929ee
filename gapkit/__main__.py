"""``python -m gapkit``: the ``gapkit`` command line (see :mod:`gapkit.cli`)."""

from .cli import main

raise SystemExit(main())
