"""`mocktrade status`'s parsing: Prometheus text, counter rates, log lines."""

from __future__ import annotations

import json

from mocktrade import process_file
from mocktrade.status import last_error, parse_metrics, rate, table

MERGED = """\
# TYPE mocktrade_orders_total counter
mocktrade_orders_total{outcome="accepted",process="platform"} 5.0
mocktrade_orders_total{outcome="no_account",process="platform"} 1.0
mocktrade_orders_total{outcome="accepted",process="jobs"} 0.0
# TYPE mocktrade_feed_ticks_total counter
mocktrade_feed_ticks_total{process="platform"} 100.0
# TYPE mocktrade_events_processed_total counter
mocktrade_events_processed_total{job="trade-execution",process="jobs"} 9.0
mocktrade_events_processed_total{job="market-data",process="platform"} 100.0
# TYPE mocktrade_consumer_lag_records gauge
mocktrade_consumer_lag_records{group="market-data",partition="0",topic="market_data",process="platform"} 2.0
mocktrade_consumer_lag_records{group="market-data",partition="1",topic="market_data",process="platform"} 3.0
# TYPE mocktrade_ws_clients gauge
mocktrade_ws_clients{process="platform"} 4.0
"""


def test_a_merged_answer_counts_only_its_own_process():
    scrape = parse_metrics(MERGED, 1.0)
    assert scrape.orders_accepted == 5 and scrape.orders_rejected == 1
    assert scrape.ticks == 100 and scrape.ws_clients == 4
    assert scrape.events == {"market-data": 100}  # the jobs' series come from their own port
    assert scrape.lag == {"market-data": 5}  # summed over partitions


def test_rates_survive_a_restart():
    assert rate(30, 10, 2.0) == 10
    assert rate(4, 10, 2.0) == 2  # went down: restarted, counted 4 since
    assert rate(None, 10, 2.0) is None and rate(3, None, 2.0) is None


def test_last_error_reads_json_and_plain_lines(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("\n".join([
        json.dumps({"time": "t1", "level": "ERROR", "logger": "a", "message": "boom",
                    "exception": "Traceback...\nValueError: bad"}),
        "ERROR:    [Errno 98] address already in use",
        json.dumps({"time": "t2", "level": "INFO", "logger": "a", "message": "fine"}),
    ]) + "\n")
    assert last_error(log) == {"time": "", "level": "ERROR",
                               "text": "ERROR: [Errno 98] address already in use"}
    log.write_text(log.read_text().replace("ERROR:    [Errno 98]", "info"))
    assert last_error(log) == {"time": "t1", "level": "ERROR", "text": "a: boom (ValueError: bad)"}
    assert last_error(tmp_path / "missing.log") is None


def test_the_file_is_written_atomically_and_removed_by_its_owner(tmp_path):
    process_file.write(tmp_path, "distributed", "0.0.0.0", [{"name": "gateway", "port": 8000, "pid": 1}])
    assert process_file.running(tmp_path)["processes"][0]["name"] == "gateway"
    assert [p.name for p in tmp_path.iterdir()] == ["processes.json"]  # no temporary left
    process_file.remove(tmp_path)
    assert process_file.read(tmp_path) is None


def test_a_process_not_answering_renders():
    row = {"name": "execution", "pid": 7, "port": 8010, "health": "down", "failing": {},
           "orders": None, "ticks": None, "events": None, "lag": None, "ws_clients": None,
           "restarts": 2, "last_error": {"time": "", "level": "ERROR", "text": "x"}}
    grid = table({"mode": "distributed", "data_dir": "/d", "time": "now", "processes": [row]})
    assert grid.row_count == 1
