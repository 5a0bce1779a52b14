"""Order acceptance, accept -> executed and price fan-out against the
distributed deployment (`mocktrade up --distributed`), beside the engines' own
limits measured in the same run.

    .venv/bin/python bench/distributed.py                    # about 3 minutes
    .venv/bin/python bench/distributed.py --duration 10      # shorter phases
    .venv/bin/python bench/distributed.py --stack-dir /tmp/devstack --skip-engines

The engines are a running stack (`mocktrade stack up`, default the shared dev
stack in /tmp/devstack): the platform is started on it with `--stack-dir DIR
--keep-stack` and never stops it. Everything this run creates lives under a
fresh MOCKTRADE_TABLE_PREFIX (topics, tables, Redis keys, indices) and a fresh
data dir; the DynamoDB tables and Kafka topics of the prefix are deleted at
the end (Redis keys and search indices of the prefix are left).

1. The engines' own ceilings:
   - Kafka: the broker's producer perf tool (org.apache.kafka.tools.
     ProducerPerformance, in kafka-tools-4.4.0.jar, which the broker's
     jar set does not include; found in infra/kafka/target/lib or the local
     Maven repository: `mvn dependency:get -Dartifact=org.apache.kafka:kafka-tools:4.4.0`),
     300-byte records, acks=all, idempotent, on a topic of the prefix.
   - Redis: `redis-benchmark -t set,get,publish -n 50000 -q`.
   - DynamoDB API: 16 threads of boto3 GetItem, then of TransactWriteItems
     (two Puts, as one execution writes a portfolio and a ledger row), in a
     tight loop, on a scratch table of the prefix.
2. The platform: `mocktrade up --distributed --keep-stack --stack-dir DIR
   --port P`; users created in its DynamoDB tables (the `mocktrade accounts
   create` store call) and primed with a buy each, as bench/orders.py does.
   (a) closed loop, 32 connections: GET /healthz, then POST /v1/orders.
   (b) open loop at fixed rates (default 10/s and 20/s), latency from the
       scheduled send; (c) accept -> executed for every order of (b), from
       the DynamoDB ledger (orderTimestamp -> executionTimestamp).
   (d) fan-out: N WebSocket subscribers on the marketdata process (port
       P+1), feed tick timestamp -> client receive (bench/fanout.py's client).
Each platform figure is printed as a fraction of the engine's own.

Loopback only, bounded in time; the platform is stopped at the end. Prints
figures and CPU context (other sessions share this machine); never passes
or fails on time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (HOST, Platform, all_latencies, completed, cpu_seconds, machine,  # noqa: E402
                    mocktrade_command, order_request, percentile, raw_request, report_open_loop,
                    run_loadgen, status_line, summary_ms)
from orders import SYMBOLS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KAFKA_LIB = ROOT / "infra" / "kafka" / "target" / "lib"
KAFKA_TOOLS = "kafka-tools-4.4.0.jar"

GOAL_VALIDATION_P99_MS = 500.0
GOAL_EXECUTED_P99_MS = 5000.0
GOAL_BROADCAST_P50_MS = 500.0


def now_line() -> str:
    return f"{time.strftime('%H:%M:%S')} load {' '.join(open('/proc/loadavg').read().split()[:3])}"


# -- CPU of a set of processes -------------------------------------------------

class GroupMeter:
    """CPU (cores) of named processes, of this process and its children, and of
    the rest of the machine, over an interval."""

    def __init__(self, pids: dict[str, int]):
        self.pids = {name: pid for name, pid in pids.items() if Path(f"/proc/{pid}").exists()}
        self.start()

    @staticmethod
    def _machine() -> float:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")

    def _each(self) -> dict[str, float]:
        out = {}
        for name, pid in self.pids.items():
            try:
                out[name] = cpu_seconds(pid)
            except OSError:
                out[name] = 0.0
        return out

    @staticmethod
    def _self() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def start(self) -> None:
        self._t, self._m, self._p, self._s = time.monotonic(), self._machine(), self._each(), self._self()

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self._t
        each = {name: (v - self._p.get(name, 0.0)) / wall for name, v in self._each().items()}
        mine = (self._self() - self._s) / wall
        machine_ = (self._machine() - self._m) / wall
        return {"wall": wall, "each": each, "bench": mine, "machine": machine_,
                "other": max(0.0, machine_ - sum(each.values()) - mine)}

    @staticmethod
    def line(f: dict) -> str:
        parts = ", ".join(f"{name} {v:.2f}" for name, v in f["each"].items() if v >= 0.005)
        return (f"cpu (cores): {parts}; bench + load generator {f['bench']:.2f}; "
                f"other processes {f['other']:.2f}; machine {f['machine']:.2f} of {os.cpu_count()}")


def engine_pids(stack_dir: Path) -> dict[str, int]:
    pids = {}
    for name in ("kafka", "redis", "dynamodb"):
        try:
            text = (stack_dir / name / f"{name}.pid").read_text().strip()
            pids[name] = int(json.loads(text)["pid"]) if text.startswith("{") else int(text.split()[0])
        except (OSError, ValueError, KeyError):
            pass
    return pids


def engines_env(stack_dir: Path) -> dict[str, str]:
    env = {}
    for line in (stack_dir / "stack.env").read_text().splitlines():
        name, _, value = line.partition("=")
        if name.startswith("MOCKTRADE_"):
            env[name] = value.strip()
    return env


# -- 1. the engines' own limits ------------------------------------------------

def kafka_tools_jar() -> Path | None:
    for candidate in (KAFKA_LIB / KAFKA_TOOLS,
                      Path.home() / ".m2/repository/org/apache/kafka/kafka-tools/4.4.0" / KAFKA_TOOLS):
        if candidate.exists():
            return candidate
    return None


def kafka_perf(bootstrap: str, prefix: str, records: int, pids: dict[str, int]) -> dict:
    jar = kafka_tools_jar()
    if jar is None or shutil.which("java") is None:
        print("  kafka: kafka-tools-4.4.0.jar not found (not in the broker's jar set); fetch it with "
              "`mvn dependency:get -Dartifact=org.apache.kafka:kafka-tools:4.4.0`; skipped")
        return {}
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"{prefix}perf"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, 4, 1)], operation_timeout=20).values():
        future.result(timeout=30)
    command = ["java", "-Xmx256m", "-cp", f"{KAFKA_LIB}/*:{jar}", "org.apache.kafka.tools.ProducerPerformance",
               "--topic", topic, "--num-records", str(records), "--record-size", "300",
               "--throughput", "-1", "--producer-props", f"bootstrap.servers={bootstrap}", "acks=all",
               "enable.idempotence=true"]
    print(f"  kafka: {' '.join(command[:3])} '{KAFKA_LIB}/*:{jar.name}' ProducerPerformance "
          f"--topic {topic} --num-records {records} --record-size 300 --throughput -1 "
          f"--producer-props bootstrap.servers={bootstrap} acks=all enable.idempotence=true", flush=True)
    meter = GroupMeter(pids)
    out = subprocess.run(command, capture_output=True, text=True, timeout=180).stdout
    cpu = meter.stop()
    last = [line for line in out.splitlines() if "records sent" in line][-1:]
    figures = {}
    if last:
        print(f"    {last[0].strip()}")
        m = re.search(r"([\d.]+) records/sec .*?([\d.]+) ms avg latency.*?([\d.]+) ms 50th.*?"
                      r"([\d.]+) ms 99th", last[0])
        if m:
            figures = {"rate": float(m.group(1)), "avg_ms": float(m.group(2)),
                       "p50_ms": float(m.group(3)), "p99_ms": float(m.group(4))}
    else:
        print(f"    no summary line; output tail: {out[-500:]}")
    print(f"    {GroupMeter.line(cpu)}")
    for future in admin.delete_topics([topic], operation_timeout=20).values():
        try:
            future.result(timeout=30)
        except Exception:  # noqa: BLE001 - cleanup only
            pass
    return figures


def redis_benchmark(url: str, prefix: str, requests: int, pids: dict[str, int]) -> dict[str, float]:
    if shutil.which("redis-benchmark") is None:
        print("  redis: redis-benchmark not installed (Debian redis-tools); skipped")
        return {}
    m = re.match(r"redis://([^:/]+):(\d+)", url)
    host, port = (m.group(1), m.group(2)) if m else ("127.0.0.1", "6379")
    base_cmd = ["redis-benchmark", "-h", host, "-p", port, "-n", str(requests), "-q"]
    # Debian's redis-benchmark 7.0 has no `-t publish` test (it prints
    # nothing for it): PUBLISH is run as an explicit command instead.
    figures = {}
    for command in ([*base_cmd, "-t", "set,get,publish"],
                    [*base_cmd, "publish", f"{prefix}bench", "x" * 120]):
        print(f"  redis: {' '.join(command)}", flush=True)
        meter = GroupMeter(pids)
        out = subprocess.run(command, capture_output=True, text=True, timeout=180).stdout
        cpu = meter.stop()
        for line in out.replace("\r", "\n").splitlines():
            m2 = re.match(r"\s*(SET|GET|PUBLISH|publish)\b[^:]*: ([\d.]+) requests per second(.*)", line)
            if m2:
                figures[m2.group(1).upper()] = float(m2.group(2))
                print(f"    {m2.group(1).upper()}: {float(m2.group(2)):,.0f} requests/s{m2.group(3)}")
        print(f"    {GroupMeter.line(cpu)}")
    return figures


def dynamodb_client(endpoint: str):
    import boto3
    from botocore.config import Config

    return boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="mocktrade", aws_secret_access_key="mocktrade",
                        config=Config(max_pool_connections=32, retries={"max_attempts": 0}))


def dynamodb_ceiling(endpoint: str, prefix: str, seconds: float, threads: int,
                     pids: dict[str, int]) -> dict[str, float]:
    client = dynamodb_client(endpoint)
    table = f"{prefix}ceiling"
    client.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}])
    client.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100})
    for i in range(64):
        client.put_item(TableName=table, Item={"k": {"S": f"user-{i}"}, "cash": {"N": "1000"},
                                               "v": {"N": "0"}})
    figures = {}

    def get(i: int) -> None:
        client.get_item(TableName=table, Key={"k": {"S": f"user-{i % 64}"}}, ConsistentRead=True)

    def transact(i: int) -> None:
        client.transact_write_items(TransactItems=[
            {"Put": {"TableName": table, "Item": {"k": {"S": f"user-{i % 64}"}, "cash": {"N": str(i)},
                                                 "v": {"N": str(i)}}}},
            {"Put": {"TableName": table, "Item": {"k": {"S": f"ledger-{i}"}, "v": {"N": str(i)}},
                     "ConditionExpression": "attribute_not_exists(k)"}}])

    counter = iter(range(10**9))  # one sequence across phases: ledger keys stay new
    try:
        for name, call, threads in (("GetItem", get, threads), ("TransactWriteItems (2 Puts)", transact, threads),
                                    ("GetItem x1", get, 1), ("TransactWriteItems x1", transact, 1)):
            latencies: list[float] = []
            errors = [0]
            lock = threading.Lock()
            span = seconds if threads > 1 else min(seconds, 2.0)
            end = time.monotonic() + span

            def worker() -> None:
                while time.monotonic() < end:
                    with lock:
                        i = next(counter)
                    t = time.perf_counter()
                    try:
                        call(i)
                    except Exception:  # noqa: BLE001 - counted
                        errors[0] += 1
                        continue
                    latencies.append((time.perf_counter() - t) * 1000)

            meter = GroupMeter(pids)
            started = time.monotonic()
            with ThreadPoolExecutor(threads) as pool:
                for future in [pool.submit(worker) for _ in range(threads)]:
                    future.result()
            elapsed = time.monotonic() - started
            cpu = meter.stop()
            rate = len(latencies) / elapsed
            figures[name.split()[0] + (" x1" if threads == 1 else "")] = rate
            figures[name.split()[0] + (" x1" if threads == 1 else "") + " p50"] = percentile(latencies, 0.5)
            print(f"  dynamodb: {name}, {threads} thread{'s' if threads > 1 else ''} of boto3, {span:.0f} s: {rate:,.0f} /s "
                  f"({errors[0]} errors); {summary_ms(latencies)}")
            print(f"    {GroupMeter.line(cpu)}")
    finally:
        try:
            client.delete_table(TableName=table)
        except Exception:  # noqa: BLE001 - cleanup only
            pass
    return figures


def kafka_single(bootstrap: str, prefix: str, count: int) -> dict[str, float]:
    """One 300-byte record at a time, acks=all, idempotent, each awaited (what
    the order path and the execution job do per order)."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(f"{prefix}perf1", 4, 1)], operation_timeout=20).values():
        future.result(timeout=30)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 0})
    topic, value, latencies = f"{prefix}perf1", b"x" * 300, []
    for i in range(count + 5):
        t = time.perf_counter()
        producer.produce(topic, value, key=str(i % 100).encode())
        producer.flush(10)
        if i >= 5:  # the first ones create the topic and fetch metadata
            latencies.append((time.perf_counter() - t) * 1000)
    print(f"  kafka: one record at a time, acks=all, awaited, {count}: {summary_ms(latencies)}")
    for future in admin.delete_topics(
            [topic], operation_timeout=20).values():
        try:
            future.result(timeout=30)
        except Exception:  # noqa: BLE001 - cleanup only
            pass
    return {"single p50": percentile(latencies, 0.5)}


