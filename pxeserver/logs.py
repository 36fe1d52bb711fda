"""Log output for every process of the server: text or one JSON object a line.

A module of its own, importing only the standard library, because spawned TFTP transfer
processes set up their logging with it: importing :mod:`pxeserver.daemon` there would pull
in the settings, the boot policy, Jinja2 and prometheus_client, about 10 MB of memory per
process that a transfer loop never uses (docs/BENCHMARKS.md, "Resource use").
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

# Fields a log call may carry with ``extra=`` (boot milestones carry the node's) that the
# JSON format writes as fields of their own, so a log pipeline can filter by MAC.
LOG_FIELDS = ("mac", "hostname", "event", "state", "took", "profile")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        d: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for name in LOG_FIELDS:
            if name in record.__dict__:
                d[name] = record.__dict__[name]
        if record.exc_info:
            d["exception"] = self.formatException(record.exc_info)
        return json.dumps(d)


def configure(log_format: str, log_level: str) -> None:
    """Everything to stderr, as text or JSON, at ``log_level`` and above."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(log_level)
