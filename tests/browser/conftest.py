"""The console in a real browser: Playwright for Python driving the system's
chromium (Debian's package; never `playwright install`) against a real
`mocktrade up` subprocess whose prices come from a ControlledFeed."""

from __future__ import annotations

import os
import shutil
import uuid

import httpx
import pytest

from tests.e2e.conftest import RunningPlatform
from tests.e2e.feedctl import ControlledFeed

sync_api = pytest.importorskip("playwright.sync_api")
# A loaded CI machine runs a whole platform beside the browser: be patient.
sync_api.expect.set_options(timeout=20_000)

SYMBOLS = {"MOCKAAA": "100.0000", "MOCKBBB": "50.0000", "MOCKCCC": "20.0000"}
PASSWORD = "correct horse battery staple"
CHROMIUM = os.environ.get("MOCKTRADE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def feed():
    running = ControlledFeed(dict(SYMBOLS), interval=0.5).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def console_platform(feed, tmp_path_factory):
    env = {"MOCKTRADE_FEED_URL": feed.url, "MOCKTRADE_SYMBOLS": ",".join(SYMBOLS),
           "MOCKTRADE_SIGNUP": "on"}
    running = RunningPlatform(tmp_path_factory.mktemp("console") / "data", env=env).start()
    yield running
    running.stop()


# Module scope, not session: Playwright's sync API keeps an event loop running
# in this thread while it is open, which would break every asyncio test
# collected after the browser tests.
@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM)
        yield launched
        launched.close()


class Console:
    """One browser page on the console, and the helpers the tests share."""

    def __init__(self, page, platform: RunningPlatform):
        self.page, self.platform = page, platform
        self.errors: list[str] = []
        self.refused_on_purpose: tuple[str, ...] = ()
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        # The pages' Content-Security-Policy must never have to refuse anything:
        # chromium reports each refusal on the console and as an event.
        page.on("console", lambda message: self.errors.append(message.text)
                if "Content Security Policy" in message.text else None)
        page.add_init_script("document.addEventListener('securitypolicyviolation', e => "
                             "console.error('Content Security Policy violation: ' + "
                             "e.violatedDirective + ' ' + e.blockedURI))")

    def allow_refusals(self, *marks: str) -> None:
        """Refusals a test expects from a page it does not own (for example
        Redoc's string eval). They are dropped at teardown, not at the call,
        because the browser may report them after the test's last step."""
        self.refused_on_purpose += marks

    def unexpected_errors(self) -> list[str]:
        return [e for e in self.errors if not any(m in e for m in self.refused_on_purpose)]

    def new_account(self, cash: str = "10000.00", prefix: str = "web") -> str:
        """A fresh user (self-service sign-up over the API), so tests do not share state."""
        user = unique_user(prefix)
        answer = httpx.post(f"{self.platform.base}/v1/accounts", timeout=10,
                            json={"username": user, "password": PASSWORD, "cash": cash})
        assert answer.status_code == 201, answer.text
        return user

    def open_as(self, user: str) -> "Console":
        """Signed in with a token from the CLI, kept where the console keeps it."""
        token = self.platform.token(user)
        self.page.add_init_script(f"sessionStorage.setItem('mocktrade.token', {token!r})")
        self.page.goto(self.platform.base + "/")
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        self.page.wait_for_selector("body[data-ready=true]", timeout=30_000)

    def watch_row(self, symbol: str):
        return self.page.get_by_role("table", name="Watchlist").locator(f"tr[data-symbol={symbol}]")

    def select(self, symbol: str) -> None:
        self.watch_row(symbol).get_by_role("button").click()
        sync_api.expect(self.page.locator("#chart-symbol")).to_have_text(symbol)

    def ticket(self, **fields: str) -> None:
        page = self.page
        labels = {"symbol": "Symbol", "side": "Side", "type": "Order type",
                  "timeInForce": "Time in force"}
        for key in ("symbol", "side", "type", "timeInForce"):
            if key in fields:
                page.get_by_label(labels[key], exact=True).select_option(fields[key])
        for key, label in (("quantity", "Quantity"), ("limitPrice", "Limit price"),
                           ("stopPrice", "Stop price")):
            if key in fields:
                page.get_by_label(label, exact=True).fill(fields[key])
        page.get_by_role("button", name="Place order").click()


@pytest.fixture
def console(browser, console_platform):
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(20_000)
    wrapper = Console(page, console_platform)
    yield wrapper
    context.close()
    assert not wrapper.unexpected_errors(), wrapper.unexpected_errors()


def unique_user(prefix: str = "web") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"
