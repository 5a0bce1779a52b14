"""Order acceptance benchmark against a real `mocktrade up` subprocess.

    .venv/bin/python bench/orders.py                     # defaults, about 1.5 minutes
    .venv/bin/python bench/orders.py --repeat 3          # fresh platform per run, medians
    .venv/bin/python bench/orders.py --rate 1000,500     # (b)+(c) at each rate in turn
    .venv/bin/python bench/orders.py --duration 10 --max-duration 8
    .venv/bin/python bench/orders.py --with-fanout 1000 --tick-rate 200   # about 2.5 minutes
    .venv/bin/python bench/orders.py --observability-matrix   # about 5 minutes

(a) max throughput: closed loop over N keep-alive connections on POST
    /v1/orders (buys and sells of many users, all answered 202), next to the
    bare GET /healthz of the same server in the same run; the ratio is the
    figure.
(b) latency at a fixed open-loop rate (default 1,000 orders/s for 20 s):
    sends are scheduled by time and latency counts from the scheduled send,
    so a server that falls behind shows it (no coordinated omission).
(c) accept -> executed and visible in the portfolio, for every order of (b):
    the execution ledger (portfolios.sqlite3, written in the same transaction
    as the portfolio) holds orderTimestamp (set when the order is accepted,
    just before it is published and answered) and executionTimestamp; and,
    joining on orderId, the time the client had its 202 in hand.
(d) with --with-fanout N: (b)+(c) at each rate again, now with N price
    subscribers (bench/fanout_clients.py, a process of their own) joined to
    the platform's WebSocket while the orders stream in, and their
    feed->client latency over the same window; printed side by side with
    (b)+(c) of the same run. --tick-rate sets the feed's ticks/s for the
    whole run (both sides), so the only difference is the subscribers.
(e) with --observability-matrix: instead of (a)-(d), the cost of metrics and
    traces: four fresh platforms in one run (metrics on/off x tracing on/off,
    MOCKTRADE_METRICS=off and OTEL_EXPORTER_OTLP_ENDPOINT), each measured with
    (a)'s closed loop on orders and (b) at the first --rate; a table of
    orders/s and p99 for each. "Tracing on" exports over OTLP/HTTP to a sink
    in this process that reads and discards every POST /v1/traces, so the
    export cost (encoding, HTTP) is paid as it would be to a real collector.

Users are registered in the platform's store before it starts (the
`mocktrade accounts create` code path, in-process because a subprocess per
user is slow; one user, bench-cli, goes through the real CLI commands), with
tokens from the same issuer as `mocktrade token`. Each user first buys 1,000
shares of one symbol so that its sells are always accepted. The per-user rate
limit is raised so that it is not what is measured.

Loopback only; bounded in time; the server is stopped at the end. The load
generator (bench/loadgen.py) runs in a process of its own. Prints figures; it
never passes or fails on time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import closing
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (CpuMeter, Platform, all_latencies, completed, eventlog_count,  # noqa: E402
                    machine, order_request, percentile, raw_request, report_open_loop, run_loadgen,
                    status_line, summary_ms)

GOAL_THROUGHPUT = 2000.0   # orders/s
GOAL_P99_MS = 25.0         # at 1,000/s
GOAL_EXECUTED_P99_MS = 50.0
GOAL_FANOUT_P99_MS = 50.0  # feed -> subscriber, with the orders running

SYMBOLS = ("MOCKAAPL", "MOCKMSFT", "MOCKGOOG", "MOCKAMZN", "MOCKNVDA", "MOCKMETA", "MOCKTSLA",
           "MOCKBRK", "MOCKJPM", "MOCKV", "MOCKJNJ", "MOCKWMT", "MOCKPG", "MOCKMA", "MOCKUNH",
           "MOCKHD", "MOCKDIS", "MOCKBAC", "MOCKXOM", "MOCKKO")


def iso_seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def wait_drained(platform: Platform, timeout: float = 120.0) -> tuple[int, float]:
    """Wait until every published order has its ledger entry: (orders, seconds)."""
    started = time.monotonic()
    while True:
        orders = eventlog_count(platform.data_dir, "trade_orders")
        if platform.ledger_count() >= orders:
            return orders, time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"execution stuck: {platform.ledger_count()} of {orders}")
        time.sleep(0.05)


def setup(platform: Platform, users: int) -> list[tuple[str, str, str]]:
    """(user, token, symbol) for every user; bench-cli goes through the CLI."""
    platform.cli("accounts", "create", "bench-cli", "--cash", "1000000000")
    cli_token = platform.cli("token", "bench-cli")
    names = [f"bench-{i:05d}" for i in range(users - 1)]
    platform.create_users(names, "1000000000")
    people = [("bench-cli", cli_token, SYMBOLS[0])]
    people += [(name, platform.token(name), SYMBOLS[(i + 1) % len(SYMBOLS)])
               for i, name in enumerate(names)]
    return people


def prime(platform: Platform, people: list[tuple[str, str, str]], connections: int) -> None:
    """Every user buys 1,000 shares of its symbol, so its sells are accepted."""
    requests = [["prime", order_request(platform.port, token, symbol, "1000", "BUY")]
                for _, token, symbol in people]
    result = run_loadgen({"port": platform.port, "requests": requests, "connections": connections,
                          "mode": "closed", "once": True, "duration": 600})
    if completed(result, "202") != len(people):
        raise RuntimeError(f"priming orders not all accepted: {status_line(result)}")
    wait_drained(platform)


def trading_requests(platform: Platform, people: list[tuple[str, str, str]],
                     quantity: str) -> list[list[str]]:
    """Every user's buy, then every user's sell, so connections interleave users."""
    buys = [["BUY", order_request(platform.port, token, symbol, quantity, "BUY")]
            for _, token, symbol in people]
    sells = [["SELL", order_request(platform.port, token, symbol, quantity, "SELL")]
             for _, token, symbol in people]
    return buys + sells


def max_throughput(platform: Platform, requests: list[list[str]], args) -> dict:
    health = [["healthz", raw_request("GET", platform.port, "/healthz")]]
    figures = {}
    for name, reqs in (("healthz", health), ("orders", requests)):
        meter = CpuMeter(platform.pid)
        orders_before = eventlog_count(platform.data_dir, "trade_orders")
        result = run_loadgen({"port": platform.port, "requests": reqs,
                              "connections": args.connections, "mode": "closed",
                              "warmup": 1.0, "duration": args.max_duration}, args.procs)
        cpu = meter.stop(result["client_cpu"])
        ok = completed(result, "202" if name == "orders" else "200")
        rate = ok / result["elapsed"]
        lat = all_latencies(result)
        print(f"  {name:8s} closed loop, {args.connections} connections, {args.max_duration:.0f} s: "
              f"{rate:8,.0f} /s  [{status_line(result)}]")
        print(f"           latency {summary_ms(lat)}")
        print(f"           {CpuMeter.line(cpu)}")
        # The server is bound by one event-loop thread; on a shared machine
        # the rate per core of server CPU is the steadier capacity figure.
        entry = {"rate": rate, "p50": percentile(lat, 0.5), "p99": percentile(lat, 0.99),
                 "cpu": cpu, "per_core": rate / max(cpu["server"], 1e-9)}
        print(f"           {entry['per_core']:,.0f} /s per core of server CPU")
        if name == "orders":
            published = eventlog_count(platform.data_dir, "trade_orders") - orders_before
            behind = eventlog_count(platform.data_dir, "trade_orders") - platform.ledger_count()
            _, drain = wait_drained(platform)
            # Server CPU over the load window per order published in it: acceptance,
            # execution and persistence together (when `behind` is 0, all of it).
            entry["server_cpu_per_order_ms"] = 1000 * cpu["server_cpu_s"] / max(1, published)
            print(f"           {published} orders published (warm-up included); execution "
                  f"{behind} behind when the load stopped, drained in {drain:.1f} s; "
                  f"server CPU {entry['server_cpu_per_order_ms']:.2f} ms per order")
            entry["backlog"], entry["drain"] = behind, drain
        figures[name] = entry
    if args.wrk:
        wrk_healthz(platform, args)
    ratio = figures["orders"]["rate"] / figures["healthz"]["rate"]
    print(f"  orders/healthz throughput ratio: {ratio:.2f}")
    figures["ratio"] = ratio
    return figures


def wrk_healthz(platform: Platform, args) -> None:
    """Cross-check of the load generator: wrk on the same bare endpoint."""
    wrk = shutil.which("wrk")
    if wrk is None:
        print("  (wrk not installed; no cross-check)")
        return
    meter = CpuMeter(platform.pid)
    out = subprocess.run([wrk, "-t1", f"-c{args.connections}", f"-d{args.max_duration:.0f}s",
                          f"{platform.base}/healthz"], capture_output=True, text=True).stdout
    cpu = meter.stop()
    rate = next((float(line.split()[1]) for line in out.splitlines()
                 if line.startswith("Requests/sec")), float("nan"))
    print(f"  healthz  wrk -t1 -c{args.connections} -d{args.max_duration:.0f}s (cross-check): "
          f"{rate:,.0f} /s, {rate / max(cpu['server'], 1e-9):,.0f} /s per core of server CPU "
          f"(other processes incl. wrk {cpu['other']:.2f} cores)")


def fixed_rate(platform: Platform, requests: list[list[str]], args, rate: float) -> dict:
    meter = CpuMeter(platform.pid)
    result = run_loadgen({"port": platform.port, "requests": requests,
                          "connections": args.open_connections, "mode": "open",
                          "rate": rate, "warmup": args.warmup, "duration": args.duration,
                          "capture": True}, args.procs)
    cpu = meter.stop(result["client_cpu"])
    _, drain = wait_drained(platform)
    lat, service, sent = report_open_loop(result, rate, args.duration, args.open_connections)
    print(f"    {CpuMeter.line(cpu)}")

    # (c) from the ledger: accepted (orderTimestamp) -> executed and in the portfolio.
    captured = {order_id: (scheduled, answered) for order_id, scheduled, answered in result["captured"]}
    accept_to_exec, answer_to_exec, statuses = [], [], {}
    with closing(platform.portfolio_db()) as conn:
        ids = list(captured)
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            rows = conn.execute(
                "SELECT orderId, status, orderTimestamp, executionTimestamp FROM execution_ledger "
                f"WHERE orderId IN ({','.join('?' * len(chunk))})", chunk).fetchall()
            for order_id, status, ordered, executed in rows:
                statuses[status] = statuses.get(status, 0) + 1
                done = iso_seconds(executed)
                accept_to_exec.append((done - iso_seconds(ordered)) * 1000)
                answer_to_exec.append((done - captured[order_id][1]) * 1000)
    early = sum(1 for v in answer_to_exec if v < 0)
    print(f"    accept->executed (ledger orderTimestamp -> executionTimestamp): "
          f"{summary_ms(accept_to_exec)}")
    print(f"    202 in client's hand -> executed: {summary_ms(answer_to_exec)}; "
          f"{100 * early / max(1, len(answer_to_exec)):.0f}% executed before the client had its 202")
    print(f"    outcomes: {statuses}; {len(captured) - sum(statuses.values())} of the 202s missing "
          f"from the ledger; drained {drain:.1f} s after the load")
    return {"rate": sent / result["elapsed"], "p50": percentile(lat, 0.5),
            "p99": percentile(lat, 0.99), "p999": percentile(lat, 0.999),
            "exec_p50": percentile(accept_to_exec, 0.5), "exec_p99": percentile(accept_to_exec, 0.99),
            "answer_exec_p99": percentile(answer_to_exec, 0.99),
            "non202": sent - completed(result, "202"), "cpu": cpu}


def with_fanout(platform: Platform, requests: list[list[str]], args, rate: float) -> dict:
    """(b)+(c) while N subscribers receive the price fan-out; their latency too."""
    clients = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("fanout_clients.py")), platform.ws_url,
         "--subscribers", str(args.with_fanout), "--symbols", str(len(SYMBOLS))],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        joined = clients.stdout.readline().strip()
        print(f"    fan-out: {joined} of {args.with_fanout} subscribers", flush=True)
        clients.stdin.write("start\n")
        clients.stdin.flush()
        figures = fixed_rate(platform, requests, args, rate)
        clients.stdin.write("stop\n")
        clients.stdin.flush()
        fanout = json.loads(clients.stdout.readline())
    finally:
        if clients.poll() is None:
            clients.kill()
        clients.wait()
    print(f"    fan-out feed->client over the same window: p50 {fanout['p50']:.2f} ms, p99 "
          f"{fanout['p99']:.2f} ms, p99.9 {fanout['p999']:.2f} ms, max {fanout['max']:.2f} ms; "
          f"{fanout['messages']:,} messages; dropped {fanout['dropped']}, other closes "
          f"{fanout['closed']}, join failures {fanout['join_failures']}")
    figures["fanout"] = fanout
    return figures


def run_once(args, index: int) -> dict:
    env = {"MOCKTRADE_FEED_TICKS_PER_SECOND": str(args.tick_rate)} if args.tick_rate else None
    with Platform(keep=args.keep, env=env) as platform:
        people = setup(platform, args.users)
        platform.start()
        platform.wait_for_prices(len(SYMBOLS))
        print(f"run {index + 1}: mocktrade up pid {platform.pid} on {platform.base}, data dir "
              f"{platform.data_dir}; {len(people)} users", flush=True)
        prime(platform, people, args.connections)
        requests = trading_requests(platform, people, args.quantity)
        print("(a) max throughput", flush=True)
        a = max_throughput(platform, requests, args)
        b = {}
        for rate in args.rates:
            print(f"(b)+(c) fixed rate {rate:,.0f} orders/s", flush=True)
            b[rate] = fixed_rate(platform, requests, args, rate)
        d = {}
        for rate in args.rates if args.with_fanout else ():
            print(f"(d) fixed rate {rate:,.0f} orders/s with {args.with_fanout} price subscribers",
                  flush=True)
            d[rate] = with_fanout(platform, requests, args, rate)
        return {"a": a, "b": b, "d": d}


# -- (e) the cost of metrics and traces --------------------------------------------

class OtlpSink:
    """A tiny OTLP/HTTP receiver: reads each POST /v1/traces whole, answers
    200 with an empty ExportTraceServiceResponse, keeps nothing but counts."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        sink = self
        self.requests = self.bytes = 0

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                sink.requests += 1
                sink.bytes += len(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


MATRIX = [("on", "off"), ("off", "off"), ("on", "on"), ("off", "on")]  # (metrics, tracing)


def matrix_cell(args, metrics: str, tracing: str, sink: OtlpSink) -> dict:
    env = {"MOCKTRADE_METRICS": metrics, "OTEL_EXPORTER_OTLP_ENDPOINT": "",
           "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "", "MOCKTRADE_TRACE_FILE": ""}
    if tracing == "on":
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.endpoint
    if getattr(args, "tick_rate", 0):  # --tick-rate, where this script has it
        env["MOCKTRADE_FEED_TICKS_PER_SECOND"] = str(args.tick_rate)
    exported = sink.requests, sink.bytes
    with Platform(keep=args.keep, env=env) as platform:
        people = setup(platform, args.users)
        platform.start()
        platform.wait_for_prices(len(SYMBOLS))
        print(f"(e) metrics {metrics}, tracing {tracing}: pid {platform.pid}", flush=True)
        prime(platform, people, args.connections)
        requests = trading_requests(platform, people, args.quantity)
        result = run_loadgen({"port": platform.port, "requests": requests,
                              "connections": args.connections, "mode": "closed",
                              "warmup": 1.0, "duration": args.max_duration}, args.procs)
        closed = {"rate": completed(result, "202") / result["elapsed"],
                  "p99": percentile(all_latencies(result), 0.99)}
        print(f"    closed loop: {closed['rate']:,.0f} orders/s, p99 {closed['p99']:.2f} ms "
              f"[{status_line(result)}]", flush=True)
        wait_drained(platform)
        fixed = fixed_rate(platform, requests, args, args.rates[0])
    requests_sent, bytes_sent = sink.requests - exported[0], sink.bytes - exported[1]
    if tracing == "on":
        print(f"    OTLP export: {requests_sent} requests, {bytes_sent / 1e6:.1f} MB")
    return {"closed": closed, "fixed": fixed, "otlp_requests": requests_sent}


def observability_matrix(args) -> None:
    sink = OtlpSink()
    try:
        cells = {(m, t): [matrix_cell(args, m, t, sink) for _ in range(args.repeat)]
                 for m, t in MATRIX}
    finally:
        sink.close()
    rate = args.rates[0]
    print(f"\nsummary: cost of metrics and traces ({args.repeat} run"
          f"{'s' if args.repeat > 1 else ''} per cell, medians; same machine, same run)")
    print(f"  {'metrics':8s} {'tracing':8s} {'closed-loop orders/s':>21s} {'closed p99 ms':>14s} "
          f"{f'p99 ms at {rate:,.0f}/s':>18s} {'accept->executed p99 ms':>24s}")
    base = median([c["closed"]["rate"] for c in cells[("off", "off")]])
    for (m, t), runs in cells.items():
        thr = median([c["closed"]["rate"] for c in runs])
        print(f"  {m:8s} {t:8s} {thr:>14,.0f} ({100 * (thr / base - 1):+4.0f}%) "
              f"{median([c['closed']['p99'] for c in runs]):>14.2f} "
              f"{median([c['fixed']['p99'] for c in runs]):>18.2f} "
              f"{median([c['fixed']['exec_p99'] for c in runs]):>24.2f}")
    if any(c["otlp_requests"] == 0 for (m, t), runs in cells.items() if t == "on" for c in runs):
        print("  WARNING: a tracing-on platform exported nothing; its figures are not tracing's")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=32, help="closed-loop connections")
    parser.add_argument("--max-duration", type=float, default=10.0, help="seconds per closed-loop run")
    parser.add_argument("--rate", default="1000",
                        help="open-loop orders/s; a comma-separated list runs each in turn")
    parser.add_argument("--duration", type=float, default=20.0, help="open-loop seconds measured")
    parser.add_argument("--warmup", type=float, default=2.0, help="open-loop seconds not measured")
    parser.add_argument("--open-connections", type=int, default=64)
    parser.add_argument("--quantity", default="1")
    parser.add_argument("--procs", type=int, default=1, help="load generator processes")
    parser.add_argument("--repeat", type=int, default=1, help="runs, each on a fresh platform")
    parser.add_argument("--wrk", action="store_true", help="also run wrk on /healthz, if installed")
    parser.add_argument("--keep", action="store_true", help="keep data dirs and server logs")
    parser.add_argument("--with-fanout", type=int, default=0, metavar="N",
                        help="(d): repeat (b)+(c) with N price subscribers connected")
    parser.add_argument("--tick-rate", type=float, default=0.0,
                        help="feed ticks/s for the whole run (default: the platform's)")
    parser.add_argument("--observability-matrix", action="store_true",
                        help="(e) only: metrics on/off x tracing on/off, side by side")
    args = parser.parse_args()
    args.rates = [float(r) for r in args.rate.split(",")]
    print(f"orders benchmark on {machine()}; load {open('/proc/loadavg').read().split()[:3]}")
    if args.observability_matrix:
        observability_matrix(args)
        return
    runs = [run_once(args, i) for i in range(args.repeat)]

    thr = median([r["a"]["orders"]["rate"] for r in runs])
    health = median([r["a"]["healthz"]["rate"] for r in runs])
    verdict = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    print(f"\nsummary ({args.repeat} run{'s' if args.repeat > 1 else ''}, medians):")
    print(f"  (a) orders {thr:,.0f}/s vs healthz {health:,.0f}/s (ratio "
          f"{median([r['a']['ratio'] for r in runs]):.2f}); per core of server CPU: orders "
          f"{median([r['a']['orders']['per_core'] for r in runs]):,.0f}/s, healthz "
          f"{median([r['a']['healthz']['per_core'] for r in runs]):,.0f}/s; server CPU per order "
          f"{median([r['a']['orders']['server_cpu_per_order_ms'] for r in runs]):.2f} ms; "
          f"goal >= {GOAL_THROUGHPUT:,.0f}/s: {verdict(thr >= GOAL_THROUGHPUT)}")
    for rate in args.rates:
        p99 = median([r["b"][rate]["p99"] for r in runs])
        exec99 = median([r["b"][rate]["exec_p99"] for r in runs])
        print(f"  (b) at {rate:,.0f}/s: p50 {median([r['b'][rate]['p50'] for r in runs]):.2f} ms, "
              f"p99 {p99:.2f} ms, p99.9 {median([r['b'][rate]['p999'] for r in runs]):.2f} ms; "
              f"goal p99 < {GOAL_P99_MS:.0f} ms (at 1,000/s): {verdict(p99 < GOAL_P99_MS)}")
        print(f"  (c) at {rate:,.0f}/s accept->executed: p50 "
              f"{median([r['b'][rate]['exec_p50'] for r in runs]):.2f} ms, p99 {exec99:.2f} ms "
              f"(from the client's 202: p99 "
              f"{median([r['b'][rate]['answer_exec_p99'] for r in runs]):.2f} ms); "
              f"goal p99 < {GOAL_EXECUTED_P99_MS:.0f} ms: {verdict(exec99 < GOAL_EXECUTED_P99_MS)}")
    for rate in args.rates if args.with_fanout else ():
        pick = lambda key, part="d": median([r[part][rate][key] for r in runs])  # noqa: E731
        fan99 = median([r["d"][rate]["fanout"]["p99"] for r in runs])
        print(f"  (d) at {rate:,.0f}/s, without | with {args.with_fanout} subscribers "
              f"({args.tick_rate or 'default'} ticks/s both): orders p99 {pick('p99', 'b'):.2f} | "
              f"{pick('p99'):.2f} ms (goal < {GOAL_P99_MS:.0f}); accept->executed p99 "
              f"{pick('exec_p99', 'b'):.2f} | {pick('exec_p99'):.2f} ms "
              f"(goal < {GOAL_EXECUTED_P99_MS:.0f}); fan-out p99 {fan99:.2f} ms "
              f"(goal < {GOAL_FANOUT_P99_MS:.0f}): {verdict(fan99 < GOAL_FANOUT_P99_MS)}")
    for i, r in enumerate(runs):
        at = "; ".join(f"at {rate:,.0f}/s p99 {r['b'][rate]['p99']:.2f} ms, exec p99 "
                       f"{r['b'][rate]['exec_p99']:.2f} ms, other processes "
                       f"{r['b'][rate]['cpu']['other']:.2f} cores" for rate in args.rates)
        print(f"  run {i + 1}: orders {r['a']['orders']['rate']:,.0f}/s (other processes "
              f"{r['a']['orders']['cpu']['other']:.2f} cores), healthz "
              f"{r['a']['healthz']['rate']:,.0f}/s; {at}")


if __name__ == "__main__":
    main()
