"""services.limits: JSON depth and numbers, and the WebSocket's per-connection limits."""

from __future__ import annotations

from decimal import Decimal

import pytest

from mocktrade.services import limits
from mocktrade.services.marketdata import MarketDataService

from .test_marketdata_service import Connection, MemoryEventLog, MemoryPriceCache, settle, v1


def test_json_depth_ignores_brackets_in_strings():
    assert limits.json_depth(b'{"a": "[[[[[[", "b": [[1]], "c": "\\"[["}') == 3
    assert limits.json_depth(b"1") == 0


def test_nesting_past_the_limit_is_refused_and_at_it_parsed():
    at = b"[" * limits.MAX_JSON_DEPTH + b"]" * limits.MAX_JSON_DEPTH
    assert limits.loads(at) is not None
    with pytest.raises(limits.LimitExceeded) as refused:
        limits.loads(b"[" + at + b"]")
    assert (refused.value.status, refused.value.field) == (400, "body")


@pytest.mark.parametrize("text", ["1e999999999999999999999", "-1e999999999999999999999", "9" * 5000])
def test_numbers_of_any_size_decode_to_finite_decimals(text):
    value = limits.loads('{"q": %s}' % text)["q"]
    assert isinstance(value, Decimal) and value.is_finite() and abs(value) > 10 ** 100


async def _service(**limits_kw) -> MarketDataService:
    service = MarketDataService(MemoryEventLog(), MemoryPriceCache(), ["MOCKAAA", "MOCKBBB", "MOCKCCC"],
                                client_buffer=64, close_timeout=0.1, **limits_kw)
    await service.start()
    return service


async def test_joins_past_the_topic_cap_get_too_many_joins():
    service = await _service(max_topics=2)
    try:
        client = Connection(service)
        for n, symbol in enumerate(["MOCKAAA", "MOCKBBB", "MOCKCCC"]):
            client.say(v1(f"prices:{symbol}", "phx_join", str(n)))
        replies = [await client.next_frame() for _ in range(3)]
        assert [r["payload"]["status"] for r in replies] == ["ok", "ok", "error"]
        assert replies[2]["payload"]["response"] == {"reason": "too many joins"}
        client.say(v1("prices:MOCKAAA", "phx_join", "again"))  # a rejoin is no new topic
        assert (await client.next_frame())["payload"]["status"] == "ok"
        assert service.stats()["joinsRefused"] == 1
        await client.disconnect()
    finally:
        await service.stop()


async def test_messages_past_the_rate_get_rate_limited_and_are_not_acted_on():
    service = await _service(message_rate=0.001, message_burst=2)
    try:
        client = Connection(service)
        client.say(v1("phoenix", "heartbeat", "1"))
        client.say(v1("phoenix", "heartbeat", "2"))
        client.say(v1("prices:MOCKAAA", "phx_join", "3"))
        replies = [await client.next_frame() for _ in range(3)]
        assert [r["payload"]["status"] for r in replies] == ["ok", "ok", "error"]
        assert replies[2]["payload"]["response"] == {"reason": "rate limited"}
        await settle()
        assert service.stats()["messagesRateLimited"] == 1
        assert service._hub._members == {}
        await client.disconnect()
    finally:
        await service.stop()


async def test_a_burst_larger_than_the_client_buffer_is_answered_in_full():
    service = await _service()
    try:
        client = Connection(service)
        for n in range(500):
            client.say(v1("phoenix", "heartbeat", str(n)))
        replies = [await client.next_frame() for _ in range(500)]
        assert [r["ref"] for r in replies] == [str(n) for n in range(500)]
        assert service.stats()["slowClientsDropped"] == 0
        await client.disconnect()
    finally:
        await service.stop()
