"""The /metrics plumbing: route-template labels of the request-duration
middleware, and the merge of a peer's exposition under a `process` label."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.parser import text_string_to_metric_families
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from mocktrade import metrics
from mocktrade.services import metrics_http


def _count(method: str, route: str, status: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("mocktrade_http_request_duration_seconds_count",
                                     {"method": method, "route": route, "status": status}) or 0.0


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/things/{thingId}")
    async def thing(thingId: str):  # noqa: N803
        return {"id": thingId}

    @app.get("/boom")
    async def boom():
        raise RuntimeError("boom")

    async def files(scope, receive, send):
        await PlainTextResponse("file")(scope, receive, send)

    app.router.routes.append(Mount("/files", app=files))

    async def plain(_request):  # a Starlette Route, as POST /v1/orders is served
        return PlainTextResponse("ok", status_code=202)

    app.router.routes.insert(0, Route("/plain/{x}", plain, methods=["POST"]))
    metrics_http.install(app)
    return app


async def test_requests_are_labelled_by_route_template_and_status():
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=_app(), raise_app_exceptions=False),
                               base_url="http://test")
    before = {key: _count(*key) for key in [
        ("GET", "/things/{thingId}", "200"), ("GET", "unmatched", "404"),
        ("POST", "/things/{thingId}", "405"), ("GET", "/boom", "500"),
        ("GET", "/files", "200"), ("OTHER", "/things/{thingId}", "405"),
        ("POST", "/plain/{x}", "202")]}
    async with client:
        for n in ("a", "b", "c"):
            assert (await client.get(f"/things/{n}")).status_code == 200
        assert (await client.get("/no/such/path")).status_code == 404
        assert (await client.post("/things/a")).status_code == 405
        assert (await client.get("/boom")).status_code == 500
        assert (await client.get("/files/deep/name.txt")).status_code == 200
        assert (await client.request("BREW", "/things/a")).status_code == 405
        assert (await client.post("/plain/1")).status_code == 202
        assert (await client.post("/plain/2")).status_code == 202
        metrics_text = (await client.get("/metrics")).text
    after = {key: _count(*key) for key in before}
    assert {key: after[key] - before[key] for key in before} == {
        ("GET", "/things/{thingId}", "200"): 3, ("GET", "unmatched", "404"): 1,
        ("POST", "/things/{thingId}", "405"): 1, ("GET", "/boom", "500"): 1,
        ("GET", "/files", "200"): 1, ("OTHER", "/things/{thingId}", "405"): 1,
        ("POST", "/plain/{x}", "202"): 2}
    # Raw paths never become labels.
    for raw in ("/things/a", "/no/such/path", "/plain/1", "/files/deep"):
        assert raw not in metrics_text
    assert "mocktrade_http_request_duration_seconds_bucket" in metrics_text


async def test_metrics_is_not_in_the_openapi_document():
    assert "/metrics" not in _app().openapi()["paths"]


def test_a_peer_is_merged_family_by_family_with_a_process_label():
    local = CollectorRegistry()
    Counter("demo_events_total", "events", ["job"], registry=local).labels("a").inc(2)
    Histogram("demo_seconds", "seconds", buckets=(0.1, 1.0), registry=local).observe(0.5)
    peer = CollectorRegistry()
    Counter("demo_events_total", "events", ["job"], registry=peer).labels("b").inc(5)
    Histogram("demo_seconds", "seconds", buckets=(0.1, 1.0), registry=peer).observe(0.05)
    from prometheus_client import generate_latest

    text = metrics_http.merged_exposition(local, {"jobs": generate_latest(peer).decode(),
                                                  "gone": None}).decode()
    assert text.count("# TYPE demo_events_total counter") == 1
    assert text.count("# TYPE demo_seconds histogram") == 1
    families = {f.name: f for f in text_string_to_metric_families(text)}
    events = {(s.labels["process"], s.labels["job"]): s.value
              for s in families["demo_events"].samples}
    assert events == {("platform", "a"): 2.0, ("jobs", "b"): 5.0}
    counts = {s.labels["process"]: s.value for s in families["demo_seconds"].samples
              if s.name == "demo_seconds_count"}
    assert counts == {"platform": 1.0, "jobs": 1.0}
    up = {s.labels["process"]: s.value for s in families["mocktrade_metrics_source_up"].samples}
    assert up == {"platform": 1.0, "jobs": 1.0, "gone": 0.0}


def test_per_run_consumer_groups_are_named_by_kind():
    assert metrics.job_name("trade-triggers-book-0123456789ab") == "trade-triggers-book"
    assert metrics.job_name("trade-execution") == "trade-execution"
