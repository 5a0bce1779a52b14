"""The console against `up --distributed` on the real engines: the gateway
serves the page, the market-data service (port + 1) its price and order
socket. The buy scenario, once."""

from __future__ import annotations

import httpx
import pytest

from tests.browser.conftest import PASSWORD, SYMBOLS, Console, sync_api, unique_user
from tests.e2e.conftest import RunningPlatform, wait_for

expect = sync_api.expect


@pytest.fixture(scope="module")
def distributed_platform(feed, tmp_path_factory, request):
    engines = request.getfixturevalue("real_engines")
    env = {"MOCKTRADE_FEED_URL": feed.url, "MOCKTRADE_SYMBOLS": ",".join(SYMBOLS),
           "MOCKTRADE_SIGNUP": "on"}
    running = RunningPlatform(tmp_path_factory.mktemp("console-dist") / "data", env=env,
                              engines=engines).start(timeout=180)
    # The watchlist lists the symbols that have a price when the page loads.
    wait_for(lambda: all(httpx.get(f"{running.base}/v1/prices/{s}", timeout=5).status_code == 200
                         for s in SYMBOLS), timeout=60)
    yield running
    running.stop()


def test_a_market_buy_in_distributed_mode(browser, distributed_platform):
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    console = Console(page, distributed_platform)
    try:
        user = unique_user("dist")
        created = httpx.post(f"{distributed_platform.base}/v1/accounts", timeout=10,
                                           json={"username": user, "password": PASSWORD,
                                                 "cash": "10000.00"})
        assert created.status_code == 201, created.text
        console.open_as(user)
        expect(page.locator("#account [data-field=cashBalance]")).to_have_text("10000.00")
        console.select("MOCKAAA")  # prices arrive over the market-data service's socket
        console.ticket(symbol="MOCKAAA", side="BUY", type="MARKET", quantity="3")
        expect(page.locator("#ticket-message")).to_contain_text("Order accepted")
        positions = page.get_by_role("table", name="Positions")
        expect(positions.locator("tr[data-symbol=MOCKAAA] td").first).to_have_text("3.000000")
        expect(page.locator("#account [data-field=cashBalance]")).to_have_text("9700.00")
        expect(page.get_by_role("table", name="Order history")).to_contain_text("EXECUTED")
    finally:
        context.close()
    assert not console.errors, console.errors
