"""The independent checker: judges a chaos run from the client's History, the
public HTTP API and the engines' own data (Kafka topics read with
confluent-kafka, DynamoDB tables with boto3, the search index over plain
HTTP, analytics through GET /v1/analytics/volume, the only path to the chDB
its owner holds). It imports nothing of the platform: only the names and
shapes MISSION.md and the README publish.

Money rule it re-derives from the README: a trade moves quantity x price of
cash, rounded to cents half-even; a resting buy reserves quantity x its limit
(STOP: its stop) price the same way.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal

import boto3
import httpx
from confluent_kafka import Consumer, TopicPartition

from .workload import History, Intent, signature

FINAL = {"EXECUTED", "FAILED", "CANCELED", "EXPIRED"}
CENT = Decimal("0.01")


def value_of(quantity: Decimal, price: Decimal) -> Decimal:
    return (quantity * price).quantize(CENT, rounding=ROUND_HALF_EVEN)


@dataclass
class Observed:
    """One snapshot of everything the checker reads."""

    executed: list[dict]  # trade_executed envelopes, in (partition, offset) order
    updates: list[dict]  # order_updates envelopes
    orders: dict[str, dict]  # orderId -> GET /v1/orders/{id} shape, from the paged listing
    portfolios: dict[str, dict]  # userId -> GET /v1/portfolio/{userId}
    stored_portfolios: dict[str, dict]  # userId -> DynamoDB item of trading_portfolios
    stored_orders: dict[str, dict]  # orderId -> DynamoDB item of trading_orders (record decoded)
    history_docs: list[dict]  # the search index's documents of these users
    history_totals: dict[str, int]  # userId -> GET /v1/trades/search totalCount
    volume: dict[str, Decimal]  # symbol -> GET /v1/analytics/volume?timeWindow=24h


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: str) -> None:
        if len(self.problems) < 200:
            self.problems.append(problem)


class Checker:
    def __init__(self, base: str, tokens: dict[str, str], engine_env: dict[str, str],
                 initial_cash: Decimal):
        self.base = base
        self.tokens = tokens  # every user whose orders are judged (the probe's too)
        self.env = engine_env
        self.prefix = engine_env.get("MOCKTRADE_TABLE_PREFIX", "")
        self.initial_cash = initial_cash

    # ---- reading -----------------------------------------------------------

    def observe(self) -> Observed:
        with httpx.Client(base_url=self.base, timeout=30) as http:
            orders, portfolios, totals = {}, {}, {}
            for user, token in self.tokens.items():
                headers = {"Authorization": f"Bearer {token}"}
                orders.update(self._all_orders(http, headers))
                portfolios[user] = _ok(http.get(f"/v1/portfolio/{user}", headers=headers))
                totals[user] = _ok(http.get("/v1/trades/search", params={"limit": 1},
                                            headers=headers))["totalCount"]
            any_token = next(iter(self.tokens.values()))
            answer = _ok(http.get("/v1/analytics/volume", params={"timeWindow": "24h"},
                                  headers={"Authorization": f"Bearer {any_token}"}))
            volume = {row["symbol"]: Decimal(row["volume"]) for row in answer["symbols"]}
        return Observed(
            executed=self._topic("trade_executed"), updates=self._topic("order_updates"),
            orders=orders, portfolios=portfolios, stored_portfolios=self._dynamodb("trading_portfolios", "userId"),
            stored_orders=self._dynamodb("trading_orders", "orderId"), history_docs=self._search(),
            history_totals=totals, volume=volume)

    @staticmethod
    def _all_orders(http: httpx.Client, headers: dict) -> dict[str, dict]:
        found, token = {}, None
        while True:
            params = {"status": "all", "limit": 200, **({"pageToken": token} if token else {})}
            page = _ok(http.get("/v1/orders", params=params, headers=headers))
            found.update((order["orderId"], order) for order in page["orders"])
            token = page.get("nextPageToken")
            if not token:
                return found

    def _topic(self, name: str) -> list[dict]:
        """Every record of a topic, from the start to the end it has now."""
        topic = self.prefix + name
        consumer = Consumer({"bootstrap.servers": self.env["MOCKTRADE_KAFKA_BOOTSTRAP"],
                             "group.id": f"chaos-checker-{time.monotonic_ns()}",
                             "enable.auto.commit": False, "enable.partition.eof": True})
        try:
            partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
            ends = {}
            for p in partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
                if high > low:
                    ends[p] = high
            consumer.assign([TopicPartition(topic, p, 0) for p in ends] or [])
            records: dict[int, list[dict]] = defaultdict(list)
            done = set()
            deadline = time.monotonic() + 120
            while len(done) < len(ends) and time.monotonic() < deadline:
                message = consumer.poll(1.0)
                if message is None:
                    continue
                if message.error():
                    if message.error().code() == -191:  # _PARTITION_EOF
                        done.add(message.partition())
                    continue
                if message.offset() < ends[message.partition()]:
                    envelope = json.loads(message.value())
                    envelope["_position"] = (message.partition(), message.offset())
                    envelope["_key"] = message.key().decode() if message.key() else None
                    records[message.partition()].append(envelope)
                if message.offset() + 1 >= ends[message.partition()]:
                    done.add(message.partition())
            if len(done) < len(ends):
                raise AssertionError(f"could not read {topic} to its end")
            return [r for p in sorted(records) for r in records[p]]
        finally:
            consumer.close()

    def _dynamodb(self, table: str, key: str) -> dict[str, dict]:
        client = boto3.client("dynamodb", endpoint_url=self.env["MOCKTRADE_DYNAMODB_ENDPOINT"],
                              region_name=self.env.get("MOCKTRADE_DYNAMODB_REGION", "us-east-1"),
                              aws_access_key_id="chaos", aws_secret_access_key="chaos")
        items, start = {}, None
        while True:
            page = client.scan(TableName=self.prefix + table, **({"ExclusiveStartKey": start} if start else {}))
            for item in page["Items"]:
                plain = _plain(item)
                if plain.get("userId") in self.tokens:
                    if "record" in plain:
                        plain["record"] = json.loads(plain["record"])
                    items[plain[key]] = plain
            start = page.get("LastEvaluatedKey")
            if not start:
                return items

    def _search(self) -> list[dict]:
        url = f"{self.env['MOCKTRADE_ELASTICSEARCH_URL']}/{self.prefix}trading_trades/_search"
        query = {"query": {"terms": {"userId": list(self.tokens)}}, "size": 10000,
                 "seq_no_primary_term": False}
        httpx.post(f"{self.env['MOCKTRADE_ELASTICSEARCH_URL']}/{self.prefix}trading_trades/_refresh", timeout=30)
        answer = httpx.post(url, json=query, timeout=30)
        if answer.status_code == 404:
            return []
        return [{**hit["_source"], "_id": hit["_id"], "_index": hit["_index"]}
                for hit in _ok(answer)["hits"]["hits"]]

    # ---- judging -----------------------------------------------------------

    def liveness(self, history: History, seen: Observed, open_allowed: bool = True) -> list[str]:
        """What still has to settle: acknowledged orders not decided (or, once
        everything was canceled, still open), outcomes not yet in history."""
        pending = []
        unsettled = ("ACCEPTED", "PENDING_CANCEL") if open_allowed else ("ACCEPTED", "PENDING_CANCEL", "OPEN")
        for intent in history.acknowledged():
            order = seen.orders.get(intent.order_id)
            if order is None or order["status"] in unsettled:
                pending.append(f"{intent.order_id} is {order and order['status']}")
        outcomes = _outcomes(seen.executed)
        if len({d["orderId"] for d in seen.history_docs}) < len(outcomes):
            pending.append("history behind the outcomes")
        return pending

    def check(self, history: History, seen: Observed) -> Verdict:
        verdict = Verdict()
        outcomes = self._exactly_one_outcome(history, seen, verdict)
        self._nothing_unsent(history, seen, verdict)
        self._portfolios(seen, outcomes, verdict)
        self._history_and_analytics(seen, outcomes, verdict)
        self._resting(history, seen, verdict)
        verdict.counts |= {"orders in the system": len(seen.orders), "outcomes": len(outcomes),
                           "trade_executed records": len(seen.executed),
                           "history documents": len(seen.history_docs)}
        return verdict

    def _exactly_one_outcome(self, history: History, seen: Observed, verdict: Verdict) -> dict[str, dict]:
        """orderId -> its one outcome (the trade_executed payload)."""
        by_order: dict[str, list[dict]] = defaultdict(list)
        for envelope in seen.executed:
            by_order[envelope["payload"]["orderId"]].append(envelope)
        outcomes = {}
        for order_id, envelopes in by_order.items():
            # A replay re-emits the identical event (same eventId and payload):
            # harmless. Two different outcomes for one order are not.
            distinct = {json.dumps(e["payload"], sort_keys=True) for e in envelopes}
            event_ids = {e["eventId"] for e in envelopes}
            if len(distinct) > 1 or len(event_ids) > 1:
                verdict.add(f"order {order_id} has {len(distinct)} different outcomes: {sorted(distinct)}")
            outcomes[order_id] = envelopes[0]["payload"]
        for intent in history.acknowledged():
            order = seen.orders.get(intent.order_id)
            outcome = outcomes.get(intent.order_id)
            if order is None:
                verdict.add(f"acknowledged order {intent.order_id} ({intent.body}) is unknown to GET /v1/orders")
                continue
            if order["status"] in FINAL:
                if outcome is None:
                    verdict.add(f"order {intent.order_id} is {order['status']} but has no trade_executed event")
                elif outcome["status"] != order["outcome"] or outcome.get("executionPrice") != order["executionPrice"]:
                    verdict.add(f"order {intent.order_id}: API says {order['outcome']} at {order['executionPrice']}, "
                                f"trade_executed says {outcome['status']} at {outcome.get('executionPrice')}")
            elif order["status"] == "OPEN" and order["type"] != "MARKET":
                if outcome is not None:
                    verdict.add(f"order {intent.order_id} is OPEN but has an outcome {outcome['status']}")
            else:
                verdict.add(f"acknowledged order {intent.order_id} never decided: {order['status']}")
            stored = seen.stored_orders.get(intent.order_id)
            if stored is None or stored["record"]["status"] != order["status"]:
                verdict.add(f"order {intent.order_id}: DynamoDB holds "
                            f"{stored and stored['record']['status']}, the API {order['status']}")
        for order_id, outcome in outcomes.items():
            if order_id not in seen.orders:
                verdict.add(f"outcome for an order the API does not know: {outcome}")
        return outcomes

    def _nothing_unsent(self, history: History, seen: Observed, verdict: Verdict) -> None:
        """Each body is unique, so each order found maps to the one request that could make it."""
        by_signature: dict[tuple, Intent] = {i.signature: i for i in history.intents}
        claimed: dict[str, str] = {}  # intent key -> orderId
        for order_id in set(seen.orders) | set(seen.stored_orders):
            order = seen.orders.get(order_id) or seen.stored_orders[order_id]["record"]["order"]
            intent = by_signature.get(signature(order["userId"], order["symbol"], order["side"],
                                                order["quantity"], order.get("type") or "MARKET"))
            if intent is None:
                verdict.add(f"order {order_id} ({order['side']} {order['quantity']} {order['symbol']}) "
                            "matches no request the clients sent")
            elif intent.acknowledged and intent.order_id != order_id:
                verdict.add(f"request {intent.key} made two orders: {intent.order_id} and {order_id}")
            elif intent.status is not None and not intent.acknowledged:
                verdict.add(f"request {intent.key} was declined ({intent.status}) yet order {order_id} exists")
            elif intent.key in claimed and claimed[intent.key] != order_id:
                verdict.add(f"request {intent.key} made two orders: {claimed[intent.key]} and {order_id}")
            else:
                claimed[intent.key] = order_id

    def _portfolios(self, seen: Observed, outcomes: dict[str, dict], verdict: Verdict) -> None:
        """Replay every outcome in the owner's log order (one user = one
        partition) from the initial cash: never negative, and the end state
        equals the API's and DynamoDB's portfolio."""
        cash = {user: self.initial_cash for user in self.tokens}
        holdings: dict[str, Counter] = {user: Counter() for user in self.tokens}
        replayed = set()
        for envelope in seen.executed:
            trade = envelope["payload"]
            if trade["orderId"] in replayed or trade["status"] != "EXECUTED":
                continue
            replayed.add(trade["orderId"])
            user, quantity = trade["userId"], Decimal(trade["quantity"])
            amount = value_of(quantity, Decimal(trade["executionPrice"]))
            sign = 1 if trade["side"] == "BUY" else -1
            cash[user] -= sign * amount
            holdings[user][trade["symbol"]] += sign * quantity
            if cash[user] < 0 or holdings[user][trade["symbol"]] < 0:
                verdict.add(f"{user} negative after {trade['orderId']}: cash {cash[user]}, "
                            f"{trade['symbol']} {holdings[user][trade['symbol']]}")
        for user in self.tokens:
            expected = {s: q for s, q in holdings[user].items() if q != 0}
            api = seen.portfolios[user]
            api_holdings = {s: Decimal(q) for s, q in api["holdings"].items() if Decimal(q) != 0}
            if Decimal(api["cashBalance"]) != cash[user] or api_holdings != expected:
                verdict.add(f"{user}: API portfolio cash {api['cashBalance']} holdings {api_holdings}, "
                            f"replay of outcomes cash {cash[user]} holdings {expected}")
            stored = seen.stored_portfolios.get(user, {})
            stored_holdings = {s: q for s, q in stored.get("holdings", {}).items() if q != 0}
            if stored.get("cashBalance") != cash[user] or stored_holdings != expected:
                verdict.add(f"{user}: DynamoDB cash {stored.get('cashBalance')} holdings {stored_holdings}, "
                            f"replay cash {cash[user]} holdings {expected}")
            reserved = sum((Decimal(o["reservedCash"]) for o in seen.orders.values()
                            if o["userId"] == user and o["status"] in ("OPEN", "PENDING_CANCEL")), Decimal(0))
            if Decimal(api["reservedCash"]) != reserved:
                verdict.add(f"{user}: reservedCash {api['reservedCash']} but open orders reserve {reserved}")
        for order in seen.orders.values():
            if order["status"] == "OPEN" and order["side"] == "BUY":
                bound = Decimal(order["limitPrice"] or order["stopPrice"])
                if Decimal(order["reservedCash"]) != value_of(Decimal(order["quantity"]), bound):
                    verdict.add(f"open order {order['orderId']} reserves {order['reservedCash']}, "
                                f"not quantity x {bound}")

    def _history_and_analytics(self, seen: Observed, outcomes: dict[str, dict], verdict: Verdict) -> None:
        docs = Counter(d["orderId"] for d in seen.history_docs)
        for order_id, count in docs.items():
            if count > 1:
                verdict.add(f"history holds order {order_id} {count} times")
        for doc in seen.history_docs:
            outcome = outcomes.get(doc["orderId"])
            if outcome is None:
                verdict.add(f"history document for an order without outcome: {doc['orderId']}")
            elif (doc["status"], doc.get("executionPrice")) != (outcome["status"], outcome.get("executionPrice")):
                verdict.add(f"history says {doc['status']} at {doc.get('executionPrice')} for {doc['orderId']}, "
                            f"the outcome {outcome['status']} at {outcome.get('executionPrice')}")
        for order_id in outcomes:
            if order_id not in docs:
                verdict.add(f"outcome of {order_id} missing from history")
        per_user = Counter(o["userId"] for o in outcomes.values())
        for user, total in seen.history_totals.items():
            if total != per_user[user]:
                verdict.add(f"{user}: GET /v1/trades/search totalCount {total}, outcomes {per_user[user]}")
        volume: dict[str, Decimal] = defaultdict(Decimal)
        for outcome in outcomes.values():
            if outcome["status"] == "EXECUTED":
                volume[outcome["symbol"]] += Decimal(outcome["quantity"])
        if dict(volume) != seen.volume:
            verdict.add(f"analytics volume {seen.volume} != executed outcomes {dict(volume)}")

    def _resting(self, history: History, seen: Observed, verdict: Verdict) -> None:
        """A resting order is still open or has exactly one final status, and
        no transition follows a final one; a cancel the API accepted is applied."""
        fills: Counter = Counter()
        finals: dict[str, set] = defaultdict(set)
        for envelope in seen.updates:
            update = envelope["payload"]
            if update.get("userId") not in self.tokens:
                continue
            if update["status"] in FINAL:
                finals[update["orderId"]].add((update["status"], update.get("seq")))
                if update["status"] == "EXECUTED":
                    fills[(update["orderId"], update.get("seq"))] += 1
        for order_id, statuses in finals.items():
            if len({status for status, _ in statuses}) > 1:
                verdict.add(f"order {order_id} reached several final statuses in order_updates: {sorted(statuses)}")
            if len(statuses) > 1:
                verdict.add(f"order {order_id} was finalised more than once: {sorted(statuses)}")
        for order in seen.orders.values():
            transitions = [t["status"] for t in seen_transitions(order, seen)]
            finals_at = [i for i, s in enumerate(transitions) if s in FINAL]
            if len(finals_at) > 1 or (finals_at and finals_at[0] != len(transitions) - 1):
                verdict.add(f"order {order['orderId']} transitions after a final one: {transitions}")
            if order["status"] in FINAL and order["orderId"] not in finals:
                verdict.add(f"order {order['orderId']} is {order['status']} but order_updates never said so")
        for cancel in history.cancels:
            order = seen.orders.get(cancel.order_id)
            if cancel.status == 202 and order and order["status"] not in ("CANCELED", "EXECUTED", "EXPIRED", "FAILED"):
                verdict.add(f"cancel of {cancel.order_id} accepted but the order is {order['status']}")


def seen_transitions(order: dict, seen: Observed) -> list[dict]:
    stored = seen.stored_orders.get(order["orderId"])
    if stored is None:
        return []
    return [{"status": status} for status, _at, _seq in stored["record"]["transitions"]]


def _outcomes(executed: list[dict]) -> dict[str, dict]:
    return {e["payload"]["orderId"]: e["payload"] for e in executed}


def _ok(response: httpx.Response) -> dict:
    if response.status_code != 200:
        raise AssertionError(f"{response.request.method} {response.request.url} answered "
                             f"{response.status_code}: {response.text[:300]}")
    return response.json()


def _plain(item: dict):
    """A DynamoDB item in plain Python (numbers as exact Decimals)."""
    def one(value: dict):
        (kind, inner), = value.items()
        if kind == "N":
            return Decimal(inner)
        if kind == "M":
            return {k: one(v) for k, v in inner.items()}
        if kind == "L":
            return [one(v) for v in inner]
        return inner
    return {k: one(v) for k, v in item.items()}
