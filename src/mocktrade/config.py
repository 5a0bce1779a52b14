"""One settings object, read from the environment (MOCKTRADE_*)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, replace
from datetime import time
from decimal import Decimal
from pathlib import Path

DEFAULT_SYMBOLS = (
    "MOCKAAPL", "MOCKMSFT", "MOCKGOOG", "MOCKAMZN", "MOCKNVDA", "MOCKMETA", "MOCKTSLA",
    "MOCKBRK", "MOCKJPM", "MOCKV", "MOCKJNJ", "MOCKWMT", "MOCKPG", "MOCKMA", "MOCKUNH",
    "MOCKHD", "MOCKDIS", "MOCKBAC", "MOCKXOM", "MOCKKO",
)


class ConfigError(ValueError):
    pass


ENGINES_FILE = "engines.env"

# Settings written by `up --distributed` into the data dir, so that commands
# run later on the same data dir (token, accounts, verify) reach the same
# engines; the environment still wins.
_file_defaults: dict[str, str] = {}


def _env(name: str, default: str) -> str:
    key = f"MOCKTRADE_{name}"
    return os.environ.get(key, _file_defaults.get(key, default))


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and key.startswith("MOCKTRADE_"):
                values[key.strip()] = value.strip()
    return values


def write_env_file(path: Path, values: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k}={v}\n" for k, v in sorted(values.items())))


def _number(name: str, default: str, kind: type = float):
    raw = _env(name, default)
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"MOCKTRADE_{name} must be a number, got {raw!r}") from None


def _decimal(name: str, default: str) -> Decimal:
    raw = _env(name, default)
    try:
        value = Decimal(raw)
    except ArithmeticError:
        raise ConfigError(f"MOCKTRADE_{name} must be a decimal amount, got {raw!r}") from None
    if not value.is_finite() or value < 0:
        raise ConfigError(f"MOCKTRADE_{name} must be a non-negative amount, got {raw!r}")
    return value


def _time_of_day(name: str, default: str) -> time:
    raw = _env(name, default)
    try:
        return time.fromisoformat(raw)
    except ValueError:
        raise ConfigError(f"MOCKTRADE_{name} must be a UTC time of day like 20:00 or 20:00:30, "
                          f"got {raw!r}") from None


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path(".mocktrade")
    host: str = "127.0.0.1"
    port: int = 8000
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    # Feed simulator: total ticks per second across all symbols, and the
    # annualised volatility of its geometric Brownian motion.
    feed_ticks_per_second: float = 20.0
    feed_volatility: float = 0.4
    feed_seed: int | None = None
    # Where ingestion connects; empty means the built-in simulator.
    feed_url: str = ""
    jwt_secret: str = ""
    # A key-ring file shared by every replica (services.signing_keys); wins
    # over jwt_secret. Empty: jwt_secret, else DATA_DIR/jwt_keys.json.
    jwt_keyring: str = ""
    # Proxies whose X-Forwarded-For is believed (services.client_address).
    trusted_proxies: str = ""
    # Origins allowed to call the API from a browser (exact, comma-separated);
    # empty: same-origin only, no Access-Control-* header ever.
    cors_origins: tuple[str, ...] = ()
    token_ttl_seconds: int = 7 * 24 * 3600
    # Per client address: invalid or expired bearer tokens (services.auth)
    # and failed sign-ins (services.accounts), each a token bucket.
    bad_token_rate: float = 1.0
    bad_token_burst: int = 20
    signin_failure_rate: float = 1 / 6
    signin_failure_burst: int = 10
    rate_limit_per_second: float = 200.0
    rate_limit_burst: int = 400
    log_partitions: int = 4
    ws_client_buffer: int = 256
    # DAY orders expire at this UTC time of day (the session close).
    session_close: time = time(20, 0)
    # Self-service sign-up: "" = on in embedded mode, off in distributed mode.
    signup: str = ""
    signup_max_cash: Decimal = Decimal("1000000.00")
    demo_cash: Decimal = Decimal("100000.00")
    demo_users: tuple[str, ...] = ("alice", "bob")
    log_level: str = field(default="INFO")
    # Distributed mode: a role is served by its real engine when its setting
    # is non-empty, else by the embedded stand-in in data_dir.
    kafka_bootstrap: str = ""
    kafka_partitions: int = 4
    redis_url: str = ""
    dynamodb_endpoint: str = ""  # "aws" means AWS's own endpoint for the region
    dynamodb_region: str = "us-east-1"
    elasticsearch_url: str = ""
    # Replicas of each trade index: 0 keeps a one-node cluster green.
    elasticsearch_replicas: int = 0
    clickhouse_url: str = ""  # http://host:8123/db, or chdb:///path
    # Where the query service reads analytics when another process owns the
    # chDB directory (the persistence job serves it).
    analytics_url: str = ""
    # Prefix of every table, index, topic and key name, so that several
    # deployments (or test runs) can share one set of engines.
    table_prefix: str = ""

    @property
    def distributed(self) -> bool:
        return bool(self.kafka_bootstrap)

    @property
    def signup_enabled(self) -> bool:
        if self.signup in ("1", "true", "on", "yes"):
            return True
        if self.signup in ("0", "false", "off", "no"):
            return False
        return not self.distributed

    @classmethod
    def from_env(cls, data_dir: str | os.PathLike | None = None) -> "Settings":
        root = Path(data_dir or os.environ.get("MOCKTRADE_DATA_DIR", ".mocktrade"))
        _file_defaults.clear()
        _file_defaults.update(read_env_file(root / ENGINES_FILE))
        symbols = tuple(s.strip().upper() for s in _env("SYMBOLS", ",".join(DEFAULT_SYMBOLS)).split(",") if s.strip())
        if not symbols:
            raise ConfigError("MOCKTRADE_SYMBOLS names no symbol")
        seed = _env("FEED_SEED", "")
        return cls(
            data_dir=Path(data_dir or _env("DATA_DIR", ".mocktrade")),
            host=_env("HOST", "127.0.0.1"),
            port=_number("PORT", "8000", int),
            symbols=symbols,
            feed_ticks_per_second=_number("FEED_TICKS_PER_SECOND", "20"),
            feed_volatility=_number("FEED_VOLATILITY", "0.4"),
            feed_seed=int(seed) if seed else None,
            feed_url=_env("FEED_URL", ""),
            jwt_secret=_env("JWT_SECRET", ""),
            jwt_keyring=_env("JWT_KEYRING", ""),
            trusted_proxies=_env("TRUSTED_PROXIES", ""),
            cors_origins=_origins(_env("CORS_ORIGINS", "")),
            token_ttl_seconds=_number("TOKEN_TTL_SECONDS", str(7 * 24 * 3600), int),
            bad_token_rate=_number("BAD_TOKEN_RATE", "1"),
            bad_token_burst=_number("BAD_TOKEN_BURST", "20", int),
            signin_failure_rate=_number("SIGNIN_FAILURE_RATE", str(1 / 6)),
            signin_failure_burst=_number("SIGNIN_FAILURE_BURST", "10", int),
            rate_limit_per_second=_number("RATE_LIMIT_PER_SECOND", "200"),
            rate_limit_burst=_number("RATE_LIMIT_BURST", "400", int),
            log_partitions=_number("LOG_PARTITIONS", "4", int),
            ws_client_buffer=_number("WS_CLIENT_BUFFER", "256", int),
            session_close=_time_of_day("SESSION_CLOSE", "20:00"),
            signup=_env("SIGNUP", "").strip().lower(),
            signup_max_cash=_decimal("SIGNUP_MAX_CASH", "1000000.00"),
            log_level=_env("LOG_LEVEL", "INFO").upper(),
            kafka_bootstrap=_env("KAFKA_BOOTSTRAP", ""),
            kafka_partitions=_number("KAFKA_PARTITIONS", "4", int),
            redis_url=_env("REDIS_URL", ""),
            dynamodb_endpoint=_env("DYNAMODB_ENDPOINT", ""),
            dynamodb_region=_env("DYNAMODB_REGION", "us-east-1"),
            elasticsearch_url=_env("ELASTICSEARCH_URL", ""),
            elasticsearch_replicas=_number("ELASTICSEARCH_REPLICAS", "0", int),
            clickhouse_url=_env("CLICKHOUSE_URL", ""),
            analytics_url=_env("ANALYTICS_URL", ""),
            table_prefix=_env("TABLE_PREFIX", ""),
        )

    def with_overrides(self, **changes) -> "Settings":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def key_ring_path(self) -> Path | None:
        """The key-ring file tokens are signed from; None when a single
        MOCKTRADE_JWT_SECRET is configured instead."""
        if self.jwt_keyring:
            return Path(self.jwt_keyring)
        if self.jwt_secret:
            return None
        return self.data_dir / "jwt_keys.json"

    def key_ring(self):
        """The signing keys (services.signing_keys.KeyRing); the data dir's
        ring is created on first use, a configured ring must exist."""
        from .services.signing_keys import KeyRing, ensure_ring

        path = self.key_ring_path()
        if path is None:
            return KeyRing.single(self.jwt_secret)
        if not self.jwt_keyring:
            ensure_ring(path, legacy_secret_file=self.data_dir / "jwt_secret")
        return KeyRing.load(path)

    def demo_password(self) -> str:
        """The demo users' password: generated once into the data dir, so the
        console can be signed into without a known default password."""
        return self._generated("demo_password", lambda: secrets.token_urlsafe(9))

    def _generated(self, name: str, fresh) -> str:
        """A secret generated once into the data dir, owner-only (0600)."""
        from .secret_files import create_secret, read_secret

        path = self.data_dir / name
        if not path.exists():
            create_secret(path, fresh())
        return read_secret(path).strip()


def _origins(text: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in text.split(",") if o.strip())
    for origin in origins:
        scheme, sep, rest = origin.partition("://")
        if origin == "*" or scheme not in ("http", "https") or not sep or not rest or "/" in rest:
            raise ConfigError(f"MOCKTRADE_CORS_ORIGINS: {origin!r} is not an exact origin like "
                              f"https://app.example.com")
    return origins
