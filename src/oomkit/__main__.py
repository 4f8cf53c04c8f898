"""``python -m oomkit``: the ``oomkit`` command."""

from oomkit.cli import main

raise SystemExit(main())
