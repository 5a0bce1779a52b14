"""The real engines of the distributed mode, run locally as child processes.

    from mocktrade import stack
    env = stack.up(".mocktrade/stack")      # {"MOCKTRADE_KAFKA_BOOTSTRAP": "127.0.0.1:9092", ...}
    for engine in stack.status(".mocktrade/stack"): print(engine.name, engine.healthy)
    stack.down(".mocktrade/stack")

Engines: kafka (Apache Kafka, KRaft), redis (Debian's redis-server), dynamodb
(moto's server, DynamoDB API), elasticsearch (OpenSearch, Elasticsearch REST
API). ClickHouse has no server here: the analytics adapter embeds chDB.
See infra/README.md for where each comes from, ports and measured costs.
"""

from .artifacts import ArtifactError
from .engines import DEFAULT_PORTS, ENGINES, REFERENCE_TOPICS
from .manager import EngineStatus, StackError, connection_env, down, planned_ports, status, up

__all__ = [
    "ArtifactError", "DEFAULT_PORTS", "ENGINES", "EngineStatus", "REFERENCE_TOPICS", "StackError",
    "connection_env", "down", "planned_ports", "status", "up",
]