# -- 2. the platform -------------------------------------------------------------

def free_base_port() -> int:
    """P such that P .. P+10 are free (the distributed layout uses P+0..4 and P+10)."""
    for _ in range(200):
        base = random.randrange(20000, 40000)
        try:
            for offset in range(11):
                with socket.socket() as s:
                    s.bind((HOST, base + offset))
            return base
        except OSError:
            continue
    raise RuntimeError("no free block of 11 ports")


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/readyz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


class Ledger:
    """The platform's DynamoDB execution ledger, read beside it."""

    def __init__(self, endpoint: str, prefix: str):
        from mocktrade.adapters.dynamodb import LEDGER_TABLE, PORTFOLIOS_TABLE

        self.client = dynamodb_client(endpoint)
        self.table = prefix + LEDGER_TABLE
        self.tables = [prefix + PORTFOLIOS_TABLE, prefix + LEDGER_TABLE]

    def count(self) -> int:
        total, start = 0, None
        while True:
            kwargs = {"ExclusiveStartKey": start} if start else {}
            page = self.client.scan(TableName=self.table, Select="COUNT", **kwargs)
            total += page["Count"]
            start = page.get("LastEvaluatedKey")
            if not start:
                return total

    def rows(self) -> list[dict]:
        items, start = [], None
        while True:
            kwargs = {"ExclusiveStartKey": start} if start else {}
            page = self.client.scan(TableName=self.table, **kwargs)
            items += page["Items"]
            start = page.get("LastEvaluatedKey")
            if not start:
                return items

    def wait(self, count: int, timeout: float) -> tuple[int, float]:
        """Until the ledger holds `count` entries and stopped growing (1 s
        apart), at most `timeout` s: (entries, seconds waited)."""
        started = time.monotonic()
        seen, last = self.count(), -1
        while (seen < count or seen != last) and time.monotonic() - started < timeout:
            time.sleep(1.0)
            last, seen = seen, self.count()
        return seen, time.monotonic() - started

    def drop(self) -> None:
        for table in self.tables:
            try:
                self.client.delete_table(TableName=table)
            except Exception:  # noqa: BLE001 - cleanup only
                pass


