"""Log output for every process of the server: text or one JSON object a line, and
:func:`redact`, which every place that shows a URL uses (logs, errors, ``/healthz``,
``pxeserver check``).

A module of its own, importing only the standard library, because spawned TFTP transfer
processes set up their logging with it: importing :mod:`pxeserver.daemon` there would pull
in the settings, the boot policy, Jinja2 and prometheus_client, about 10 MB of memory per
process that a transfer loop never uses (docs/BENCHMARKS.md, "Resource use").
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

# Fields a log call may carry with ``extra=`` (boot milestones carry the node's) that the
# JSON format writes as fields of their own, so a log pipeline can filter by MAC.
LOG_FIELDS = ("mac", "hostname", "event", "state", "took", "profile")

# The user and password part of a URL: after "scheme://", up to the last "@" before the
# host (a password may hold "@"; the host part holds no "/", "?", "#" or whitespace).
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s]*@")


def redact(text: str) -> str:
    """``text`` as it may be shown: the user and password of every URL in it (``http://
    user:secret@host:2379``, an etcd endpoint's credentials) become ``***``. Everything
    that shows a URL from the settings goes through this, and so does every log line."""
    return _USERINFO.sub(r"\1***@", text)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        d: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "pid": record.process,
        }
        for name in LOG_FIELDS:
            if name in record.__dict__:
                d[name] = record.__dict__[name]
        if record.exc_info:
            d["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(d)


def configure(log_format: str, log_level: str) -> None:
    """Everything to stderr, as text or JSON, at ``log_level`` and above."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(log_level)
