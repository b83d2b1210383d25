"""The driver's log file: what Ray, Tune, Optuna and MLflow say themselves (token-authentication
notices, "may be a performance bottleneck", database migrations, Python warnings) goes to
`<sweep folder>/driver.log`, secrets masked, while the console shows byol-sweep's own view."""
from __future__ import annotations

import logging
from pathlib import Path

from sweep.tracking.secrets import mask_secrets

LOG_FILE = "driver.log"
LIBRARY_LOGGERS = ("ray", "mlflow", "optuna", "alembic", "sqlalchemy", "huey", "py.warnings")


class _Masked(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = mask_secrets(record.getMessage()), None
        return True


class LibraryLog:
    """Sends the libraries' loggers to the sweep's log file from its creation until close() (or the
    end of a `with` block), then gives them back their own handlers."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOG_FILE
        self.handler = logging.FileHandler(self.path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.handler.addFilter(_Masked())
        self.saved = {}
        for name in LIBRARY_LOGGERS:
            logger = logging.getLogger(name)
            self.saved[name] = (logger.handlers[:], logger.propagate)
            logger.handlers, logger.propagate = [self.handler], False
        logging.captureWarnings(True)

    def close(self) -> None:
        if not self.saved:
            return
        logging.captureWarnings(False)
        for name, (handlers, propagate) in self.saved.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate = handlers, propagate
        self.saved = {}
        self.handler.close()

    def __enter__(self) -> LibraryLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