def iso_seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def platform_pids(data_dir: Path) -> dict[str, int]:
    pids = {}
    for path in sorted((data_dir / "logs").glob("*.pid")):
        try:
            pids[path.stem] = int(path.read_text().split()[0])
        except (OSError, ValueError):
            pass
    return pids


def closed_loop(platform: Platform, name: str, requests, ok: str, args, pids) -> dict:
    meter = GroupMeter(pids)
    result = run_loadgen({"port": platform.port, "requests": requests, "connections": args.connections,
                          "mode": "closed", "warmup": 1.0, "duration": args.max_duration})
    cpu = meter.stop()
    rate = completed(result, ok) / result["elapsed"]
    lat = all_latencies(result)
    print(f"  {name:8s} closed loop, {args.connections} connections, {args.max_duration:.0f} s: "
          f"{rate:8,.1f} /s  [{status_line(result)}]")
    print(f"           latency {summary_ms(lat)}")
    print(f"           {GroupMeter.line(cpu)}", flush=True)
    return {"rate": rate, "p50": percentile(lat, 0.5), "p99": percentile(lat, 0.99), "cpu": cpu,
            "accepted": completed(result, "202")}


def fixed_rate(platform: Platform, ledger: Ledger, requests, rate: float, args, pids,
               expected_before: int) -> dict:
    meter = GroupMeter(pids)
    result = run_loadgen({"port": platform.port, "requests": requests, "connections": args.open_connections,
                          "mode": "open", "rate": rate, "warmup": 1.0, "duration": args.duration,
                          "capture": True})
    cpu = meter.stop()
    lat, service, sent = report_open_loop(result, rate, args.duration, args.open_connections)
    print(f"    {GroupMeter.line(cpu)}", flush=True)
    # Every counted 202 must reach the ledger (warm-up 202s come on top).
    target = expected_before + completed(result, "202")
    seen, waited = ledger.wait(target, args.drain_timeout)
    print(f"    ledger {seen} (>= {target} expected) entries, stable {waited:.1f} s after the load",
          flush=True)
    captured = {order_id: answered for order_id, _, answered in result["captured"]}
    accept, answer, statuses = [], [], {}
    for item in ledger.rows():
        order_id = item["orderId"]["S"]
        if order_id not in captured or "orderTimestamp" not in item:
            continue
        status = item["status"]["S"]
        statuses[status] = statuses.get(status, 0) + 1
        done = iso_seconds(item["executionTimestamp"]["S"])
        accept.append((done - iso_seconds(item["orderTimestamp"]["S"])) * 1000)
        answer.append((done - captured[order_id]) * 1000)
    print(f"    accept->executed (ledger orderTimestamp -> executionTimestamp): {summary_ms(accept)}")
    print(f"    202 in client's hand -> executed: {summary_ms(answer)}")
    print(f"    outcomes: {statuses}; {len(captured) - sum(statuses.values())} of the {len(captured)} "
          f"counted 202s not in the ledger when read")
    return {"rate": sent / result["elapsed"], "p50": percentile(lat, 0.5), "p99": percentile(lat, 0.99),
            "service_p50": percentile(service, 0.5), "exec_p50": percentile(accept, 0.5),
            "exec_p99": percentile(accept, 0.99), "missing": len(captured) - sum(statuses.values()),
            "cpu": cpu, "accepted": completed(result, "202")}


