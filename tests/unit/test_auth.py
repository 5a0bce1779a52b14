"""Bearer tokens: verified once, then served from a bounded cache until they expire."""

import time

import pytest

from mocktrade.services.auth import TokenIssuer, Unauthorized


def test_a_cached_token_still_expires():
    issuer = TokenIssuer("a-secret-of-at-least-thirty-two-bytes!!", 1)
    token = issuer.issue("alice")
    assert issuer.user_of(f"Bearer {token}") == "alice"
    assert issuer.user_of(f"Bearer {token}") == "alice"  # from the cache
    time.sleep(2.1)
    with pytest.raises(Unauthorized, match="expired"):
        issuer.user_of(f"Bearer {token}")


def test_a_forged_token_is_refused_even_after_a_good_one():
    issuer = TokenIssuer("a-secret-of-at-least-thirty-two-bytes!!", 60)
    good = issuer.issue("alice")
    issuer.user_of(f"Bearer {good}")
    forged = TokenIssuer("another-secret-of-at-least-32-bytes!!!", 60).issue("alice")
    with pytest.raises(Unauthorized):
        issuer.user_of(f"Bearer {forged}")
