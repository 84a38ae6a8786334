"""portsentinel-responder: the action stage (work in progress: see docs and the responder issue)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    print("portsentinel-responder: not built yet (the action stage lands with its own issue)", file=sys.stderr)
    return 3


if __name__ == "__main__":
    sys.exit(main())
