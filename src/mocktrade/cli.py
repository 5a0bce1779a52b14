"""The `mocktrade` command."""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from . import __version__
from .domain import rules
from .config import ConfigError, Settings
from .domain.money import AmountError, fmt, parse_cash
from .ports import AccountExists, DependencyUnavailable

SERVICES = ("gateway", "order", "portfolio", "query", "marketdata", "ingestion", "feed")
JOBS = ("execution", "persistence", "triggers", "all")


class CommandError(Exception):
    """One clear sentence for the operator; no traceback."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mocktrade", description="Mock stock-trading platform.")
    parser.add_argument("--version", action="version", version=f"mocktrade {__version__}")
    parser.add_argument("--data-dir", help="where data lives (env MOCKTRADE_DATA_DIR, default ./.mocktrade)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="start the whole platform (embedded, in this process)")
    up.add_argument("--host", help="address to bind (default 127.0.0.1)")
    up.add_argument("--port", type=int, help="port to bind (default 8000)")
    up.add_argument("--distributed", action="store_true",
                    help="start the real engines and one process per service and job")
    up.add_argument("--replicas", default="", metavar="NAME=N,...",
                    help="with --distributed: replicas per service or job, e.g. marketdata=2,execution=2; "
                         "a job may be 0 (it runs elsewhere, e.g. on a Flink cluster)")
    up.add_argument("--stack-dir", help="with --distributed: the engines' directory (default DATA_DIR/stack)")
    up.add_argument("--keep-stack", action="store_true",
                    help="with --distributed: leave the engines running on exit")

    serve = commands.add_parser("serve", help="run one service as its own process")
    serve.add_argument("service", choices=SERVICES)
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 8000)")

    job = commands.add_parser("job", help="run one or more jobs as a consumer-group process")
    job.add_argument("job", nargs="+", choices=JOBS,
                     help="the jobs this process runs (all: every job; embedded `up` runs "
                          "`job execution triggers` and `job persistence`)")
    job.add_argument("--host", help="address of its health endpoint (default 127.0.0.1)")
    job.add_argument("--port", type=int, help="port of its health endpoint (default 8000)")
    job.add_argument("--engine", choices=("consumer", "flink"),
                     default=os.environ.get("MOCKTRADE_JOB_ENGINE") or "consumer",
                     help="consumer: a Kafka consumer group in this process (default); flink: a "
                          "PyFlink job on a local mini-cluster (env MOCKTRADE_JOB_ENGINE)")

    stack = commands.add_parser("stack", help="the real engines on this machine: up | down | status | env | "
                                              "kafka TOOL [ARGS]",
                                add_help=False)
    stack.add_argument("stack_args", nargs=argparse.REMAINDER,
                       help="up|down|status|env [--dir DIR] [--engines a,b] [--port KEY=PORT], or "
                            "kafka TOOL [ARGS] (e.g. console-consumer --topic trade_executed --from-beginning)")

    accounts = commands.add_parser("accounts", help="manage user accounts")
    account_commands = accounts.add_subparsers(dest="accounts_command", required=True, metavar="ACTION")
    create = account_commands.add_parser("create", help="register a user with starting cash")
    create.add_argument("user")
    create.add_argument("--cash", required=True, help="starting cash, e.g. 10000.00")
    create.add_argument("--password", action="store_true",
                        help="give the account a password for the console (prompted)")
    create.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of stdin")
    account_commands.add_parser("list", help="list users and their cash")
    passwd = account_commands.add_parser("passwd", help="set a user's password (prompted)")
    passwd.add_argument("user")
    passwd.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of stdin")
    reset = account_commands.add_parser(
        "reset", help="cancel a user's open orders and restore cash, empty holdings "
                      "(applied by the execution job in order with the user's other instructions)")
    reset.add_argument("user")
    reset.add_argument("--cash", help="cash to restart with (default: the starting cash)")

    token = commands.add_parser(
        "token", help="print a bearer token for a user; or manage the signing keys: "
                      "`token rotate`, `token retire KID`, `token keys`",
        description="`mocktrade token USER` prints a bearer token for USER. "
                    "`mocktrade token rotate [--retire-after SECONDS]` adds a new signing key "
                    "(new tokens use it); the previous keys keep verifying for SECONDS "
                    "(default: the token lifetime), then are retired. "
                    "`mocktrade token retire KID` retires a key at once. "
                    "`mocktrade token keys` lists the keys. Running services pick changes up "
                    "within seconds. (A user named rotate, retire or keys: `token -- NAME`.)")
    token.add_argument("user", help="a user id, or rotate / retire / keys")
    token.add_argument("kid", nargs="?", help="with retire: the key id to retire")
    token.add_argument("--retire-after", type=float, metavar="SECONDS",
                       help="with rotate: how long the previous keys keep verifying "
                            "(default: MOCKTRADE_TOKEN_TTL_SECONDS)")

    status = commands.add_parser("status", help="a live view of the running processes: health, rates, "
                                                "consumer lag, WebSocket clients, last error")
    status.add_argument("--once", action="store_true", help="print one table and exit")
    status.add_argument("--json", action="store_true", help="print one JSON document and exit")
    status.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                        help="seconds between refreshes, and the window of the rates (default 1)")

    verify = commands.add_parser("verify", help="reconcile portfolios, ledger, events and history")
    verify.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="retry until consistent or this many seconds pass (pipeline draining)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # `token -- rotate`: a user named like a key command.
    args.literal_user = "--" in (sys.argv[1:] if argv is None else argv)
    try:
        settings = Settings.from_env(args.data_dir)
        return _dispatch(args, settings)
    except (CommandError, ConfigError) as exc:
        print(f"mocktrade: {exc}", file=sys.stderr)
        return 2
    except DependencyUnavailable as exc:
        print(f"mocktrade: {_engine_down(exc.dependency, str(exc))}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130


# What the one-shot commands read; their engines are checked before they run.
_COMMAND_ROLES = {"accounts": {"portfolios"}, "accounts reset": {"log", "prices", "portfolios"},
                  "verify": {"log", "portfolios", "history"}}


def _engine_down(engine: str, detail: str = "") -> str:
    """One sentence: which engine is down and how to start it."""
    detail = detail.splitlines()[0][:160] if detail else ""
    return (f"{engine} is not reachable{f' ({detail})' if detail else ''}; start the engines with "
            f"`mocktrade stack up` (add --data-dir/--dir as you did for `up --distributed`)")


def _check_engines(settings: Settings, roles: set[str]) -> None:
    """Fail in one sentence, before any client retries, when a configured engine is down."""
    from . import readiness

    engines = readiness.configured_engines(settings, roles)
    if not engines:
        return
    status = asyncio.run(readiness.check(engines, settings.dynamodb_region))
    down = [name for name, state in status.items() if state != "ok"]
    if down:
        names = ", ".join(f"{name} at {engines[name]}" for name in down)
        raise CommandError(f"{names} {'is' if len(down) == 1 else 'are'} not reachable; start the engines "
                           f"with `mocktrade stack up` (add --data-dir as you did for `up --distributed`)")


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    roles = _COMMAND_ROLES.get(f"{args.command} {getattr(args, 'accounts_command', '')}",
                               _COMMAND_ROLES.get(args.command))
    if roles:
        _check_engines(settings, roles)
    if args.command == "up" and args.distributed:
        from .launcher import LaunchError, parse_replicas, run_distributed
        try:
            replicas = parse_replicas(args.replicas)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        try:
            return run_distributed(settings.with_overrides(host=args.host, port=args.port), replicas,
                                   Path(args.stack_dir) if args.stack_dir else None, args.keep_stack)
        except LaunchError as exc:
            raise CommandError(str(exc)) from None
    if args.command == "up":
        return _up(settings.with_overrides(host=args.host, port=args.port))
    if args.command == "job" and args.engine == "flink":
        if len(args.job) != 1 or args.job[0] == "all":
            raise CommandError("--engine flink runs one job per process: execution, persistence or triggers")
        return _flink_job(args.job[0], settings.with_overrides(host=args.host, port=args.port))
    if args.command == "serve":
        return _serve(args.service, settings.with_overrides(host=args.host, port=args.port))
    if args.command == "job":
        return _jobs(args.job, settings.with_overrides(host=args.host, port=args.port))
    if args.command == "stack":
        return _stack(settings, args.stack_args)
    if args.command == "accounts" and args.accounts_command == "create":
        password = _read_password(args.password_stdin) \
            if args.password or args.password_stdin else None
        return asyncio.run(_create_account(settings, args.user, args.cash, password))
    if args.command == "accounts" and args.accounts_command == "passwd":
        return asyncio.run(_passwd(settings, args.user, _read_password(args.password_stdin)))
    if args.command == "accounts" and args.accounts_command == "reset":
        return asyncio.run(_reset_account(settings, args.user, args.cash))
    if args.command == "accounts":
        return asyncio.run(_list_accounts(settings))
    if args.command == "token" and args.user in KEY_COMMANDS and not args.literal_user:
        return _signing_keys(settings, args.user, args.kid, args.retire_after)
    if args.command == "token":
        return _token(settings, args.user)
    if args.command == "verify":
        return asyncio.run(_verify(settings, args.wait))
    if args.command == "status":
        from .status import run as status
        return status(settings.data_dir, once=args.once, as_json=args.json, interval=args.interval)
    raise CommandError(f"unknown command {args.command}")


def _hold_data_dir(settings: Settings):
    """One platform per data directory: the embedded engines are single-writer."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    handle = open(settings.data_dir / "platform.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise CommandError(f"another mocktrade is already running on {settings.data_dir}") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _run_server(app, settings: Settings, name: str = "mocktrade") -> None:
    import uvicorn

    from .portcheck import is_free, taken_message

    # Say who holds the port, once, rather than uvicorn's "address already in use".
    if not is_free(settings.host, settings.port):
        raise CommandError(taken_message(settings.host, settings.port, name))

    from .services.http_protocol import LimitedHttpToolsProtocol
    from .services.limits import WS_MAX_MESSAGE_BYTES

    # httptools with caps on the request target (414) and headers (431); WebSocket
    # messages over 64 KiB close the connection with 1009 (services.limits).
    config = uvicorn.Config(app, host=settings.host, port=settings.port,
                            log_config=None, access_log=False, loop="uvloop",
                            http=LimitedHttpToolsProtocol, ws_max_size=WS_MAX_MESSAGE_BYTES,
                            ws="websockets-sansio", ws_per_message_deflate=False, lifespan="on",
                            timeout_graceful_shutdown=5,
                            # uvicorn would believe X-Forwarded-For from 127.0.0.1; the
                            # per-address limits decide that (MOCKTRADE_TRUSTED_PROXIES).
                            proxy_headers=False)
    uvicorn.Server(config).run()


