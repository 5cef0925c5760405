"""Thin DVC stage entry points: `python -m skin_cancer.stages.<name>` reads params.yaml, calls the
library and writes the stage's declared outputs."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

from skin_cancer.config import ConfigError, load_params
from skin_cancer.data.images import BadImage
from skin_cancer.errors import DataError


def run_stage(stage: Callable) -> None:
    """Run `stage(cfg)`; expected errors end the process with one line naming what is wrong.

    SIGTERM (a cancelled `dvc repro`, a service manager) becomes SystemExit, so that the stage's
    atomic writers remove their temporary files on the way out.
    """
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        stage(load_params())
    except (ConfigError, DataError, BadImage, FileNotFoundError, ConnectionError, ChildProcessError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
