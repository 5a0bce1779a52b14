"""Key rotation, bad-token throttling, owner-only secret files and the client
address behind proxies: the token issuer and its files, no server needed."""

from __future__ import annotations

import json
import os
import stat
import time

import jwt
import pytest

from mocktrade.config import Settings
from mocktrade.services import signing_keys
from mocktrade.services.auth import BAD_TOKEN_BURST, TokenIssuer, TokenThrottled, Unauthorized
from mocktrade.services.client_address import ClientAddress
from mocktrade.services.signing_keys import KeyRing


@pytest.fixture(autouse=True)
def rereads_at_once(monkeypatch):
    """Services re-read the ring every few seconds; here at every check."""
    monkeypatch.setattr(signing_keys, "REFRESH_SECONDS", 0.0)
    monkeypatch.setattr(signing_keys, "UNKNOWN_KID_REFRESH_SECONDS", 0.0)


def kid_of(token: str) -> str:
    return jwt.get_unverified_header(token)["kid"]


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def bearer(token: str) -> str:
    return f"Bearer {token}"


def test_rotation_keeps_old_tokens_until_the_old_key_retires(tmp_path):
    settings = Settings(data_dir=tmp_path)
    running = TokenIssuer(settings.key_ring(), 3600)  # a service started before the rotation
    old = running.issue("alice")
    assert running.user_of(bearer(old)) == "alice"

    fresh = signing_keys.rotate(settings.key_ring_path(), retire_after=3600)
    assert running.user_of(bearer(old)) == "alice"  # still within its key's life
    new = running.issue("alice")  # the running service signs with the new key, no restart
    assert kid_of(new) == fresh.kid != kid_of(old)
    assert TokenIssuer(settings.key_ring(), 3600).user_of(bearer(old)) == "alice"

    signing_keys.retire(settings.key_ring_path(), kid_of(old))
    with pytest.raises(Unauthorized, match="retired"):
        running.user_of(bearer(old))  # was in the verified cache: refused all the same
    assert running.user_of(bearer(new)) == "alice"


def test_a_rotated_key_retires_by_itself_after_retire_after(tmp_path):
    settings = Settings(data_dir=tmp_path)
    issuer = TokenIssuer(settings.key_ring(), 3600)
    old = issuer.issue("bob")
    signing_keys.rotate(settings.key_ring_path(), retire_after=4)
    assert issuer.user_of(bearer(old)) == "bob"
    time.sleep(5.1)
    with pytest.raises(Unauthorized, match="retired"):
        issuer.user_of(bearer(old))


def test_unknown_kid_and_missing_kid_are_refused(tmp_path):
    issuer = TokenIssuer(Settings(data_dir=tmp_path).key_ring(), 3600)
    claims = {"sub": "alice", "iss": "mocktrade", "exp": int(time.time()) + 60}
    key = issuer.ring.current()
    unknown = jwt.encode(claims, key.secret, algorithm="HS256", headers={"kid": "k-nope"})
    with pytest.raises(Unauthorized, match="unknown key"):
        issuer.user_of(bearer(unknown))
    no_kid = jwt.encode(claims, key.secret, algorithm="HS256")
    with pytest.raises(Unauthorized, match="no key id"):
        issuer.user_of(bearer(no_kid))


def test_an_older_data_dirs_secret_keeps_its_tokens_valid(tmp_path):
    (tmp_path / "jwt_secret").write_text("an-older-secret-of-at-least-thirty-two-bytes")
    before = jwt.encode({"sub": "alice", "iss": "mocktrade", "exp": int(time.time()) + 60},
                        "an-older-secret-of-at-least-thirty-two-bytes", algorithm="HS256")
    issuer = TokenIssuer(Settings(data_dir=tmp_path).key_ring(), 3600)
    assert issuer.user_of(bearer(before)) == "alice"
    assert not issuer.ring.current().legacy  # new tokens: a fresh key with a kid


