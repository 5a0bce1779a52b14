"""ports.TradeHistory on Elasticsearch (7.10+ / 8.x) or OpenSearch, over plain HTTP.

Why not a client library: the official `elasticsearch` client (8.x/9.x)
refuses servers that are not Elastic's, and `opensearch-py` is the mirror
image. Everything used here is REST API common to both families, sent with
httpx: `_index_template` (composable templates), index creation, aliases,
`_bulk`, and `_search` with `search_after` and `track_total_hits`. No
compatibility headers or product-specific parameters are sent. Developed and
tested against OpenSearch 2.19.1 (the only such engine the registries here
offer, see infra/README.md); written to the Elasticsearch 7.10 API, which
Elasticsearch 8.x still serves unchanged for these calls.

Layout (the reference's names, behind an optional prefix):

- an index template `{prefix}trading_trades` for `{prefix}trading_trades-*`
  holds the mapping and the alias, so every monthly index gets both;
- monthly indices `{prefix}trading_trades-YYYY-MM`, by the UTC month of
  executionTimestamp, created on demand (explicitly, so a cluster with
  `action.auto_create_index` off works too);
- searches read the alias `{prefix}trading_trades`.

Mapping choices:

- `executionTimestamp` is `date_nanos`, not `date`: `date` keeps
  milliseconds, and trades a few microseconds apart would then tie on the
  sort key and come back in orderId order instead of time order (the
  contract data has trades 7 us apart). date_nanos stores nanoseconds since
  the epoch in a long, so it sorts and range-filters exactly at our
  microsecond precision, and it is still a date to Kibana / Dashboards.
  Its range is 1970-2262, which trades never leave. Times are sent as ISO
  strings with six fraction digits and a Z, so no bound is ever read as
  epoch_millis.
- `quantity` and `executionPrice` are `scaled_float` (factors 10^6 and 10^4,
  the domain's scales), so they can be aggregated and range-filtered with
  exact integer doc values. The document carries them as decimal strings,
  and `_source` keeps the JSON as sent: what a search returns is the exact
  string, parsed straight into Decimal; no binary float is ever on the path.
- ids, symbol, side and status are `keyword`; `failureReason` is `text`.
- `dynamic: false`: a field added by a later schema version is kept in
  `_source` but not mapped, so old monthly indices never reject new documents.
- Index sorting (userId asc, executionTimestamp desc, orderId desc, unless
  `index_sort=False`): every search is one user's trades, and with the
  segments sorted that way a user's trades sit together on disk, so fetching
  a page decompresses a few stored-field blocks instead of one per trade. On
  200,000 trades it halved the engine time of a page (`took` 5.2 -> 2.5 ms);
  it costs some indexing speed (bench/search.py prints both).

Identity: the document `_id` is the orderId, and a trade always goes to the
index of its own executionTimestamp's month, so indexing a replayed trade
overwrites the same document with identical content.

Pages: sort (executionTimestamp desc, orderId desc), `size` = limit + 1 (the
extra hit only says whether a token is due), and `search_after` from the page
token. The token is the embedded adapter's (url-safe base64 of
[epoch microseconds, orderId]), so it is a keyset cursor: later pages cost the
same however deep they are, and trades indexed meanwhile never shift them.
`track_total_hits: true` makes totalCount exact; the cursor does not narrow it.

Read-your-writes: `refresh="wait_for"` (the default) makes index() return
only once its documents are searchable, which the contract suite expects.
It waits for the next scheduled refresh (`refresh_interval`, 1 s by default),
so one call takes up to a second but concurrent calls share that refresh;
`refresh=True` forces one at once (small segments; for tests), `False` returns
as soon as the documents are durable (translog) and they become searchable
within the refresh interval. Measured (bench/search.py, index() of 20 trades,
OpenSearch on a busy 2-core box): False p50 ~12-16 ms, True ~20-110 ms and
~8x the engine CPU, "wait_for" ~1,010 ms. The persistence job does not need
read-your-writes (its offsets are committed once the bulk is durable, and
trades become searchable within the refresh interval either way), so it can
pass refresh=False and never wait on a refresh.

Errors: a connection failure, timeout, 429 or 5xx becomes
ports.DependencyUnavailable("elasticsearch", ...); any other refusal is a bug
here and raises ElasticsearchError.
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Literal, Sequence

import httpx
import orjson

from ..domain.model import Execution, ExecutionStatus, Side
from ..domain.money import fmt
from ..ports import DependencyUnavailable, TradePage, TradeQuery
from .page_tokens import decode_page_token, encode_page_token

DEPENDENCY = "elasticsearch"
BASE_NAME = "trading_trades"
# The largest page a search may ask for (from + size must stay within the
# default index.max_result_window of 10,000; we ask for limit + 1).
MAX_LIMIT = 9_999

_VALID_PREFIX = re.compile(r"^([a-z0-9][a-z0-9_.-]*)?$")

MAPPING: dict[str, Any] = {
    "dynamic": False,
    "properties": {
        "orderId": {"type": "keyword"},
        "userId": {"type": "keyword"},
        "symbol": {"type": "keyword"},
        "side": {"type": "keyword"},
        "status": {"type": "keyword"},
        "quantity": {"type": "scaled_float", "scaling_factor": 1_000_000},
        "executionPrice": {"type": "scaled_float", "scaling_factor": 10_000},
        "executionTimestamp": {"type": "date_nanos"},
        "orderTimestamp": {"type": "date_nanos"},
        "failureReason": {"type": "text"},
    },
}

SORT = [{"executionTimestamp": {"order": "desc"}}, {"orderId": {"order": "desc"}}]
INDEX_SORT = {"sort.field": ["userId", "executionTimestamp", "orderId"],
              "sort.order": ["asc", "desc", "desc"]}


class ElasticsearchError(RuntimeError):
    """The engine refused a request for a reason other than being unavailable."""


def iso_micros(moment: datetime) -> str:
    """UTC, six fraction digits, Z: exact for date_nanos, never read as epoch_millis."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(timezone.utc)


