"""Health probes for the engines, over their own wire protocols (stdlib only).

Each probe answers one question, quickly, and raises ``ProbeFailed`` (with the
reason) rather than returning a half-truth. Kafka is spoken to directly: an
ApiVersions request to pick versions, then Metadata or CreateTopics, using the
non-flexible request versions every Kafka 4.x broker still serves.
"""

from __future__ import annotations

import json
import socket
import struct
import urllib.error
import urllib.request
from dataclasses import dataclass


class ProbeFailed(Exception):
    """The engine did not give a healthy answer."""


def tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def redis_ping(host: str, port: int, timeout: float = 2.0) -> None:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = sock.recv(64)
    except OSError as exc:
        raise ProbeFailed(f"redis: {exc}") from exc
    if not reply.startswith(b"+PONG"):
        raise ProbeFailed(f"redis: PING answered {reply!r}")


def http_json(method: str, url: str, body: dict | None = None, headers: dict | None = None,
              timeout: float = 5.0) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw) if raw else {}
        except ValueError:
            return exc.code, {"raw": raw.decode(errors="replace")}
    except (OSError, ValueError) as exc:
        raise ProbeFailed(f"{method} {url}: {exc}") from exc


# Unsigned-looking but well-formed SigV4 header: the local engine routes on the
# credential scope (service, region) and does not verify signatures. Tables
# live per region: ask in the one the platform uses (MOCKTRADE_DYNAMODB_REGION).
DEFAULT_DYNAMODB_REGION = "us-east-1"


def dynamodb_local_auth(region: str = DEFAULT_DYNAMODB_REGION) -> str:
    return (f"AWS4-HMAC-SHA256 Credential=mocktrade/20260101/{region}/dynamodb/aws4_request, "
            "SignedHeaders=host;x-amz-target, Signature=0")


DYNAMODB_LOCAL_AUTH = dynamodb_local_auth()


def dynamodb_call(endpoint: str, operation: str, body: dict, timeout: float = 5.0,
                  region: str = DEFAULT_DYNAMODB_REGION) -> tuple[int, dict]:
    return http_json("POST", endpoint.rstrip("/") + "/", body, {
        "X-Amz-Target": f"DynamoDB_20120810.{operation}",
        "Content-Type": "application/x-amz-json-1.0",
        "Authorization": dynamodb_local_auth(region),
    }, timeout=timeout)


def dynamodb_list_tables(endpoint: str, region: str = DEFAULT_DYNAMODB_REGION) -> list[str]:
    status, answer = dynamodb_call(endpoint, "ListTables", {}, region=region)
    if status != 200 or "TableNames" not in answer:
        raise ProbeFailed(f"dynamodb: ListTables answered {status} {answer}")
    return answer["TableNames"]


def search_cluster_health(url: str) -> str:
    status, answer = http_json("GET", url.rstrip("/") + "/_cluster/health", timeout=3.0)
    colour = answer.get("status")
    if status != 200 or colour not in ("green", "yellow"):
        raise ProbeFailed(f"search: /_cluster/health answered {status} {answer}")
    return colour


# --- Kafka wire protocol (just enough for health and topic creation) -------------

API_METADATA = 3
API_API_VERSIONS = 18
API_CREATE_TOPICS = 19
API_INIT_PRODUCER_ID = 22
ERROR_NONE = 0
ERROR_TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True)
class KafkaMetadata:
    cluster_id: str | None
    controller_id: int
    brokers: tuple[tuple[int, str, int], ...]  # (node_id, host, port)
    topics: dict[str, int]  # name -> partition count


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def _take(self, fmt: str):
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def int8(self) -> int: return self._take(">b")
    def int16(self) -> int: return self._take(">h")
    def int32(self) -> int: return self._take(">i")
    def int64(self) -> int: return self._take(">q")

    def string(self) -> str | None:
        length = self.int16()
        if length < 0:
            return None
        value = self.data[self.pos:self.pos + length].decode()
        self.pos += length
        return value

    def array(self, read_item) -> list:
        count = self.int32()
        return [read_item() for _ in range(max(count, 0))]


def _string(value: str | None) -> bytes:
    if value is None:
        return struct.pack(">h", -1)
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


def _exchange(sock: socket.socket, api_key: int, version: int, body: bytes, correlation_id: int) -> _Reader:
    header = struct.pack(">hhi", api_key, version, correlation_id) + _string("mocktrade-stack")
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", _recv_exact(sock, 4))[0]
    reader = _Reader(_recv_exact(sock, size))
    if reader.int32() != correlation_id:
        raise ProbeFailed("kafka: correlation id mismatch")
    return reader