def test_a_configured_secret_is_one_key_every_replica_agrees_on(tmp_path):
    secret = "a-configured-secret-of-thirty-two-bytes!!"
    one = TokenIssuer(Settings(data_dir=tmp_path / "a", jwt_secret=secret).key_ring(), 60)
    two = TokenIssuer(Settings(data_dir=tmp_path / "b", jwt_secret=secret).key_ring(), 60)
    assert two.user_of(bearer(one.issue("alice"))) == "alice"
    assert not (tmp_path / "a" / "jwt_keys.json").exists()


def test_a_configured_key_ring_file_must_exist(tmp_path):
    with pytest.raises(signing_keys.KeyRingError, match="token rotate"):
        Settings(data_dir=tmp_path, jwt_keyring=str(tmp_path / "ring.json")).key_ring()


def test_the_only_active_key_cannot_be_retired(tmp_path):
    settings = Settings(data_dir=tmp_path)
    ring = settings.key_ring()
    with pytest.raises(signing_keys.KeyRingError, match="only active key"):
        signing_keys.retire(settings.key_ring_path(), ring.current().kid)


def test_bad_tokens_are_throttled_per_address_and_good_clients_are_not(tmp_path):
    issuer = TokenIssuer(Settings(data_dir=tmp_path).key_ring(), 3600)
    good = issuer.issue("alice")
    assert issuer.user_of(bearer(good), "10.0.0.1") == "alice"
    for _ in range(BAD_TOKEN_BURST):
        with pytest.raises(Unauthorized):
            issuer.user_of(bearer("not-a-token"), "10.0.0.1")
    with pytest.raises(TokenThrottled) as throttled:
        issuer.user_of(bearer("not-a-token"), "10.0.0.1")
    assert 0 < throttled.value.wait <= 1.0
    # The good client at the same address keeps going; other addresses are untouched.
    assert issuer.user_of(bearer(good), "10.0.0.1") == "alice"
    with pytest.raises(Unauthorized):
        issuer.user_of(bearer("not-a-token"), "10.0.0.2")


def test_secret_files_are_owner_only_and_widened_ones_are_narrowed(tmp_path):
    settings = Settings(data_dir=tmp_path)
    settings.key_ring()
    settings.demo_password()
    assert mode(tmp_path / "jwt_keys.json") == 0o600
    assert mode(tmp_path / "demo_password") == 0o600
    signing_keys.rotate(settings.key_ring_path(), 60)
    assert mode(tmp_path / "jwt_keys.json") == 0o600  # replaced, still owner-only
    os.chmod(tmp_path / "demo_password", 0o644)
    os.chmod(tmp_path / "jwt_keys.json", 0o664)
    settings.demo_password()
    settings.key_ring()
    assert mode(tmp_path / "demo_password") == 0o600
    assert mode(tmp_path / "jwt_keys.json") == 0o600
    assert len(json.loads((tmp_path / "jwt_keys.json").read_text())["keys"]) == 2


def scope(peer: str, forwarded: str | None = None) -> dict:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return {"client": (peer, 50000), "headers": headers}


def test_x_forwarded_for_counts_only_behind_a_trusted_proxy():
    assert ClientAddress().of(scope("203.0.113.9", "198.51.100.1")) == "203.0.113.9"
    behind = ClientAddress("10.0.0.0/8, 127.0.0.1")
    assert behind.of(scope("127.0.0.1", "198.51.100.1")) == "198.51.100.1"
    # A client's own entry (left) never wins over what the trusted proxies saw.
    assert behind.of(scope("10.1.1.1", "1.2.3.4, 198.51.100.1, 10.2.2.2")) == "198.51.100.1"
    assert behind.of(scope("203.0.113.9", "198.51.100.1")) == "203.0.113.9"  # not a proxy
    assert behind.of(scope("127.0.0.1", "garbage")) == "127.0.0.1"