def document(e: Execution) -> dict[str, Any]:
    """The trade as stored: the trade_executed payload's names, decimals as strings."""
    return {
        "orderId": e.order_id,
        "userId": e.user_id,
        "symbol": e.symbol,
        "quantity": fmt(e.quantity),
        "side": e.side.value,
        "status": e.status.value,
        "executionPrice": fmt(e.execution_price) if e.execution_price is not None else None,
        "executionTimestamp": iso_micros(e.execution_timestamp),
        "failureReason": e.failure_reason,
        "orderTimestamp": iso_micros(e.order_timestamp) if e.order_timestamp else None,
    }


def execution(source: dict[str, Any]) -> Execution:
    price, ordered = source.get("executionPrice"), source.get("orderTimestamp")
    return Execution(
        source["orderId"], source["userId"], source["symbol"], Decimal(source["quantity"]),
        Side(source["side"]), ExecutionStatus(source["status"]),
        Decimal(price) if price is not None else None,
        _parse_time(source["executionTimestamp"]), source.get("failureReason"),
        _parse_time(ordered) if ordered else None)


def search_body(query: TradeQuery, cursor: tuple[int, str] | None) -> dict[str, Any]:
    filters: list[dict[str, Any]] = [{"term": {"userId": query.user_id}}]
    for field, value in (("symbol", query.symbol),
                         ("status", query.status.value if query.status else None),
                         ("side", query.side.value if query.side else None)):
        if value is not None:
            filters.append({"term": {field: value}})
    bounds = {}
    if query.start is not None:
        bounds["gte"] = iso_micros(query.start)
    if query.end is not None:
        bounds["lt"] = iso_micros(query.end)
    if bounds:
        filters.append({"range": {"executionTimestamp": bounds}})
    body: dict[str, Any] = {
        "query": {"bool": {"filter": filters}},
        "sort": SORT,
        "size": query.limit + 1,
        "track_total_hits": True,
    }
    if cursor is not None:
        executed_at_us, order_id = cursor
        body["search_after"] = [executed_at_us * 1_000, order_id]  # date_nanos sorts in ns
    return body