def _recv_exact(sock: socket.socket, count: int) -> bytes:
    chunks, remaining = [], count
    while remaining:
        chunk = sock.recv(remaining)
        if not chunk:
            raise ProbeFailed("kafka: connection closed mid-response")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _pick_version(versions: dict[int, tuple[int, int]], api_key: int, highest_we_speak: int) -> int:
    if api_key not in versions:
        raise ProbeFailed(f"kafka: broker does not serve api {api_key}")
    low, high = versions[api_key]
    chosen = min(high, highest_we_speak)
    if chosen < low:
        raise ProbeFailed(f"kafka: api {api_key} needs version >= {low}; we speak <= {highest_we_speak}")
    return chosen


def _api_versions(sock: socket.socket) -> dict[int, tuple[int, int]]:
    reader = _exchange(sock, API_API_VERSIONS, 0, b"", 1)
    error = reader.int16()
    if error != ERROR_NONE:
        raise ProbeFailed(f"kafka: ApiVersions error {error}")
    entries = reader.array(lambda: (reader.int16(), reader.int16(), reader.int16()))
    return {key: (low, high) for key, low, high in entries}


def kafka_metadata(host: str, port: int, timeout: float = 3.0) -> KafkaMetadata:
    """Ask the broker for the cluster's metadata (all topics)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            version = _pick_version(_api_versions(sock), API_METADATA, 8)
            body = struct.pack(">i", -1)  # null topic list: all topics
            if version >= 4:
                body += struct.pack(">b", 0)  # allow_auto_topic_creation
            if version >= 8:
                body += struct.pack(">bb", 0, 0)
            reader = _exchange(sock, API_METADATA, version, body, 2)
            return _parse_metadata(reader, version)
    except (OSError, struct.error) as exc:
        raise ProbeFailed(f"kafka: {exc}") from exc


def _parse_metadata(reader: _Reader, version: int) -> KafkaMetadata:
    if version >= 3:
        reader.int32()  # throttle_time_ms
    brokers = reader.array(lambda: (reader.int32(), reader.string(), reader.int32(), reader.string()))
    cluster_id = reader.string() if version >= 2 else None
    controller_id = reader.int32()

    def partition() -> None:
        reader.int16(); reader.int32(); reader.int32()
        if version >= 7:
            reader.int32()
        reader.array(reader.int32); reader.array(reader.int32)
        if version >= 5:
            reader.array(reader.int32)

    def topic() -> tuple[str, int]:
        reader.int16()
        name = reader.string()
        reader.int8()  # is_internal
        partitions = reader.array(partition)
        if version >= 8:
            reader.int32()
        return name or "", len(partitions)

    topics = dict(reader.array(topic))
    return KafkaMetadata(cluster_id, controller_id, tuple((b[0], b[1] or "", b[2]) for b in brokers), topics)


def kafka_create_topics(host: str, port: int, topics: dict[str, int], replication_factor: int = 1,
                        timeout: float = 10.0) -> dict[str, int]:
    """Create topics (name -> partitions); returns name -> Kafka error code.

    TOPIC_ALREADY_EXISTS (36) is an expected answer for a topic made earlier.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            version = _pick_version(_api_versions(sock), API_CREATE_TOPICS, 4)
            body = struct.pack(">i", len(topics))
            for name, partitions in topics.items():
                body += _string(name) + struct.pack(">ihii", partitions, replication_factor, 0, 0)
            body += struct.pack(">i", int(timeout * 1000)) + struct.pack(">b", 0)
            reader = _exchange(sock, API_CREATE_TOPICS, version, body, 3)
            reader.int32()  # throttle_time_ms
            results = reader.array(lambda: (reader.string(), reader.int16(), reader.string()))
            return {name or "": error for name, error, _message in results}
    except (OSError, struct.error) as exc:
        raise ProbeFailed(f"kafka: {exc}") from exc


def kafka_init_producer_id(host: str, port: int, timeout: float = 3.0) -> int:
    """Ask for a producer id as an idempotent (non-transactional) producer
    does before its first record; returns the Kafka error code (0: given).

    A fresh KRaft broker answers COORDINATOR_LOAD_IN_PROGRESS (14) until the
    controller has handed it a block of producer ids, which on a busy machine
    takes tens of seconds after the broker already serves metadata; every
    idempotent producer's records wait that long (and time out) meanwhile.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            # v0-1 are the non-flexible versions; Kafka 4 still serves them.
            version = _pick_version(_api_versions(sock), API_INIT_PRODUCER_ID, 1)
            body = _string(None) + struct.pack(">i", 60_000)  # no transactional id
            reader = _exchange(sock, API_INIT_PRODUCER_ID, version, body, 4)
            reader.int32()  # throttle_time_ms
            return reader.int16()
    except (OSError, struct.error) as exc:
        raise ProbeFailed(f"kafka: {exc}") from exc