def _start_tracing(process: str) -> None:
    """Traces on when OTEL_EXPORTER_OTLP_ENDPOINT (or the trace file) is set;
    the service name is OTEL_SERVICE_NAME, else mocktrade-<process>."""
    from . import tracing

    tracing.init(f"mocktrade-{process}")


def _serve(name: str, settings: Settings) -> int:
    from . import logs
    from .bootstrap import service_process

    logs.configure(settings.log_level)
    _start_tracing(name)
    _run_server(service_process(name, settings).app(), settings, name)
    return 0


def _jobs(names: Sequence[str], settings: Settings) -> int:
    from . import logs
    from .bootstrap import job_process

    logs.configure(settings.log_level)
    process = job_process(names, settings)
    _start_tracing(process.name)  # mocktrade-execution, mocktrade-persistence, mocktrade-jobs, ...
    _run_server(process.app(), settings, process.name)
    return 0


def _flink_job(name: str, settings: Settings) -> int:
    from . import logs
    from .jobs.flink.service import flink_job_process

    if not settings.kafka_bootstrap:
        raise CommandError("a Flink job reads Kafka: set MOCKTRADE_KAFKA_BOOTSTRAP (distributed mode)")
    logs.configure(settings.log_level)
    # This process submits and watches the job; the operators run in Flink's
    # Python workers, which forward trace context without making spans.
    _start_tracing(f"{name}-flink")
    _run_server(flink_job_process(name, settings).app(), settings, name)
    return 0


