"""Logging for every command: one format for xmodal's own loggers and uvicorn's, plain
text or one JSON object per line, and the level they log at.

The `log` settings group is declared here and taken by `configure_logging`, which the
CLI calls once it has built its settings. Only the handler it installs is replaced on a
second call: handlers others put on the root logger (pytest's caplog) stay.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from pydantic import Field

from xmodal.search.settings import SettingsGroup

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]

# Loggers that follow the `level` setting; other libraries' log warnings and worse
# (open_clip and transformers say a lot at info).
OWN_LOGGERS = ("xmodal", "uvicorn")


class LogSettings(SettingsGroup):
    """Logging: level, format, the access log and progress lines of indexing runs."""

    level: LogLevel = Field(
        "info",
        description="Level of xmodal's and the HTTP server's loggers; other libraries log "
        'warnings and worse (everything at "debug").',
    )
    format: LogFormat = Field(
        "text",
        description='"text": one readable line per record; "json": one JSON object per line '
        "(time, level, logger, message and the record's own fields), for log collectors.",
    )
    access: bool = Field(
        True,
        description="`xmodal serve`: one line per request (client, method, path, route, "
        "status, milliseconds) on the xmodal.access logger, at info.",
    )
    progress_seconds: float = Field(
        30.0,
        gt=0,
        description="Indexing runs whose stderr is not a terminal (cron, containers) log a "
        "progress line at least this often, in seconds, instead of drawing a bar.",
    )
    progress_percent: float = Field(
        10.0,
        gt=0,
        le=100,
        description="... and each time this share of the run's files is done (percent).",
    )


class StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes (a test runner's capture, or
    rich's proxy while a progress bar is drawn, which prints the line above the bar)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        pass


# Attributes every LogRecord has; anything else on a record came as `extra`.
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's coloured copy of the message
}


def _utc_time(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, the
    record's `extra` fields, and the traceback as `exception` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _utc_time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`2026-12-02T11:50:48.123Z INFO xmodal.access: message`."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_utc_time(record)} {record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def formatter_for(format: LogFormat) -> logging.Formatter:
    return JsonFormatter() if format == "json" else TextFormatter()


def configure_logging(settings: LogSettings) -> logging.Handler:
    """Route every logger to stderr in the settings' format; xmodal's and uvicorn's at the
    settings' level, other libraries' at warning (or the level, when stricter)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, StderrHandler):
            root.removeHandler(handler)
    handler = StderrHandler()
    handler.setFormatter(formatter_for(settings.format))
    root.addHandler(handler)
    level = logging.getLevelNamesMapping()[settings.level.upper()]
    root.setLevel(level if settings.level == "debug" else max(level, logging.WARNING))
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(level)
    # A uvicorn started earlier in the process with its own logging config or level (a
    # library user's, a test's) left handlers and levels on its loggers that bypass ours.
    for name in ("uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)  # as "uvicorn" says
    logging.getLogger("uvicorn").handlers.clear()
    return handler


__all__ = [
    "JsonFormatter",
    "LogSettings",
    "StderrHandler",
    "TextFormatter",
    "configure_logging",
    "formatter_for",
]