async def fanout(port: int, subscribers: int, seconds: float, pids: dict[str, int]) -> dict:
    import fanout as fo

    args = argparse.Namespace(subscribers=subscribers, compression="none", v2_fraction=0.5)
    url = f"ws://{HOST}:{port}/v1/marketdata"
    results, window, stop_at = fo.Results(), fo.Window(), [float("inf")]
    tasks = await fo.connect_all(args, url, list(SYMBOLS), window, stop_at, results)
    print(f"  joined {results.joined}/{subscribers} subscribers on {url} "
          f"({results.join_failures} failed); warming up 2 s", flush=True)
    gc.freeze()
    await asyncio.sleep(2)
    meter = GroupMeter(pids)
    window.start = time.time()
    window.end = window.start + seconds
    await asyncio.sleep(seconds)
    cpu = meter.stop()
    stop_at[0] = window.end + 1.0
    await asyncio.sleep(1.0)
    await asyncio.wait(tasks, timeout=5)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    lat = results.latencies_ms
    received = sum(results.received)
    ticks = sum(len(s) for s in results.seen.values())
    expected = sum(len(results.seen.get(SYMBOLS[i % len(SYMBOLS)], ())) for i in range(subscribers))
    print(f"  feed tick -> subscriber: {summary_ms(lat)}")
    print(f"  {ticks / seconds:,.1f} distinct ticks/s seen, {received / seconds:,.0f} messages/s "
          f"delivered; received {received} of {expected} expected "
          f"({100 * received / max(1, expected):.2f}%); dropped (1013) {results.dropped}, other closes "
          f"{results.closed_otherwise}")
    print(f"  {GroupMeter.line(cpu)}", flush=True)
    return {"p50": percentile(lat, 0.5), "p99": percentile(lat, 0.99), "pushes": received / seconds,
            "ticks": ticks / seconds, "complete": received / max(1, expected), "cpu": cpu}