def _stack(settings: Settings, argv: list[str]) -> int:
    from .stack.__main__ import main as stack_main

    if argv and not any(arg == "--dir" or arg.startswith("--dir=") for arg in argv[:3]):
        # Right after the action: `kafka TOOL ARGS...` hands every later argument to the tool.
        argv = [argv[0], "--dir", str(settings.data_dir / "stack"), *argv[1:]]
    return stack_main(argv)


def _up(settings: Settings) -> int:
    from . import logs
    from .bootstrap import embedded_platform

    logs.configure(settings.log_level)
    _start_tracing("gateway")  # the one HTTP process; its jobs run in its job children
    lock = _hold_data_dir(settings)
    platform = embedded_platform(settings)
    base = f"http://{settings.host}:{settings.port}"
    demo = settings.demo_users[0]
    print(f"mocktrade {__version__} (embedded) on {base}\n"
          f"  API docs:    {base}/v1/docs\n"
          f"  prices:      ws://{settings.host}:{settings.port}/v1/marketdata (Phoenix channels)\n"
          f"  data dir:    {settings.data_dir.resolve()}\n"
          f"  console:     {base}/  (sign in as {demo}, password {settings.demo_password()})\n"
          f"  demo token for {demo}: {platform.resources.tokens.issue(demo)}", flush=True)
    from .process_file import record_embedded

    # DATA_DIR/processes.json, for `mocktrade status`.
    forget = record_embedded(settings.data_dir, settings.host, settings.port, platform.job_processes)

    async def keep() -> None:
        pass

    async def remove() -> None:  # at shutdown: uvicorn re-raises SIGTERM after it, past `finally`
        forget()
    platform.on_start(keep, remove)
    try:
        _run_server(platform.app(), settings)
    finally:
        forget()
        lock.close()
    return 0


