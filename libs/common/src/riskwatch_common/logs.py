"""Structured logging, set up once for every service, with secrets redacted.

JSON lines in production, a readable line for people. Every secret that settings load is
registered here, and a filter on the root handler replaces it wherever it appears (message,
arguments, exception text), so a token inside a URL in a library's error cannot leak.
"""

from __future__ import annotations

import logging
import sys
import threading
from datetime import UTC, datetime
from typing import Any

import orjson

_REDACTED = "***"
_secrets: set[str] = set()
_secrets_lock = threading.Lock()

# attributes every LogRecord has; anything else was passed via ``extra=`` and is a field
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("x", 0, "x", 0, "x", None, None)).keys() | {"message", "asctime"}
)


def register_secret(value: str | None) -> None:
    """Make ``value`` unloggable: it is replaced by *** in every log line from now on."""
    # very short values would redact ordinary words; real keys and tokens are long
    if value and len(value) >= 6:
        with _secrets_lock:
            _secrets.add(value)


def has_secrets() -> bool:
    """Whether any secret is registered (redaction has work to do)."""
    return bool(_secrets)


def redact(text: str) -> str:
    """Replace every registered secret in ``text``."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, _REDACTED)
    return text


def excerpt(text: str, limit: int) -> str:
    """``text`` redacted, then cut to ``limit`` characters: in this order, since a secret cut
    in half no longer matches and its first half would leak."""
    return redact(text)[:limit]


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets:
            return True
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, key, redact(value))
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(_extras(record))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc"] = record.exc_text
        return redact(orjson.dumps(doc, default=str).decode())


class ConsoleFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__("%(asctime)s %(levelname)-7s " + service + " %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return redact(line)


def configure_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Route all logging to stderr in the chosen format with secret redaction."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else ConsoleFormatter(service))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiokafka logs every coordinator hiccup at INFO; keep them but quieter
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
