"""Is each configured engine reachable? Used at start (wait and say which one
is missing) and by /readyz. Probes speak each engine's own protocol, so they
work whatever adapter sits on top."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path
from urllib.parse import urlparse

from .config import Settings
from .stack import probes

log = logging.getLogger("mocktrade.readiness")


def configured_engines(settings: Settings, roles: set[str]) -> dict[str, str]:
    """engine name -> address, for the engines the given roles use."""
    wanted = {
        "kafka": ("log", settings.kafka_bootstrap),
        "redis": ("prices", settings.redis_url),
        "dynamodb": ("portfolios", settings.dynamodb_endpoint),
        "elasticsearch": ("history", settings.elasticsearch_url),
    }
    return {name: address for name, (role, address) in wanted.items()
            if address and role in roles and address != "aws"}


def _probe(name: str, address: str, region: str = probes.DEFAULT_DYNAMODB_REGION) -> None:
    if name == "kafka":
        host, _, port = address.split(",")[0].rpartition(":")
        probes.kafka_metadata(host or "127.0.0.1", int(port), timeout=2.0)
    elif name == "redis":
        url = urlparse(address)
        probes.redis_ping(url.hostname or "127.0.0.1", url.port or 6379, timeout=2.0)
    elif name == "dynamodb":
        probes.dynamodb_list_tables(address, region)
    elif name == "elasticsearch":
        status = probes.search_cluster_health(address)
        if status == "red":
            raise RuntimeError("cluster health is red")


async def check(engines: dict[str, str], region: str = probes.DEFAULT_DYNAMODB_REGION) -> dict[str, str]:
    """region: the DynamoDB region (Settings.dynamodb_region) the tables live in."""
    async def one(name: str, address: str) -> tuple[str, str]:
        try:
            await asyncio.wait_for(asyncio.to_thread(_probe, name, address, region), 5.0)
            return name, "ok"
        except Exception as exc:  # any failure means "not reachable" to an operator
            return name, f"unreachable at {address}: {exc or type(exc).__name__}"
    return dict(await asyncio.gather(*(one(n, a) for n, a in engines.items())))


# Below this much free space under the embedded data directory the platform
# says it is not ready: SQLite needs room for WAL pages before a commit can
# succeed, so orders are about to be refused (503) or already are.
MIN_FREE_BYTES = 1 << 20


def disk(data_dir: Path) -> str:
    """"ok", or how full the filesystem of the embedded data directory is."""
    try:
        usage = shutil.disk_usage(data_dir)
    except OSError as exc:
        return f"data directory unreadable: {exc}"
    if usage.free < MIN_FREE_BYTES:
        return f"full: {usage.free} bytes free under {data_dir}"
    return "ok"


async def wait_for(engines: dict[str, str], max_delay: float = 5.0,
                   region: str = probes.DEFAULT_DYNAMODB_REGION) -> None:
    """Block until every engine answers, saying which ones are missing meanwhile."""
    delay = 0.2
    while True:
        status = await check(engines, region)
        missing = {n: s for n, s in status.items() if s != "ok"}
        if not missing:
            return
        for name, detail in missing.items():
            log.warning("waiting for engine", extra={"engine": name, "detail": detail})
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay)
