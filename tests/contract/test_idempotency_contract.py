"""IdempotencyStore contract: the first request with a key owns it."""

from __future__ import annotations

import asyncio

from mocktrade.ports import IdempotencyRecord


async def test_a_fresh_key_is_reserved_for_the_caller(idempotency_store):
    record = await idempotency_store.reserve("alice", "key-1", "fp-a", "order-1")
    assert record == IdempotencyRecord("order-1", "fp-a", False)


async def test_a_reserved_key_returns_the_first_claim(idempotency_store):
    await idempotency_store.reserve("alice", "key-1", "fp-a", "order-1")
    again = await idempotency_store.reserve("alice", "key-1", "fp-b", "order-2")
    assert again == IdempotencyRecord("order-1", "fp-a", False)


async def test_published_is_remembered(idempotency_store):
    await idempotency_store.reserve("alice", "key-1", "fp-a", "order-1")
    await idempotency_store.mark_published("alice", "key-1")
    assert await idempotency_store.reserve("alice", "key-1", "fp-a", "order-9") == \
        IdempotencyRecord("order-1", "fp-a", True)


async def test_keys_belong_to_one_user(idempotency_store):
    await idempotency_store.reserve("alice", "shared-key", "fp-a", "order-1")
    await idempotency_store.mark_published("alice", "shared-key")
    bob = await idempotency_store.reserve("bob", "shared-key", "fp-b", "order-2")
    assert bob == IdempotencyRecord("order-2", "fp-b", False)


async def test_concurrent_claims_agree_on_one_owner(idempotency_store):
    records = await asyncio.gather(*(
        idempotency_store.reserve("alice", "key-1", f"fp-{i}", f"order-{i}") for i in range(50)))
    assert len(set(records)) == 1
    owner = records[0]
    assert owner.fingerprint == f"fp-{owner.order_id.removeprefix('order-')}"


async def test_claims_survive_reopening(open_idempotency_store):
    store = await open_idempotency_store()
    await store.reserve("alice", "key-1", "fp-a", "order-1")
    await store.mark_published("alice", "key-1")
    await store.reserve("alice", "key-2", "fp-b", "order-2")
    await store.close()

    reopened = await open_idempotency_store()
    assert await reopened.reserve("alice", "key-1", "x", "y") == IdempotencyRecord("order-1", "fp-a", True)
    assert await reopened.reserve("alice", "key-2", "x", "y") == IdempotencyRecord("order-2", "fp-b", False)


async def test_a_remembered_decline_comes_back_with_the_key(idempotency_store):
    await idempotency_store.reserve("alice", "key-d", "fp-a", "order-1")
    await idempotency_store.remember_decline("alice", "key-d", '{"status": 402}')
    record = await idempotency_store.lookup("alice", "key-d")
    assert record.decline == '{"status": 402}' and not record.published
    assert (await idempotency_store.reserve("alice", "key-d", "fp-a", "order-2")).decline == \
        '{"status": 402}'