def run_platform(args, engines: dict[str, str], prefix: str, pids_engines: dict[str, int]) -> dict:
    base = free_base_port()
    env = {**engines, "MOCKTRADE_TABLE_PREFIX": prefix, "MOCKTRADE_PORT": str(base)}
    command = [*mocktrade_command(), "up", "--distributed", "--keep-stack", "--stack-dir",
               str(args.stack_dir), "--port", str(base)]
    figures: dict = {}
    ledger = Ledger(engines["MOCKTRADE_DYNAMODB_ENDPOINT"], prefix)
    with Platform(env=env, command=command, keep=args.keep) as platform:
        platform.port, platform.base = base, f"http://{HOST}:{base}"
        platform.env["MOCKTRADE_PORT"] = str(base)
        try:
            # Accounts first (the server reads the same JWT secret and tables).
            started = time.monotonic()
            platform.cli("accounts", "create", "bench-cli", "--cash", "1000000000")
            cli_token = platform.cli("token", "bench-cli")
            names = [f"bench-{i:05d}" for i in range(args.users - 1)]
            platform.create_users(names, "1000000000")
            people = [("bench-cli", cli_token, SYMBOLS[0])]
            people += [(n, platform.token(n), SYMBOLS[(i + 1) % len(SYMBOLS)]) for i, n in enumerate(names)]
            print(f"{len(people)} accounts in DynamoDB in {time.monotonic() - started:.1f} s; "
                  f"{' '.join(command)} (prefix {prefix}, data dir {platform.data_dir})", flush=True)
            started = time.monotonic()
            platform.start(timeout=180)
            for offset in (1, 4, 10):  # marketdata, persistence, execution
                deadline = time.monotonic() + 120
                while not ready(base + offset) and time.monotonic() < deadline:
                    time.sleep(0.3)
            platform.wait_for_prices(len(SYMBOLS), timeout=60)
            print(f"distributed platform ready in {time.monotonic() - started:.1f} s; {now_line()}", flush=True)
            pids = {**platform_pids(platform.data_dir), **pids_engines}

            # Prime: every user buys 1,000 shares, so its sells are accepted.
            result = run_loadgen({"port": base, "connections": 16, "mode": "closed", "once": True,
                                  "duration": 300, "requests": [
                                      ["prime", order_request(base, t, s, "1000", "BUY")]
                                      for _, t, s in people]})
            if completed(result, "202") != len(people):
                raise RuntimeError(f"priming orders not all accepted: {status_line(result)}")
            seen, waited = ledger.wait(len(people), args.drain_timeout)
            print(f"primed: {len(people)} buys accepted, {seen} executed after {waited:.1f} s", flush=True)

            buys = [["BUY", order_request(base, t, s, "1", "BUY")] for _, t, s in people]
            sells = [["SELL", order_request(base, t, s, "1", "SELL")] for _, t, s in people]
            requests = buys + sells
            print(f"(a) max throughput; {now_line()}", flush=True)
            figures["healthz"] = closed_loop(platform, "healthz",
                                             [["healthz", raw_request("GET", base, "/healthz")]], "200",
                                             args, pids)
            before = ledger.count()
            figures["orders"] = a = closed_loop(platform, "orders", requests, "202", args, pids)
            after = ledger.count()
            # Drain the backlog before the open loop, bounded (warm-up 202s come on top).
            seen, waited = ledger.wait(before + a["accepted"], args.drain_timeout)
            print(f"           ledger +{after - before} during the run ({a['accepted']} counted 202s): "
                  f"{(after - before) / a['cpu']['wall']:.1f} executions/s while accepting; backlog "
                  f"drained (+{seen - after}) in {waited:.1f} s: {(seen - after) / max(waited - 2, 1):.1f} "
                  f"executions/s with no orders arriving", flush=True)
            a["exec_rate_loaded"] = (after - before) / a["cpu"]["wall"]
            a["exec_rate_idle"] = (seen - after) / max(waited - 2, 1)
            rates = [float(r) if r != "half" else max(5.0, round(0.5 * a["rate"]))
                     for r in args.rate.split(",")]
            figures["fixed"] = []
            for rate in rates:
                print(f"(b)+(c) fixed rate {rate:,.1f} orders/s; {now_line()}", flush=True)
                base_count = ledger.count()
                figures["fixed"].append(fixed_rate(platform, ledger, requests, rate, args, pids, base_count))
            print(f"(d) fan-out, {args.subscribers} subscribers, {args.fanout_duration:.0f} s; {now_line()}",
                  flush=True)
            figures["fanout"] = asyncio.run(fanout(base + 1, args.subscribers, args.fanout_duration, pids))
        finally:
            platform.stop()
            if platform.process is not None and platform.process.returncode not in (0, None):
                print(f"platform exited {platform.process.returncode}")
            # Children get SIGTERM from the launcher; make sure none is left.
            time.sleep(1.0)
            for name, pid in platform_pids(platform.data_dir).items():
                try:
                    os.kill(pid, 0)
                except OSError:
                    continue
                print(f"  {name} (pid {pid}) still running; SIGKILL")
                os.kill(pid, signal.SIGKILL)
            if not args.keep:
                ledger.drop()
                drop_topics(engines["MOCKTRADE_KAFKA_BOOTSTRAP"], prefix)
    return figures


