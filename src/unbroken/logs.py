"""One log format for the master and its workers, so interleaved lines stay readable.

The root handler prints what no one else prints. An app that configures logging itself
(Django's LOGGING, or its DEFAULT_LOGGING's console handler on `django` under DEBUG, or a
dictConfig with a handler on the app's logger) leaves `propagate` on, so each of its
records would reach our root handler too and be printed twice on the same stream; the
filter drops a record that a console handler below root already printed.
"""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(message)s"


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=FORMAT, stream=sys.stderr, force=True)
    for handler in logging.root.handlers:
        handler.addFilter(_not_printed_below)


def _is_console(handler: logging.Handler) -> bool:
    stream = getattr(handler, "stream", None)
    return isinstance(handler, logging.StreamHandler) and not isinstance(
        handler, logging.FileHandler) and stream in (
        sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)


def _not_printed_below(record: logging.LogRecord) -> bool:
    logger = logging.root.manager.loggerDict.get(record.name)
    while isinstance(logger, logging.Logger) and logger is not logging.root:
        for handler in logger.handlers:
            if record.levelno >= handler.level and _is_console(handler) and \
                    handler.filter(record):
                return False
        logger = logger.parent
    return True
