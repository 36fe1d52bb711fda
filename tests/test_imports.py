"""What each process of ``pxeserver serve`` imports, checked in a fresh interpreter: a
module a process never uses costs its memory in every process that imports it
(docs/BENCHMARKS.md, "Resource use")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# The main process with its services started, as serve's on_startup hook starts them.
MAIN = """
import json, sys
from pathlib import Path
from tests.support.settings import make_settings
from pxeserver.daemon import Daemon
tmp = Path(sys.argv[1])
settings = make_settings(tmp, {"server": {"listen": "127.0.0.1", "tftp_port": 0,
                                          "dhcp_port": 0, "pxe_port": 0}})
daemon = Daemon(settings)
daemon.start()
daemon.stop()
print(json.dumps(sorted(sys.modules)))
"""

# An HTTP worker's application over SQLite, as _worker_app builds it.
WORKER = """
import json, sys
from pathlib import Path
from tests.support.settings import make_settings
from pxeserver.daemon import make_service
from pxeserver.web import create_app
from pxeserver.web.entrance import Entrance
settings = make_settings(Path(sys.argv[1]), {})
service = make_service(settings, worker=True)
Entrance(create_app(settings, service), service, settings)
service.close()
print(json.dumps(sorted(sys.modules)))
"""


def imported(code: str, tmp_path: Path) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, check=True,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    return {name.split(".")[0] for name in json.loads(out.stdout.splitlines()[-1])}


def test_the_main_process_does_not_import_the_web_framework(tmp_path: Path) -> None:
    # Flask, Werkzeug and Click were ~9 MB of the main process, for one log line at start.
    assert imported(MAIN, tmp_path) & {"flask", "werkzeug", "click", "itsdangerous"} == set()


def test_an_http_worker_over_sqlite_does_not_import_the_etcd_client(tmp_path: Path) -> None:
    assert imported(WORKER, tmp_path) & {"etcd3", "grpc", "google"} == set()
