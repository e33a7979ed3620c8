"""Logging setup: one JSON object per line in production, readable lines in development.

- ``configure_logging(production=..., level=...)``: called by ``migval serve`` before
  uvicorn starts and, in production, by ``create_app()`` (so uvicorn's worker
  processes get it too). Production: a JSON handler on the root logger, and uvicorn's
  loggers (access and error) sent to it instead of their own handlers. Development: a
  plain handler on the root logger for migval's own loggers, unless the root logger
  already has handlers (a test runner's, an operator's own config); uvicorn keeps its
  usual format.
- ``JsonFormatter``: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
  ``request_id`` when the line was logged while serving a GraphQL request,
  ``exc_info`` (the formatted traceback, one string) and ``stack_info`` when present.
- ``bind_request_id`` / ``reset_request_id``: the request id logs pick up (set by
  graph.schema for each GraphQL request).

Stdlib logging only, no dependency.
"""

import json
import logging
import sys
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any, Final, TextIO

_REQUEST_ID: ContextVar[str | None] = ContextVar("migval_request_id", default=None)
_MARK: Final = "_migval_handler"
UVICORN_LOGGERS: Final = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
DEVELOPMENT_FORMAT: Final = "%(asctime)s %(levelname)-7s [%(name)s] %(message)s"
TRACE: Final = 5  # uvicorn's --log-level trace


def bind_request_id(request_id: str | None) -> Token[str | None]:
    """Logs of the current task carry ``request_id`` until ``reset_request_id``."""
    return _REQUEST_ID.set(request_id)


def reset_request_id(token: Token[str | None]) -> None:
    _REQUEST_ID.reset(token)


def current_request_id() -> str | None:
    return _REQUEST_ID.get()


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or _REQUEST_ID.get()
        if request_id:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to ``sys.stderr`` as it is when the record is emitted (it may have been
    replaced since the handler was made)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure_logging(
    *, production: bool, level: str | int | None = None, stream: TextIO | None = None
) -> logging.Handler | None:
    """Install migval's log handler on the root logger (replacing the one an earlier
    call installed) and return it; None when development mode leaves an existing
    configuration alone. ``level`` (the root logger's, unless other handlers were
    there first): a level name (``info``, ``trace`` ...) or number; None follows
    uvicorn's ``--log-level`` (the ``uvicorn.error`` logger's level), else INFO.
    ``stream``: default ``sys.stderr``."""
    resolved = _level(level)
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, _MARK, False)]
    foreign = len(ours) != len(root.handlers)  # configured by someone else too
    if foreign and not production:
        return None  # keep their configuration
    handler: logging.Handler = (
        logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    )
    handler.setFormatter(JsonFormatter() if production else logging.Formatter(DEVELOPMENT_FORMAT))
    setattr(handler, _MARK, True)
    for old in ours:
        root.removeHandler(old)
    root.addHandler(handler)
    if not foreign:  # else their levels stand (a test runner's capture, ...)
        root.setLevel(resolved)
    if production:  # uvicorn's lines go through the JSON handler too
        for name in UVICORN_LOGGERS:
            logger = logging.getLogger(name)
            for old in list(logger.handlers):
                logger.removeHandler(old)
            logger.propagate = True
    return handler


def _level(level: str | int | None) -> int:
    if isinstance(level, int):
        return level
    if level is None:
        return logging.getLogger("uvicorn.error").level or logging.INFO
    name = level.strip().upper()
    if name == "TRACE":
        return TRACE
    levels = logging.getLevelNamesMapping()
    if name not in levels:
        raise ValueError(f"unknown log level {level!r}")
    return levels[name]
