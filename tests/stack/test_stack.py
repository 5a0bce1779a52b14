"""`mocktrade stack`: the real engines start from the registries, answer on
loopback only, survive a restart with their data, and leave nothing behind."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from mocktrade import stack
from mocktrade.stack import probes
from mocktrade.stack.processes import PidRecord, is_alive, read_pid_file

pytestmark = [
    pytest.mark.stack,
    pytest.mark.skipif(os.environ.get("MOCKTRADE_TEST_STACK") != "1",
                       reason="starts Kafka, Redis, DynamoDB API and OpenSearch (slow): set MOCKTRADE_TEST_STACK=1"),
]

HOST = "127.0.0.1"
# Creating an index waits for its primary shard; on a loaded 2-core machine
# that has taken over 5 s (the probes' default).
SEARCH_WRITE_TIMEOUT = 60.0


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def redis_command(port: int, *args: str) -> bytes:
    payload = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(arg.encode())}\r\n".encode() + arg.encode() + b"\r\n" for arg in args)
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(payload)
        return sock.recv(4096)


def listening_addresses(ports: set[int]) -> dict[int, set[str]]:
    """Local addresses of LISTEN sockets on the given ports, from /proc/net/tcp{,6}."""
    found: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(port_hex, 16) in ports:
                found.setdefault(int(port_hex, 16), set()).add(address)
    return found


LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F"}  # 127.0.0.1, ::ffff:127.0.0.1


def write_sample_data(env: dict[str, str], redis_port: int) -> None:
    assert redis_command(redis_port, "SET", "price:MOCKAAPL", "187.25") == b"+OK\r\n"
    endpoint = env["MOCKTRADE_DYNAMODB_ENDPOINT"]
    status, answer = probes.dynamodb_call(endpoint, "CreateTable", {
        "TableName": "trading_portfolios",
        "KeySchema": [{"AttributeName": "userId", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "userId", "AttributeType": "S"}],
        "BillingMode": "PAY_PER_REQUEST"})
    assert status == 200, answer
    status, answer = probes.dynamodb_call(endpoint, "PutItem", {
        "TableName": "trading_portfolios",
        "Item": {"userId": {"S": "alice"}, "cashBalance": {"N": "1000.00"}, "version": {"N": "0"}}})
    assert status == 200, answer
    debit = {"TransactItems": [{"Update": {
        "TableName": "trading_portfolios", "Key": {"userId": {"S": "alice"}},
        "UpdateExpression": "SET cashBalance = cashBalance - :amount, version = version + :one",
        "ConditionExpression": "cashBalance >= :amount",
        "ExpressionAttributeValues": {":amount": {"N": "400.50"}, ":one": {"N": "1"}}}}]}
    assert probes.dynamodb_call(endpoint, "TransactWriteItems", debit)[0] == 200
    assert probes.dynamodb_call(endpoint, "TransactWriteItems", debit)[0] == 200
    # 199.00 left: refused, and the ledger entry written with it is not kept either.
    ledger = {"Put": {"TableName": "trading_portfolios", "Item": {"userId": {"S": "ledger#o-3"}},
                      "ConditionExpression": "attribute_not_exists(userId)"}}
    status, answer = probes.dynamodb_call(
        endpoint, "TransactWriteItems", {"TransactItems": [ledger, *debit["TransactItems"]]})
    assert status == 400 and "TransactionCanceledException" in answer["__type"], answer
    status, answer = probes.dynamodb_call(endpoint, "GetItem", {
        "TableName": "trading_portfolios", "Key": {"userId": {"S": "ledger#o-3"}}})
    assert status == 200 and "Item" not in answer, answer

    search = env["MOCKTRADE_ELASTICSEARCH_URL"]
    status, answer = probes.http_json("PUT", f"{search}/trading_trades-2026-01", {
        "aliases": {"trading_trades": {}},
        "mappings": {"properties": {"orderId": {"type": "keyword"}, "symbol": {"type": "keyword"},
                                    "executionTimestamp": {"type": "date"},
                                    "failureReason": {"type": "text"}}}},
        {"Content-Type": "application/json"}, timeout=SEARCH_WRITE_TIMEOUT)
    assert status == 200, answer
    status, answer = probes.http_json("PUT", f"{search}/trading_trades-2026-01/_doc/o-1?refresh=true", {
        "orderId": "o-1", "symbol": "MOCKAAPL", "executionTimestamp": "2026-01-02T03:04:05Z"},
        {"Content-Type": "application/json"}, timeout=SEARCH_WRITE_TIMEOUT)
    assert status == 201, answer


def assert_sample_data(env: dict[str, str], redis_port: int) -> None:
    assert redis_command(redis_port, "GET", "price:MOCKAAPL") == b"$6\r\n187.25\r\n"
    status, answer = probes.dynamodb_call(env["MOCKTRADE_DYNAMODB_ENDPOINT"], "GetItem", {
        "TableName": "trading_portfolios", "Key": {"userId": {"S": "alice"}}, "ConsistentRead": True})
    assert status == 200, answer
    assert answer["Item"]["cashBalance"]["N"] in ("199", "199.0", "199.00")
    assert answer["Item"]["version"]["N"] == "2"
    status, answer = probes.http_json(
        "GET", env["MOCKTRADE_ELASTICSEARCH_URL"] + "/trading_trades/_count?q=symbol:MOCKAAPL")
    assert status == 200 and answer["count"] == 1, answer


def assert_all_stopped(records: dict[str, PidRecord], ports: list[int]) -> None:
    for name, record in records.items():
        assert not is_alive(record), f"{name} (pid {record.pid}) still runs after down"
    assert not [port for port in ports if probes.tcp_open(HOST, port)], "a port still answers after down"


def test_stack_up_status_idempotent_down_and_restart(tmp_path: Path) -> None:
    stack_dir = tmp_path / "stack"
    keys = list(stack.DEFAULT_PORTS)
    ports = dict(zip(keys, free_ports(len(keys))))
    engines = list(stack.ENGINES)
    pid_files = {name: stack_dir / name / f"{name}.pid" for name in engines}
    try:
        began = time.monotonic()
        env = stack.up(stack_dir, ports=ports)
        print(f"\nstack up (artifacts cached or not) in {time.monotonic() - began:.1f}s")
        assert env == {
            "MOCKTRADE_KAFKA_BOOTSTRAP": f"{HOST}:{ports['kafka']}",
            "MOCKTRADE_REDIS_URL": f"redis://{HOST}:{ports['redis']}/0",
            "MOCKTRADE_DYNAMODB_ENDPOINT": f"http://{HOST}:{ports['dynamodb']}",
            "MOCKTRADE_ELASTICSEARCH_URL": f"http://{HOST}:{ports['elasticsearch']}",
        }
        assert stack.connection_env(stack_dir) == env
        assert (stack_dir / "stack.env").read_text().split() == [f"{k}={v}" for k, v in env.items()]

        # Every engine answers, and listens on loopback only.
        metadata = probes.kafka_metadata(HOST, ports["kafka"])
        assert metadata.brokers == ((1, HOST, ports["kafka"]),)
        assert {topic: metadata.topics.get(topic) for topic in stack.REFERENCE_TOPICS} == {
            topic: 4 for topic in stack.REFERENCE_TOPICS}
        # Ready for idempotent producers too (a fresh broker answers
        # COORDINATOR_LOAD_IN_PROGRESS for a while after serving metadata).
        assert probes.kafka_init_producer_id(HOST, ports["kafka"]) == probes.ERROR_NONE
        assert redis_command(ports["redis"], "PING") == b"+PONG\r\n"
        assert probes.dynamodb_list_tables(env["MOCKTRADE_DYNAMODB_ENDPOINT"]) == []
        assert probes.search_cluster_health(env["MOCKTRADE_ELASTICSEARCH_URL"]) == "green"
        listening = listening_addresses(set(ports.values()))
        assert set(listening) == set(ports.values()), listening
        assert all(addresses <= LOOPBACK for addresses in listening.values()), listening

        report = {item.name: item for item in stack.status(stack_dir)}
        assert set(report) == set(engines)
        for name, item in report.items():
            assert item.running and item.healthy, item
            assert item.pid and item.rss_kib and item.rss_kib > 0, item
            assert item.ports == {k: ports[k] for k in stack.ENGINES[name].port_keys}
            print(f"{name:14} rss {item.rss_kib // 1024:5d} MiB  ready after "
                  f"{(stack_dir / name / 'ready-after-seconds').read_text().strip()}s")
        records = {name: read_pid_file(path) for name, path in pid_files.items()}

        write_sample_data(env, ports["redis"])

        # A second up is a no-op: same processes, same settings, no waiting.
        began = time.monotonic()
        assert stack.up(stack_dir, ports=ports) == env
        assert time.monotonic() - began < 5
        assert {name: read_pid_file(path) for name, path in pid_files.items()} == records

        assert sorted(stack.down(stack_dir)) == sorted(engines)
        assert_all_stopped(records, list(ports.values()))
        assert all(not item.running and not item.healthy for item in stack.status(stack_dir))
        assert stack.down(stack_dir) == []

        # Up again (ports remembered by the stack dir): the data is still there.
        began = time.monotonic()
        assert stack.up(stack_dir) == env
        print(f"stack restart in {time.monotonic() - began:.1f}s")
        assert_sample_data(env, ports["redis"])
        assert set(probes.kafka_metadata(HOST, ports["kafka"]).topics) >= set(stack.REFERENCE_TOPICS)
        records = {name: read_pid_file(path) for name, path in pid_files.items()}
    finally:
        stack.down(stack_dir)
    assert_all_stopped(records, list(ports.values()))
