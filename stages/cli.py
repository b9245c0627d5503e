"""Entry-point wrapper: known errors print one clear line and exit 1, with no traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from stages.errors import KNOWN


def run(main: Callable[[], None], extra: tuple[type[BaseException], ...] = ()) -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        main()
    except KNOWN + extra as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