def drop_topics(bootstrap: str, prefix: str) -> None:
    """Delete the Kafka topics of this run's (unique) prefix, nothing else."""
    try:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": bootstrap})
        mine = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
        if mine:
            for future in admin.delete_topics(mine, operation_timeout=20).values():
                future.result(timeout=30)
    except Exception as exc:  # noqa: BLE001 - cleanup only
        print(f"  could not delete the topics of {prefix}: {exc}")


def fraction(value: float, ceiling: float | None) -> str:
    return f"{value / ceiling:.3f}" if ceiling else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack-dir", type=Path, default=Path(os.environ.get("MOCKTRADE_STACK_DIR",
                                                                              "/tmp/devstack")))
    parser.add_argument("--duration", type=float, default=12.0, help="open-loop seconds measured")
    parser.add_argument("--max-duration", type=float, default=8.0, help="closed-loop seconds")
    parser.add_argument("--fanout-duration", type=float, default=12.0)
    parser.add_argument("--rate", default="10,20",
                        help="open-loop orders/s, comma-separated; 'half' = half of (a)'s rate")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--connections", type=int, default=32)
    # Few enough that none idles past uvicorn's 5 s keep-alive at 10/s (a
    # connection the server closed costs the load generator that request).
    parser.add_argument("--open-connections", type=int, default=24)
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--kafka-records", type=int, default=100_000)
    parser.add_argument("--redis-requests", type=int, default=50_000)
    parser.add_argument("--dynamodb-seconds", type=float, default=4.0)
    parser.add_argument("--drain-timeout", type=float, default=45.0)
    parser.add_argument("--skip-engines", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep data dir, log and tables")
    args = parser.parse_args()
    if not (args.stack_dir / "stack.env").exists():
        raise SystemExit(f"no running stack in {args.stack_dir} (`mocktrade stack up` first)")
    engines = engines_env(args.stack_dir)
    pids_engines = engine_pids(args.stack_dir)
    prefix = f"bd{uuid.uuid4().hex[:6]}_"
    print(f"distributed benchmark on {machine()}; {now_line()}; engines {engines}; prefix {prefix}",
          flush=True)
    limits: dict = {"kafka": {}, "redis": {}, "dynamodb": {}}
    if not args.skip_engines:
        print(f"1. the engines' own limits; {now_line()}", flush=True)
        limits["kafka"] = kafka_perf(engines["MOCKTRADE_KAFKA_BOOTSTRAP"], prefix, args.kafka_records,
                                     pids_engines)
        try:
            limits["kafka"].update(kafka_single(engines["MOCKTRADE_KAFKA_BOOTSTRAP"], prefix, 200))
        except Exception as exc:  # noqa: BLE001 - a figure, not a failure
            print(f"  kafka single-record latency not measured: {exc}")
        limits["redis"] = redis_benchmark(engines["MOCKTRADE_REDIS_URL"], prefix, args.redis_requests, pids_engines)
        limits["dynamodb"] = dynamodb_ceiling(engines["MOCKTRADE_DYNAMODB_ENDPOINT"], prefix,
                                              args.dynamodb_seconds, 16, pids_engines)
    print(f"2. the platform; {now_line()}", flush=True)
    p = run_platform(args, engines, prefix, pids_engines)

    kafka, redis_, dynamo = limits["kafka"], limits["redis"], limits["dynamodb"]
    verdict = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    a, d = p["orders"], p["fanout"]
    print(f"\nsummary ({now_line()}):")
    print(f"  (a) orders accepted {a['rate']:,.1f}/s (healthz {p['healthz']['rate']:,.0f}/s); as a fraction "
          f"of the engines' own: DynamoDB GetItem x16 {fraction(a['rate'], dynamo.get('GetItem'))}, "
          f"Kafka producer {fraction(a['rate'], kafka.get('rate'))}, Redis GET "
          f"{fraction(a['rate'], redis_.get('GET'))}")
    print(f"      executions are one TransactWriteItems each: DynamoDB TransactWriteItems x16 "
          f"{dynamo.get('TransactWriteItems', float('nan')):,.0f}/s")
    print(f"      execution job (one order at a time): {a['exec_rate_loaded']:.1f}/s while orders "
          f"were accepted, {a['exec_rate_idle']:.1f}/s draining; serial engine round trips per order: "
          f"DynamoDB TransactWriteItems x1 p50 {dynamo.get('TransactWriteItems x1 p50', float('nan')):.1f} ms, "
          f"Kafka awaited publish p50 {kafka.get('single p50', float('nan')):.1f} ms")
    for b in p["fixed"]:
        print(f"  (b) at {b['rate']:,.1f}/s: p50 {b['p50']:.1f} ms, p99 {b['p99']:.1f} ms; goal order "
              f"validation p99 < {GOAL_VALIDATION_P99_MS:.0f} ms: {verdict(b['p99'] < GOAL_VALIDATION_P99_MS)}")
        print(f"  (c) at {b['rate']:,.1f}/s accept->executed p50 {b['exec_p50']:.1f} ms, p99 "
              f"{b['exec_p99']:.1f} ms; goal p99 < {GOAL_EXECUTED_P99_MS:.0f} ms: "
              f"{verdict(b['exec_p99'] < GOAL_EXECUTED_P99_MS and not b['missing'])}"
              f" ({b['missing']} not executed when read)")
    print(f"  (d) fan-out {args.subscribers} subscribers: p50 {d['p50']:.1f} ms, p99 {d['p99']:.1f} ms, "
          f"{d['pushes']:,.0f} messages/s ({fraction(d['pushes'], redis_.get('PUBLISH'))} of Redis PUBLISH/s, "
          f"{d['complete'] * 100:.1f}% delivered); goal median < {GOAL_BROADCAST_P50_MS:.0f} ms: "
          f"{verdict(d['p50'] < GOAL_BROADCAST_P50_MS)}")


if __name__ == "__main__":
    main()
