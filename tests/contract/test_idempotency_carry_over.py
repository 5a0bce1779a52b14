"""The embedded idempotency keys moved from the portfolio store's file to a
file of their own (adapters/embedded/idempotency.py); keys an older version
kept in the portfolio file are carried over once, so a retry across the
upgrade still finds its order."""

from __future__ import annotations

import sqlite3

from mocktrade.adapters.embedded.idempotency import SqliteIdempotencyStore


async def test_keys_kept_in_the_portfolio_file_are_carried_over_once(tmp_path):
    old_file, new_file = tmp_path / "portfolios.sqlite3", tmp_path / "idempotency.sqlite3"
    old = SqliteIdempotencyStore(old_file)  # where an older version kept them
    await old.reserve("alice", "key-1", "fp-1", "order-1")
    await old.mark_published("alice", "key-1")
    await old.reserve("bob", "key-2", "fp-2", "order-2")
    await old.remember_decline("bob", "key-2", "INSUFFICIENT_FUNDS")
    await old.close()

    store = SqliteIdempotencyStore(new_file, carry_over_from=old_file)
    try:
        alice = await store.lookup("alice", "key-1")
        assert (alice.order_id, alice.fingerprint, alice.published) == ("order-1", "fp-1", True)
        assert (await store.lookup("bob", "key-2")).decline == "INSUFFICIENT_FUNDS"
        # A retry with the same key gets the carried-over order, not a new one.
        assert (await store.reserve("alice", "key-1", "fp-1", "order-new")).order_id == "order-1"
        await store.reserve("carol", "key-3", "fp-3", "order-3")
    finally:
        await store.close()

    # Once the new file has keys, a later start copies nothing again.
    conn = sqlite3.connect(old_file)
    conn.execute("DELETE FROM idempotency_keys WHERE userId = 'bob'")
    conn.execute("INSERT INTO idempotency_keys (userId, idempotencyKey, fingerprint, orderId, created)"
                  " VALUES ('dave', 'key-4', 'fp-4', 'order-4', '2026-12-02T00:00:00Z')")
    conn.commit()
    conn.close()
    again = SqliteIdempotencyStore(new_file, carry_over_from=old_file)
    try:
        assert await again.lookup("dave", "key-4") is None
        assert (await again.lookup("bob", "key-2")).order_id == "order-2"
        assert (await again.lookup("carol", "key-3")).order_id == "order-3"
    finally:
        await again.close()


async def test_a_fresh_data_directory_carries_nothing_over(tmp_path):
    portfolio_file = tmp_path / "portfolios.sqlite3"
    sqlite3.connect(portfolio_file).execute("CREATE TABLE portfolios (userId TEXT)").connection.close()
    store = SqliteIdempotencyStore(tmp_path / "idempotency.sqlite3", carry_over_from=portfolio_file)
    try:
        assert await store.lookup("alice", "key-1") is None
    finally:
        await store.close()
