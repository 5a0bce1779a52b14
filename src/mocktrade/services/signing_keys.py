"""The key ring that signs and verifies bearer tokens (HS256 with a `kid`).

Rotation the way real token issuers do it: `mocktrade token rotate` adds a
new key that signs every token from then on; the previous keys keep
verifying until their retirement time (by default one token lifetime later,
so no token signed before the rotation is cut short), then tokens signed by
them get 401. `mocktrade token retire KID` retires a key at once (a leaked
key).

Where the ring lives:
- `MOCKTRADE_JWT_KEYRING`: a JSON file shared by every replica (a mounted
  secret in a cluster);
- else `MOCKTRADE_JWT_SECRET`: one key, no rotation (as before);
- else `DATA_DIR/jwt_keys.json`, created on first use (seeded with an older
  data dir's `jwt_secret`, so its tokens stay valid).

Running processes pick up a change without a restart: the file's mtime is
checked at most every REFRESH_SECONDS, and at once (at most once a second)
when a token names a kid not in the ring.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import secrets
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from ..secret_files import create_secret, read_secret, replace_secret

REFRESH_SECONDS = 2.0
UNKNOWN_KID_REFRESH_SECONDS = 1.0


class KeyRingError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    secret: str
    created: float
    retire_at: float | None = None
    # Verifies tokens without a kid (issued before key rotation existed).
    legacy: bool = False

    def active(self, now: float) -> bool:
        return self.retire_at is None or now < self.retire_at

    def as_json(self) -> dict[str, object]:
        entry: dict[str, object] = {"kid": self.kid, "secret": self.secret,
                                    "createdAt": _iso(self.created),
                                    "retireAt": _iso(self.retire_at) if self.retire_at else None}
        if self.legacy:
            entry["legacy"] = True
        return entry


def new_key(now: float, legacy_secret: str | None = None) -> SigningKey:
    if legacy_secret is not None:
        return SigningKey(_kid_of(legacy_secret), legacy_secret, now, legacy=True)
    return SigningKey(f"k{time.strftime('%Y%m%d', time.gmtime(now))}-{secrets.token_hex(4)}",
                      secrets.token_urlsafe(48), now)


class KeyRing:
    """Keys by kid, in rotation order; the newest active one signs."""

    def __init__(self, keys: list[SigningKey], path: Path | None = None):
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._checked = self._forced = time.monotonic()
        self._set(keys)

    @classmethod
    def single(cls, secret: str) -> "KeyRing":
        """One configured secret (MOCKTRADE_JWT_SECRET): its kid is derived
        from it, so every replica given the same secret agrees."""
        return cls([new_key(0.0, legacy_secret=secret)])

    @classmethod
    def load(cls, path: Path) -> "KeyRing":
        if not path.exists():
            raise KeyRingError(f"no key ring at {path}: create it with `mocktrade token rotate`")
        ring = cls(read_ring(path), path)
        ring._stamp = _stamp(path)
        return ring

    @property
    def path(self) -> Path | None:
        return self._path

    def keys(self) -> list[SigningKey]:
        return list(self._keys.values())

    def current(self) -> SigningKey:
        self.refresh()
        now = time.time()
        active = [k for k in self._keys.values() if k.active(now)]
        if not active:
            raise KeyRingError("every signing key is retired: run `mocktrade token rotate`")
        return active[-1]  # the ring is kept in rotation order, newest last

    def verifying_key(self, kid: str | None) -> SigningKey | None:
        """The key a token's kid names (None: no such key, even after a
        re-read), whether or not it is retired; the caller checks that."""
        self.refresh()
        if kid is None:
            return self._legacy
        key = self._keys.get(kid)
        if key is None and self.refresh(force=True):
            key = self._keys.get(kid)
        return key

    def usable(self, kid: str | None, now: float) -> bool:
        """Whether tokens of this kid may still pass (the verified-token cache
        asks this, so a retired key's tokens stop at once)."""
        self.refresh()
        key = self._legacy if kid is None else self._keys.get(kid)
        return key is not None and key.active(now)

    def refresh(self, force: bool = False) -> bool:
        """Re-read the file if it changed; True if the ring changed."""
        if self._path is None:
            return False
        now = time.monotonic()
        if force:
            if now - self._forced < UNKNOWN_KID_REFRESH_SECONDS:
                return False
            self._forced = now
        elif now - self._checked < REFRESH_SECONDS:
            return False
        self._checked = now
        try:
            stamp = _stamp(self._path)
            if stamp == self._stamp:
                return False
            keys = read_ring(self._path)
        except (OSError, KeyRingError):
            return False  # keep verifying with the ring we have
        self._stamp = stamp
        self._set(keys)
        return True

    def _set(self, keys: list[SigningKey]) -> None:
        if not keys:
            raise KeyRingError("the key ring holds no key")
        self._keys = {k.kid: k for k in keys}
        self._legacy = next((k for k in keys if k.legacy), None)


# -- the ring file --------------------------------------------------------------

def read_ring(path: Path) -> list[SigningKey]:
    try:
        document = json.loads(read_secret(path))
        return [SigningKey(str(e["kid"]), str(e["secret"]), _epoch(e["createdAt"]),
                           _epoch(e["retireAt"]) if e.get("retireAt") else None,
                           bool(e.get("legacy", False)))
                for e in document["keys"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyRingError(f"{path} is not a key ring: {exc}") from None


def write_ring(path: Path, keys: list[SigningKey]) -> None:
    replace_secret(path, json.dumps({"keys": [k.as_json() for k in keys]}, indent=2) + "\n")


def ensure_ring(path: Path, legacy_secret_file: Path | None = None) -> None:
    """Create the data dir's ring on first use (0600), seeded with the older
    single secret if there is one so that its tokens keep verifying."""
    if path.exists():
        return
    now = time.time()
    keys = [new_key(now)]
    if legacy_secret_file is not None and legacy_secret_file.exists():
        keys.insert(0, new_key(now - 1, legacy_secret=read_secret(legacy_secret_file).strip()))
    create_secret(path, json.dumps({"keys": [k.as_json() for k in keys]}, indent=2) + "\n")


def rotate(path: Path, retire_after: float, legacy_secret: str | None = None) -> SigningKey:
    """Add a new current key; keys without a retirement time get one,
    `retire_after` seconds from now. Returns the new key."""
    with _locked(path):
        now = time.time()
        if path.exists():
            keys = read_ring(path)
        else:
            keys = [new_key(now - 1, legacy_secret=legacy_secret)] if legacy_secret else []
        keys = [k if k.retire_at is not None else replace(k, retire_at=now + retire_after)
                for k in keys]
        fresh = new_key(now)
        write_ring(path, keys + [fresh])
        return fresh


def retire(path: Path, kid: str) -> SigningKey:
    """Retire a key now; refused for the only active key (nothing could sign)."""
    with _locked(path):
        keys = read_ring(path)
        now = time.time()
        if kid not in {k.kid for k in keys}:
            raise KeyRingError(f"no key {kid!r} in {path}")
        if not [k for k in keys if k.kid != kid and k.active(now)]:
            raise KeyRingError(f"{kid} is the only active key: run `mocktrade token rotate` first")
        keys = [replace(k, retire_at=now) if k.kid == kid else k for k in keys]
        write_ring(path, keys)
        return next(k for k in keys if k.kid == kid)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One rotation at a time (two operators, or a script run twice)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _kid_of(secret: str) -> str:
    digest = hashlib.sha256(secret.encode()).digest()
    return "s-" + base64.urlsafe_b64encode(digest[:9]).decode()


def _stamp(path: Path) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_mtime_ns, info.st_size


def _iso(moment: float) -> str:
    # Microseconds: a key retires exactly when it was promised to.
    return datetime.fromtimestamp(moment, timezone.utc).isoformat(timespec="microseconds")


def _epoch(text: str) -> float:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return moment.timestamp()
