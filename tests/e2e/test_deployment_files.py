"""The Docker deployment files stay valid and in step with the configuration."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"],
                                                 capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return None


def test_compose_file_is_valid():
    command = compose_command()
    if command is None:
        if os.environ.get("CI"):
            pytest.fail("docker compose is missing; .ci/run installs docker-compose")
        pytest.skip("needs docker compose or docker-compose (apt-get install docker-compose)")
    result = subprocess.run([*command, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_compose_sets_only_settings_that_exist():
    config = (ROOT / "src/mocktrade/config.py").read_text()
    known = set(re.findall(r'_(?:env|number)\("([A-Z_]+)"', config))
    used = set(re.findall(r"MOCKTRADE_([A-Z_]+):", (ROOT / "docker-compose.yml").read_text()))
    assert used and used <= known, used - known


def test_compose_runs_every_service_and_job():
    text = (ROOT / "docker-compose.yml").read_text()
    for service in ("gateway", "marketdata", "ingestion", "feed"):
        assert f'"serve", "{service}"' in text
    for job in ("execution", "persistence"):
        assert f'"job", "{job}"' in text


# -- the watching side: Prometheus, Grafana, Jaeger; the Flink cluster ------------

COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS = ROOT / "infra/prometheus/prometheus.yml"
DASHBOARD = ROOT / "infra/grafana/dashboards/mocktrade.json"
DATASOURCES = ROOT / "infra/grafana/provisioning/datasources/prometheus.yml"
FLINK_DOCKERFILE = ROOT / "infra/flink/Dockerfile"


def compose_services() -> dict:
    import yaml

    return yaml.safe_load(COMPOSE.read_text())["services"]


def mocktrade_services() -> set[str]:
    """The compose services that run a mocktrade command (serve or job)."""
    return {name for name, service in compose_services().items()
            if service.get("image") == "mocktrade:latest"}


def scrape_names(job: str) -> set[str]:
    import yaml

    config = yaml.safe_load(PROMETHEUS.read_text())
    scrape = next(s for s in config["scrape_configs"] if s["job_name"] == job)
    return {name for sd in scrape.get("dns_sd_configs", []) for name in sd["names"]} | {
        target.split(":")[0] for sc in scrape.get("static_configs", []) for target in sc["targets"]}


def dashboard_expressions() -> list[str]:
    return [target["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"]
            for target in panel["targets"]]


def exported_python_series() -> set[str]:
    """Every series name the platform's instruments can export (a histogram
    as _bucket/_sum/_count, a counter as _total), from prometheus_client's
    registry: labelled families with no child yet have no sample to read."""
    import prometheus_client

    import mocktrade.metrics  # noqa: F401 - registers the instruments
    import mocktrade.services.metrics_http  # noqa: F401

    names = set()
    for family in prometheus_client.REGISTRY.collect():
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                    "summary": ("_sum", "_count", "")}.get(family.type, ("",))
        names |= {family.name + suffix for suffix in suffixes}
    return names


def test_compose_with_the_flink_profile_is_valid():
    command = compose_command()
    if command is None:
        pytest.skip("needs docker compose or docker-compose")
    result = subprocess.run([*command, "-f", str(COMPOSE), "--profile", "flink", "config", "--services"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert {"jobmanager", "taskmanager", "flink-jobs", "prometheus", "grafana", "jaeger"} <= set(
        result.stdout.split())


def test_prometheus_scrapes_every_mocktrade_service_of_the_compose_file():
    services = mocktrade_services()
    assert {"gateway", "marketdata", "ingestion", "feed", "execution", "persistence", "triggers"} <= services
    assert scrape_names("mocktrade") == services
    flink = {name for name, service in compose_services().items() if "flink" in service.get("profiles", [])
             and service.get("command") != ["bash", "/opt/mocktrade/submit-jobs.sh"]}
    assert flink and scrape_names("flink") == flink
    assert "./infra/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in \
        compose_services()["prometheus"]["volumes"]


def test_every_mocktrade_series_the_dashboard_queries_is_exported_by_the_code():
    queried = {name for expr in dashboard_expressions() for name in re.findall(r"\bmocktrade_\w+", expr)}
    exported = exported_python_series()
    assert queried and queried <= exported, queried - exported
    # What the issue asks the dashboard to show.
    for metric in ("mocktrade_orders_total", "mocktrade_order_accept_seconds_bucket",
                   "mocktrade_order_execution_lag_seconds_bucket", "mocktrade_consumer_lag_records",
                   "mocktrade_ws_clients", "mocktrade_dead_letters_total",
                   "mocktrade_events_processed_total", "mocktrade_http_request_duration_seconds_bucket"):
        assert metric in queried, metric


def test_every_flink_series_the_dashboard_queries_is_an_operator_metric():
    """tests/flink/test_flink_metrics.py checks these names in a real scrape."""
    from mocktrade.jobs.flink.metrics import OPERATOR_METRICS, prometheus_name

    queried = {name for expr in dashboard_expressions() for name in re.findall(r"\bflink_\w+", expr)}
    assert queried and queried <= {prometheus_name(m) for m in OPERATOR_METRICS}


def test_grafana_provisions_the_datasource_the_dashboard_names():
    import yaml

    uids = {source["uid"] for source in yaml.safe_load(DATASOURCES.read_text())["datasources"]}
    dashboard = json.loads(DASHBOARD.read_text())
    used = {panel["datasource"]["uid"] for panel in dashboard["panels"]} | {
        target["datasource"]["uid"] for panel in dashboard["panels"] for target in panel["targets"]}
    assert used <= uids
    volumes = compose_services()["grafana"]["volumes"]
    assert "./infra/grafana/dashboards:/var/lib/grafana/dashboards:ro" in volumes
    assert "./infra/grafana/provisioning:/etc/grafana/provisioning:ro" in volumes


def test_every_mocktrade_service_exports_traces_to_jaeger():
    services = compose_services()
    assert services["jaeger"]["image"].startswith("jaegertracing/all-in-one:")
    for name in mocktrade_services() | {"jobmanager", "taskmanager"}:
        assert services[name]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318", name


def test_official_images_only():
    for name, service in compose_services().items():
        image = service.get("image", "")
        if "build" in service:
            continue  # ours, built from the Dockerfiles below
        assert image.split(":")[0] in {
            "apache/kafka", "redis", "amazon/dynamodb-local", "docker.elastic.co/elasticsearch/elasticsearch",
            "clickhouse/clickhouse-server", "prom/prometheus", "grafana/grafana", "jaegertracing/all-in-one",
        }, (name, image)
        assert ":" in image and not image.endswith(":latest"), (name, image)


def test_the_flink_image_matches_the_pinned_pyflink():
    pinned = re.search(r"^apache-flink==([\d.]+)$", (ROOT / "infra/flink/requirements.txt").read_text(),
                       re.MULTILINE).group(1)
    dockerfile = FLINK_DOCKERFILE.read_text()
    version = re.search(r"^ARG FLINK_VERSION=([\d.]+)$", dockerfile, re.MULTILINE).group(1)
    assert version == pinned
    assert re.search(r"^FROM flink:\$\{FLINK_VERSION\}-scala_2\.12-java17$", dockerfile, re.MULTILINE)
    # The Kafka connector's Flink line (3.3.0-1.20) is the same minor version.
    connector = re.search(r"<flink.kafka.connector.version>[\d.]+-([\d.]+)<",
                          (ROOT / "infra/flink/pom.xml").read_text()).group(1)
    assert pinned.startswith(connector + ".")
    # The one-shot submitter runs every Flink job the job file knows.
    from mocktrade.jobs.flink.options import JOBS

    submit = (ROOT / "infra/flink/submit-jobs.sh").read_text()
    assert f"for job in {' '.join(JOBS)}; do" in submit
    assert compose_services()["flink-jobs"]["command"] == ["bash", "/opt/mocktrade/submit-jobs.sh"]
