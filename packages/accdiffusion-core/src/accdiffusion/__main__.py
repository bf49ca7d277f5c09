"""``python -m accdiffusion``: the same as the ``accdiffusion`` command."""

import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while the command starts
    print("\naccdiffusion: interrupted", file=sys.stderr)
    raise SystemExit(130) from None

raise SystemExit(main())
