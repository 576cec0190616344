"""``python -m is5net``: the same program as the ``is5net`` command."""

import sys

try:
    from .cli import entry
except KeyboardInterrupt:  # Ctrl-C while the package itself is importing: still one line, still 130
    print("is5net: interrupted", file=sys.stderr)
    sys.exit(130)

entry()
