"""A real `bertx serve` process on 127.0.0.1 for the tests, started and stopped as users do."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.proc, self.url, self.log = proc, url, log

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(artifact: Path, tmp: Path, *options: str) -> Server:
    """Start `bertx serve ARTIFACT OPTIONS` on a free port and wait until /ready answers."""
    import httpx

    port = free_port()
    log = tmp / f"serve-{port}.log"
    args = [sys.executable, "-m", "bertx.cli", "serve", str(artifact), "--port", str(port), "--log-level", "warning"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen([*args, *options], stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"bertx serve exited with {proc.returncode}: {log.read_text()}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return Server(proc, url, log)
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"bertx serve did not get ready: {log.read_text()}")