class ElasticsearchTradeHistory:
    """ports.TradeHistory on an Elasticsearch-API engine; see the module docstring.

    url: the engine's base URL (user:password@ in it is sent as basic auth).
    index_prefix: put before every index, alias and template name, so several
        deployments or test runs share one cluster (lowercase, as index names).
    refresh: "wait_for" (read-your-writes), True (force a refresh), False.
    shards, replicas: of each monthly index; None leaves the cluster default.
        replicas is 0 by default, so a one-node cluster is green (a replica
        has nowhere to go there); a real cluster sets it (Settings'
        MOCKTRADE_ELASTICSEARCH_REPLICAS), and existing indices follow.
    index_sort: sort each index's segments by user, then newest first (the
        setting applies to indices created after the template was written).
    """

    def __init__(self, url: str, *, index_prefix: str = "",
                 refresh: Literal["wait_for"] | bool = "wait_for",
                 shards: int | None = 1, replicas: int | None = 0, index_sort: bool = True,
                 timeout: float = 30.0, client: httpx.AsyncClient | None = None):
        if not _VALID_PREFIX.match(index_prefix):
            raise ValueError(f"index_prefix {index_prefix!r} is not usable in index names "
                             "(lowercase letters, digits, '_', '.', '-'; not first '_', '.', '-')")
        self.alias = f"{index_prefix}{BASE_NAME}"
        self.template = f"{index_prefix}{BASE_NAME}"
        self.index_pattern = f"{index_prefix}{BASE_NAME}-*"
        self._refresh = {True: "true", False: "false"}.get(refresh, refresh)  # type: ignore[call-overload]
        if self._refresh not in ("wait_for", "true", "false"):
            raise ValueError("refresh must be 'wait_for', True or False")
        self._settings: dict[str, Any] = {}
        if shards is not None:
            self._settings["number_of_shards"] = shards
        if replicas is not None:
            self._settings["number_of_replicas"] = replicas
        if index_sort:
            self._settings.update(INDEX_SORT)
        self._http = client or httpx.AsyncClient(base_url=url.rstrip("/"), timeout=timeout)
        self._template_ready = False
        self._known_indices: set[str] = set()
        self._setup_lock = asyncio.Lock()

    # -- HTTP ------------------------------------------------------------------

    async def _request(self, method: str, path: str, *, body: Any = None,
                       content: bytes | None = None, content_type: str = "application/json",
                       params: dict[str, str] | None = None,
                       accept: tuple[int, ...] = ()) -> dict[str, Any]:
        if body is not None:
            content = orjson.dumps(body)
        headers = {"content-type": content_type} if content is not None else None
        try:
            response = await self._http.request(method, path, content=content, params=params,
                                                 headers=headers)
        except httpx.TransportError as exc:
            raise DependencyUnavailable(DEPENDENCY, f"{type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if status < 300 or status in accept:
            return orjson.loads(response.content) if response.content else {}
        detail = f"{method} {path} -> {status}: {response.text[:500]}"
        if status == 429 or status >= 500:
            raise DependencyUnavailable(DEPENDENCY, detail)
        raise ElasticsearchError(detail)

    # -- layout ----------------------------------------------------------------

    def index_for(self, moment: datetime) -> str:
        utc = moment.astimezone(timezone.utc)
        return f"{self.alias}-{utc.year:04d}-{utc.month:02d}"

    async def ensure_template(self) -> None:
        """Create or update the index template (idempotent; once per adapter)."""
        if self._template_ready:
            return
        async with self._setup_lock:
            if self._template_ready:
                return
            template: dict[str, Any] = {"mappings": MAPPING, "aliases": {self.alias: {}}}
            if self._settings:
                template["settings"] = {"index": self._settings}
            await self._request("PUT", f"/_index_template/{self.template}", body={
                "index_patterns": [self.index_pattern],
                "priority": 200,
                "template": template,
                "_meta": {"managed_by": "mocktrade"},
            })
            if "number_of_replicas" in self._settings:
                # A dynamic setting: indices made under an older template follow too.
                await self._request(
                    "PUT", f"/{self.index_pattern}/_settings",
                    body={"index": {"number_of_replicas": self._settings["number_of_replicas"]}},
                    params={"allow_no_indices": "true", "ignore_unavailable": "true"}, accept=(404,))
            self._template_ready = True

    async def _ensure_indices(self, names: set[str]) -> None:
        missing = names - self._known_indices
        if not missing:
            return
        await self.ensure_template()
        for name in sorted(missing):
            # The template supplies mapping, settings and alias. Another
            # writer may have created it first: that is success too.
            answer = await self._request("PUT", f"/{name}", accept=(400,))
            error = answer.get("error")
            if error and (not isinstance(error, dict)
                          or error.get("type") != "resource_already_exists_exception"):
                raise ElasticsearchError(f"creating index {name}: {error}")
            self._known_indices.add(name)

    # -- the port --------------------------------------------------------------

    async def index(self, executions: Sequence[Execution]) -> None:
        """One `_bulk` request per call; `_id` = orderId, so re-indexing is harmless."""
        if not executions:
            return
        lines: list[bytes] = []
        targets: set[str] = set()
        for e in executions:
            name = self.index_for(e.execution_timestamp)
            targets.add(name)
            lines.append(orjson.dumps({"index": {"_index": name, "_id": e.order_id}}))
            lines.append(orjson.dumps(document(e)))
        await self._ensure_indices(targets)
        answer = await self._request("POST", "/_bulk", content=b"\n".join(lines) + b"\n",
                                     content_type="application/x-ndjson",
                                     params={"refresh": self._refresh})
        if answer.get("errors"):
            self._raise_item_errors(answer.get("items", []))

    @staticmethod
    def _raise_item_errors(items: list[dict[str, Any]]) -> None:
        failed = [result for item in items for result in item.values() if result.get("error")]
        if not failed:
            return
        first = failed[0]
        detail = f"{len(failed)} of {len(items)} documents refused; first: {first['error']}"
        if any(result.get("status", 0) == 429 or result.get("status", 0) >= 500
               for result in failed):
            raise DependencyUnavailable(DEPENDENCY, detail)
        raise ElasticsearchError(detail)

    async def _search(self, body: dict[str, Any]) -> dict[str, Any]:
        # A monthly index the persistence job has just created answers "all
        # shards failed" until its primary shard starts; that lasts a moment,
        # so retry briefly before calling the engine unavailable.
        delay = 0.05
        for attempt in range(6):
            try:
                # ignore_unavailable: before the first trade no index (so no alias) exists.
                return await self._request(
                    "POST", f"/{self.alias}/_search", body=body,
                    params={"ignore_unavailable": "true", "allow_no_indices": "true"})
            except DependencyUnavailable as exc:
                if attempt == 5 or "search_phase_execution_exception" not in str(exc):
                    raise
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    async def search(self, query: TradeQuery) -> TradePage:
        if query.limit < 1:
            raise ValueError("limit must be at least 1")
        if query.limit > MAX_LIMIT:
            raise ValueError(f"limit must be at most {MAX_LIMIT}")
        cursor = decode_page_token(query.page_token) if query.page_token else None
        answer = await self._search(search_body(query, cursor))
        hits = answer["hits"]["hits"]
        more = len(hits) > query.limit
        trades = [execution(hit["_source"]) for hit in hits[:query.limit]]
        token = None
        if more:
            executed_at_ns, order_id = hits[query.limit - 1]["sort"]
            token = encode_page_token(executed_at_ns // 1_000, order_id)
        return TradePage(trades, int(answer["hits"]["total"]["value"]), token)

    async def close(self) -> None:
        await self._http.aclose()