def _read_password(from_stdin: bool) -> str:
    from .services.accounts import AccountError, check_password

    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        import getpass
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise CommandError("the passwords differ")
    try:
        return check_password(password)
    except AccountError as exc:
        raise CommandError(str(exc)) from None


async def _passwd(settings: Settings, user: str, password: str) -> int:
    from .bootstrap import open_portfolios
    from .services.accounts import AccountError, set_password

    store = open_portfolios(settings)
    try:
        if not await set_password(store, user, password):
            raise CommandError(f"user {user} has no account")
    except AccountError as exc:
        raise CommandError(str(exc)) from None
    finally:
        await store.close()
    print(f"password of {user} set")
    return 0


async def _create_account(settings: Settings, user: str, cash: str,
                          password: str | None = None) -> int:
    from .bootstrap import open_portfolios
    from .services.accounts import hash_password

    if not user or len(user) > 64 or not all(c.isalnum() or c in "-_.@" for c in user):
        raise CommandError("a user id is 1-64 letters, digits or - _ . @")
    try:
        amount = parse_cash(cash, "cash")
    except AmountError as exc:
        raise CommandError(f"--cash: {exc}") from None
    if amount < 0:
        raise CommandError("--cash must not be negative")
    store = open_portfolios(settings)
    try:
        await store.create_account(user, amount, datetime.now(timezone.utc),
                                   password_hash=await hash_password(password) if password else None)
    except AccountExists:
        raise CommandError(f"user {user} already has an account") from None
    finally:
        await store.close()
    print(f"created {user} with cash {fmt(amount)}")
    return 0


