"""A real ``pxeserver serve`` process for integration tests, stopped by its PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path
from typing import Any

import yaml

from .net import free_port, wait_for


class ServerProcess:
    def __init__(
        self,
        workdir: Path,
        *,
        settings: dict[str, Any] | None = None,
        args: list[str] | None = None,
        name: str = "pxeserver",
    ) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.http_port = free_port()
        self.log_path = workdir / f"{name}.log"
        self.config: Path | None = None
        if settings is not None:
            self.config = workdir / f"{name}.yaml"
            self.config.write_text(yaml.safe_dump(settings))
        self.args = args or []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 30) -> ServerProcess:
        cmd = [sys.executable, "-m", "pxeserver", "serve", "--http-port", str(self.http_port)]
        if self.config:
            cmd += ["--config", str(self.config)]
        cmd += self.args
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            cmd, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"pxeserver exited at start; see {self.log_path}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1):
                    return True
            except urllib.error.HTTPError:
                return True  # answering, even if the store is down
            except OSError:
                return False

        wait_for(up, timeout, f"pxeserver on {self.url}")
        return self

    def steps_written(self, timeout: float = 30) -> None:
        """Wait until every boot step the HTTP workers answered from memory is written to
        the store (they are written behind the answer, within one flush of the recorder):
        nothing in the step logs is left that the recorder has not taken."""

        def done() -> bool:
            for log in (self.data_dir / "steps").glob("*.log"):
                mark = log.with_name(log.name + ".done")
                taken = int(mark.read_text() or 0) if mark.exists() else 0
                if log.stat().st_size > taken:
                    return False
            return True

        wait_for(done, timeout, "the boot steps answered from memory to be written")

    @property
    def data_dir(self) -> Path:
        """The server's data dir: ``var`` beside its settings (the default), or as set."""
        if self.config is not None:
            raw = yaml.safe_load(self.config.read_text()) or {}
            configured = (raw.get("paths") or {}).get("data_dir")
            if configured:
                return self.workdir / configured
        return self.workdir / "var"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # The process group: granian's worker processes go with their parent.
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Message, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()

    def get(self, path: str) -> tuple[int, Message, bytes]:
        return self.request("GET", path)

    def json(self, path: str) -> Any:
        status, _, body = self.get(path)
        assert status == 200, (status, body)
        return json.loads(body)
