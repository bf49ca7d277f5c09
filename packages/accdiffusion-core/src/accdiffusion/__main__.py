"""``python -m accdiffusion``: the same as the ``accdiffusion`` command."""

from .cli import main

raise SystemExit(main())