async def _reset_account(settings: Settings, user: str, cash: str | None) -> int:
    from .bootstrap import Resources, order_service
    from .services.orders import UnknownAccount

    try:
        amount = parse_cash(cash, "cash") if cash is not None else None
    except AmountError as exc:
        raise CommandError(f"--cash: {exc}") from None
    resources = Resources(settings)
    try:
        answer = await order_service(resources).reset(user, amount)
    except UnknownAccount:
        raise CommandError(f"user {user} has no account") from None
    except rules.OrderRejected as exc:
        raise CommandError(f"--cash: {exc}") from None
    finally:
        await resources.close()
    print(f"reset {answer['resetId']} of {user} sent; the execution job applies it")
    return 0


async def _list_accounts(settings: Settings) -> int:
    from .bootstrap import open_portfolios

    store = open_portfolios(settings)
    try:
        for account in await store.accounts():
            portfolio = await store.get(account.user_id)
            cash = fmt(portfolio.cash) if portfolio else "?"
            print(f"{account.user_id}\tcash {cash}\tstarting {fmt(account.starting_cash)}")
    finally:
        await store.close()
    return 0


KEY_COMMANDS = ("rotate", "retire", "keys")


def _signing_keys(settings: Settings, command: str, kid: str | None,
                  retire_after: float | None) -> int:
    """`token rotate | retire KID | keys` on the key ring (services.signing_keys)."""
    from .services import signing_keys

    path = settings.key_ring_path()
    if path is None:
        print("tokens are signed with MOCKTRADE_JWT_SECRET, a single key: set "
              "MOCKTRADE_JWT_KEYRING to a file to rotate keys (`token rotate` creates it, "
              "keeping the secret's tokens valid until they are retired)", file=sys.stderr)
        return 2
    try:
        if command == "rotate":
            after = settings.token_ttl_seconds if retire_after is None else retire_after
            if after < 0:
                print("--retire-after must not be negative", file=sys.stderr)
                return 2
            if not settings.jwt_keyring:
                settings.key_ring()  # the data dir's ring, seeded from an older jwt_secret
            fresh = signing_keys.rotate(path, after, legacy_secret=settings.jwt_secret or None)
            print(f"new signing key {fresh.kid} in {path}; previous keys retire in {after:g} s")
        elif command == "retire":
            if not kid:
                print("usage: mocktrade token retire KID (see `mocktrade token keys`)",
                      file=sys.stderr)
                return 2
            retired = signing_keys.retire(path, kid)
            print(f"retired {retired.kid}: its tokens are refused from now on")
        else:
            ring = settings.key_ring()
            current = ring.current().kid
            for key in ring.keys():
                state = "current" if key.kid == current else (
                    "retired" if not key.active(time.time()) else "verifying")
                print(f"{key.kid}\t{state}\tcreated {key.as_json()['createdAt']}\t"
                      f"retires {key.as_json()['retireAt'] or 'never'}")
    except signing_keys.KeyRingError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    return 0


def _token(settings: Settings, user: str) -> int:
    from .bootstrap import token_issuer

    print(token_issuer(settings).issue(user))
    return 0


async def _verify(settings: Settings, wait: float) -> int:
    from .bootstrap import open_event_log, open_history, open_portfolios
    from .services.reconciliation import reconcile

    if not settings.distributed and not (settings.data_dir / "portfolios.sqlite3").exists():
        raise CommandError(f"no mocktrade data in {settings.data_dir}")
    portfolios, history, event_log = open_portfolios(settings), open_history(settings), open_event_log(settings)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    try:
        while True:
            report = await reconcile(portfolios, history, event_log,
                                     drain_idle=5.0 if settings.distributed else 0.2)
            if report.ok or loop.time() >= deadline:
                break
            await asyncio.sleep(0.5)
    finally:
        for store in (event_log, history, portfolios):
            await store.close()
    for violation in report.violations:
        print(f"VIOLATION {violation}")
    verdict = "OK" if report.ok else f"FAILED ({len(report.violations)} violations)"
    print(f"verify {verdict}: {report.accounts} accounts, {report.orders} accepted orders, "
          f"{report.outcomes} outcomes")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
