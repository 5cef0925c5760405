"""The command line's and the app's quiet start: TensorFlow's, absl's and oneDNN's start-up logs kept
off the terminal unless asked for."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile


@contextlib.contextmanager
def library_logs_hidden(verbose: bool):
    """Hide TensorFlow, absl and oneDNN start-up logs unless `verbose`; an exception that escapes
    (a crash, not a handled error) shows them.

    They are written from C++ straight to file descriptor 2, some before absl's logging is set up,
    so TF_CPP_MIN_LOG_LEVEL does not silence them (TensorFlow 2.21). While the command runs, that
    descriptor points at a temporary file and Python's own stderr (errors, progress bars) at the
    real one."""
    if verbose:
        yield
        return
    import logging
    import warnings

    loggers = {name: logging.getLogger(name) for name in ("tensorflow", "absl", "mlflow", "h5py")}
    levels = {name: logger.level for name, logger in loggers.items()}
    for logger in loggers.values():
        logger.setLevel(logging.ERROR)
    previous = sys.stderr
    previous.flush()
    real = os.dup(2)
    with tempfile.TemporaryFile() as captured, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # library warnings (Keras, MLflow) are logs too
        os.dup2(captured.fileno(), 2)
        if previous is sys.__stderr__:  # the process's own stderr, not a caller's capture: keep it on the terminal
            sys.stderr = open(real, "w", buffering=1, closefd=False)  # noqa: SIM115 - restored below
        try:
            yield
        except BaseException as error:
            if not isinstance(error, (SystemExit, KeyboardInterrupt)):
                sys.stderr.flush()
                captured.seek(0)
                os.write(real, captured.read()[-20_000:])
            raise
        finally:
            sys.stderr.flush()
            sys.stderr = previous
            os.dup2(real, 2)
            os.close(real)
            for name, logger in loggers.items():
                logger.setLevel(levels[name])
