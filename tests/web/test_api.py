"""The dashboard's and storefront's JSON/SVG endpoints and pages, in-process (TestClient).

Data: the small SIMULATED shop of ``tests/conftest.py``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shopcast.config import Settings
from shopcast.domain import Event
from shopcast.storage import open_store
from shopcast.web.stats import EventStats, RequestStats
from shopcast.web.svg import line_chart


def _now_events(user: str, items: list[str], kinds: list[str]) -> list[dict[str, Any]]:
    now = time.time()
    return [
        {"type": k, "user_id": user, "session_id": "s-web", "item_id": i, "timestamp": now - 1}
        for i, k in zip(items, kinds, strict=True)
    ]


def _wait_job(client: TestClient, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    seen: list[float] = []
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        seen.append(job["progress"])
        if job["status"] in ("done", "failed"):
            job["_seen"] = seen
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still running: {job}")


# -- pages and assets ------------------------------------------------------------------------


def test_pages_and_assets_are_served(client: TestClient) -> None:
    for path, marker in (("/dashboard", "Shopcast dashboard"), ("/demo/shop", "demo shop")):
        r = client.get(path)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        assert marker in r.text
        assert "default-src 'self'" in r.headers["content-security-policy"]
    js = client.get("/ui/static/common.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert client.get("/ui/static/shop.css").headers["content-type"].startswith("text/css")


@pytest.mark.parametrize("name", ["nope.js", "..%2Fpages.py", "pages.py", "__init__.py"])
def test_only_listed_assets_are_served(client: TestClient, name: str) -> None:
    r = client.get(f"/ui/static/{name}")
    assert r.status_code == 404
    assert "import" not in r.text


def test_every_script_and_style_the_pages_name_exists(client: TestClient) -> None:
    import re

    for page in ("/dashboard", "/demo/shop"):
        for ref in re.findall(r'(?:src|href)="(/ui/static/[^"]+)"', client.get(page).text):
            assert client.get(ref).status_code == 200, ref


# -- overview ------------------------------------------------------------------------------


def test_overview_counts_live_events_requests_and_coverage(shop_client: TestClient) -> None:
    before = shop_client.get("/v1/dashboard/overview").json()
    assert before["total_events"] > 0
    assert before["coverage"]["catalog_items"] == 80
    items = ["sim-00001", "sim-00002", "sim-00003"]
    r = shop_client.post(
        "/v1/events", json=_now_events("web-u1", items, ["view", "view", "add_to_cart"])
    )
    assert r.status_code == 202
    for _ in range(3):
        assert shop_client.get("/v1/users/web-u1/recommendations?k=5").status_code == 200
    o = shop_client.get("/v1/dashboard/overview").json()
    assert o["total_events"] >= before["total_events"] + 3
    assert sum(o["events_per_minute"]["view"][-2:]) >= 2  # sent a second ago
    assert sum(o["events_per_minute"]["add_to_cart"][-2:]) >= 1
    assert o["active"]["users"] >= 1
    assert o["requests"]["requests"] >= 3
    assert o["requests"]["latency_ms"]["p50"] is not None
    assert o["requests"]["latency_ms"]["p50"] <= o["requests"]["latency_ms"]["p99"]
    assert len(o["minutes"]) == len(o["events_per_minute"]["view"]) == 60
    assert 0 < o["coverage"]["event_coverage"] <= 1
    # recommendations served just now are logged as impressions (background batches)
    assert o["daily"][-1]["visitors"] >= 1


@pytest.mark.parametrize("name", ["events", "requests", "latency", "daily"])
def test_charts_are_svg(shop_client: TestClient, name: str) -> None:
    shop_client.get("/v1/trending")
    r = shop_client.get(f"/v1/dashboard/charts/{name}.svg")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("image/svg+xml")
    assert r.text.startswith("<svg") and r.text.endswith("</svg>")
    assert "<title" in r.text and "<desc" in r.text


def test_unknown_chart_is_404_json(shop_client: TestClient) -> None:
    r = shop_client.get("/v1/dashboard/charts/pie.svg")
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"


def test_line_chart_breaks_on_missing_values_and_escapes_text() -> None:
    svg = line_chart(
        {"a<script>": [1.0, 2.0, None, 3.0, 4.0]},
        ["x1", "x2", "x3", "x4", "x5"],
        title="t & <b>",
    )
    assert svg.count("<polyline") == 2  # the gap splits the line
    assert "<script>" not in svg and "a&lt;script&gt;" in svg
    assert "t &amp; &lt;b&gt;" in svg
    empty = line_chart({}, [], title="nothing", empty="no data yet")
    assert "no data yet" in empty


def test_event_stats_fold_incrementally_and_restart_after_deletions(settings: Settings) -> None:
    store = open_store("memory://")
    now = 1_800_000_000.0
    stats = EventStats(store, clock=lambda: now)

    def ev(n: int, kind: str = "view", user: str = "u1", ts: float = now - 30) -> Event:
        return Event(type=kind, user_id=user, item_id=f"i{n}", timestamp=ts, event_id=f"e{n}")

    store.events.append([ev(1), ev(2, "purchase"), ev(3, ts=now - 5 * 86400)])
    stats.refresh()
    stats.refresh()  # nothing new: nothing counted twice
    assert stats.total_events == 3
    per_minute = stats.events_per_minute()
    assert sum(per_minute["view"]) == 1 and sum(per_minute["purchase"]) == 1
    days = stats.daily()
    assert [d["visitors"] for d in days] == [1, 1]
    assert days[-1]["conversion"] == 1.0 and days[0]["conversion"] == 0.0
    store.events.append([ev(4, user="u2")])
    stats.refresh()
    assert stats.total_events == 4 and stats.active_users()["users"] == 2
    store.events.delete_user("u2")
    store.events.delete_user("u1")
    stats.refresh()
    assert stats.total_events == 0 and stats.active_users()["users"] == 0
    assert stats.coverage(10)["items_with_events"] == 0


def test_request_stats_percentiles() -> None:
    t = [1000.0]
    stats = RequestStats(clock=lambda: t[0])
    for ms in range(1, 101):
        stats.record(float(ms), 200)
    stats.record(5.0, 503)
    s = stats.summary(window_s=60)
    assert s["requests"] == 101 and s["errors"] == 1
    assert 49 <= s["latency_ms"]["p50"] <= 51 and s["latency_ms"]["p99"] >= 98
    t[0] += 3 * 3600  # an old sample leaves the window
    assert stats.summary(window_s=60)["requests"] == 0


# -- storefront catalog ------------------------------------------------------------------


def test_shop_items_filter_and_page(shop_client: TestClient) -> None:
    page = shop_client.get("/v1/shop/items?limit=10").json()
    assert page["total"] == 80 and len(page["items"]) == 10
    titles = [i["title"].lower() for i in page["items"]]
    assert titles == sorted(titles)
    nxt = shop_client.get("/v1/shop/items?limit=10&offset=10").json()
    assert not {i["item_id"] for i in nxt["items"]} & {i["item_id"] for i in page["items"]}
    shoes = shop_client.get("/v1/shop/items?category=shoes&limit=200").json()
    assert shoes["total"] > 0 and all("Shoes" in i["category"] for i in shoes["items"])
    found = shop_client.get("/v1/shop/items", params={"q": "Shoes item"}).json()
    assert found["total"] == shoes["total"]
    cats = shop_client.get("/v1/shop/categories").json()["categories"]
    assert sum(c["items"] for c in cats) == 80
    assert cats == sorted(cats, key=lambda c: (-c["items"], c["name"]))


def test_shop_items_bad_query_names_the_field(shop_client: TestClient) -> None:
    r = shop_client.get("/v1/shop/items?limit=5000")
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "limit"


def test_new_catalog_item_shows_up_in_the_shop(shop_client: TestClient) -> None:
    item = {"item_id": "new-1", "title": "Zebra lamp", "category": ["Home", "Lighting"]}
    assert shop_client.put("/v1/items/new-1", json=item).status_code == 200
    found = shop_client.get("/v1/shop/items?q=zebra").json()
    assert [i["item_id"] for i in found["items"]] == ["new-1"]


def test_live_session_shows_recent_events_and_cart(shop_client: TestClient) -> None:
    items = ["sim-00004", "sim-00005"]
    shop_client.post("/v1/events", json=_now_events("web-u2", items, ["view", "add_to_cart"]))
    s = shop_client.get("/v1/admin/users/web-u2/session").json()
    assert [e["item_id"] for e in s["events"]] == ["sim-00005", "sim-00004"]  # newest first
    assert [c["item_id"] for c in s["cart"]] == ["sim-00005"]
    assert s["events"][0]["title"]
    empty = shop_client.get("/v1/admin/users/nobody-at-all/session").json()
    assert empty["events"] == [] and empty["cart"] == []


# -- evaluation reports -----------------------------------------------------------------


def test_evaluation_reports_are_listed_and_served(shop_client: TestClient) -> None:
    assert shop_client.get("/v1/dashboard/evaluations").json()["reports"] == []
    folder = Path("bench/results/evaluate")  # relative to the test's working directory
    folder.mkdir(parents=True)
    report = {
        "benchmark": "q1",
        "dataset": "MovieLens 100K",
        "models": {"mf": {"RMSE": 0.91, "MAE": 0.72, "fit_s": 3.2}},
        "peers": {"surprise-svd": {"RMSE": 0.93, "MAE": 0.73}},
    }
    import json

    (folder / "q1.json").write_text(json.dumps(report))
    (folder / "q1-rmse.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    out = shop_client.get("/v1/dashboard/evaluations").json()
    (r,) = out["reports"]
    assert r["benchmark"] == "q1" and "RMSE" in r["columns"]
    assert [row["name"] for row in r["rows"]] == ["mf", "surprise-svd"]
    assert out["plots"] == ["q1-rmse.png"]
    png = shop_client.get("/v1/dashboard/evaluations/q1-rmse.png")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert shop_client.get("/v1/dashboard/evaluations/..%2Fq1.json").status_code == 404
    assert shop_client.get("/v1/dashboard/evaluations/other.png").status_code == 404


def test_evaluation_reports_come_from_the_configured_folder(
    settings: Settings, tmp_path: Path
) -> None:
    from shopcast.api import create_app

    folder = tmp_path / "reports"
    folder.mkdir()
    (folder / "q3.json").write_text('{"benchmark": "q3", "models": {"ease": {"NDCG@10": 0.1}}}')
    Path("bench/results/evaluate").mkdir(parents=True, exist_ok=True)  # the default: not read
    Path("bench/results/evaluate/q1.json").write_text('{"benchmark": "q1", "models": {}}')
    configured = settings.model_copy(update={"reports_dir": folder})
    with TestClient(create_app(configured)) as client:
        out = client.get("/v1/dashboard/evaluations").json()
        assert out["folder"] == str(folder)
        assert [r["benchmark"] for r in out["reports"]] == ["q3"]
        assert client.get("/v1/dashboard/evaluations/q3.json").status_code == 200
        assert client.get("/v1/dashboard/evaluations/q1.json").status_code == 404


# -- jobs ---------------------------------------------------------------------------------


def test_train_job_reports_progress_and_serves_the_new_model(shop_client: TestClient) -> None:
    before = shop_client.get("/v1/models").json()["serving"]
    r = shop_client.post("/v1/jobs", json={"kind": "train", "params": {"ranker": False}})
    assert r.status_code == 202 and r.json()["status"] in ("queued", "running")
    job = _wait_job(shop_client, r.json()["job_id"])
    assert job["status"] == "done", job
    assert job["progress"] == 1.0 and job["seconds"] > 0
    assert job["_seen"] == sorted(job["_seen"])  # progress never goes back
    version = job["result"]["version"]
    assert version != before
    assert shop_client.get("/v1/models").json()["serving"] == version
    assert shop_client.get("/v1/jobs").json()["jobs"][0]["job_id"] == job["job_id"]


def test_import_job_loads_the_simulated_shop(client: TestClient) -> None:
    assert client.get("/v1/shop/items").json()["total"] == 0
    r = client.post("/v1/jobs", json={"kind": "import", "params": {"source": "simulated"}})
    job = _wait_job(client, r.json()["job_id"])
    assert job["status"] == "done", job
    assert job["result"]["accepted"] > 1000
    assert client.get("/v1/shop/items").json()["total"] == 240  # items live at once


def test_failed_job_reports_its_error(client: TestClient) -> None:
    r = client.post("/v1/jobs", json={"kind": "import", "params": {"source": "no-such-set"}})
    job = _wait_job(client, r.json()["job_id"])
    assert job["status"] == "failed" and "no-such-set" in job["error"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "dance"}, "kind"),
        ({"params": {}}, "kind"),
        ({"kind": "train", "extra": 1}, "extra"),
        ([1, 2], "body"),
    ],
)
def test_bad_job_requests_name_the_field(client: TestClient, body: Any, field: str) -> None:
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == field


def test_unknown_job_is_404(client: TestClient) -> None:
    assert client.get("/v1/jobs/nope").status_code == 404


# -- access control -------------------------------------------------------------------------


def test_pages_are_open_but_data_needs_the_right_scope(tmp_path: Path) -> None:
    from shopcast.api import create_app
    from shopcast.privacy.apikeys import KeyStore

    settings = Settings(
        environment="test",
        database_url=f"sqlite:///{tmp_path / 'shop.db'}",
        model_dir=tmp_path / "models",
        auth={"enabled": True, "keys_path": tmp_path / "keys.db"},
    )
    keys = KeyStore(settings.auth.keys_path)
    read = {"X-API-Key": keys.create(["read"])[1]}
    admin = {"X-API-Key": keys.create(["admin"])[1]}
    keys.close()
    with TestClient(create_app(settings)) as c:
        for path in ("/dashboard", "/demo/shop", "/ui/static/dashboard.js"):
            assert c.get(path).status_code == 200, path
        assert c.get("/v1/dashboard/overview").status_code == 401
        assert c.get("/v1/dashboard/overview", headers=read).status_code == 200
        assert c.get("/v1/shop/items", headers=read).status_code == 200
        assert c.get("/v1/admin/users/u1/session", headers=read).status_code == 403
        assert c.get("/v1/admin/users/u1/session", headers=admin).status_code == 200
        job = {"kind": "import", "params": {"source": "no-such-set"}}
        assert c.post("/v1/jobs", json=job, headers=read).status_code == 403
        assert c.post("/v1/jobs", json=job, headers=admin).status_code == 202


def test_evaluate_job_without_the_dataset_fails_naming_it(tmp_path: Path) -> None:
    from shopcast.api import create_app

    settings = Settings(
        environment="test",
        database_url=f"sqlite:///{tmp_path / 'shop.db'}",
        model_dir=tmp_path / "models",
        data_path=tmp_path / "no-datasets",
        auth={"enabled": False},
    )
    with TestClient(create_app(settings)) as c:
        r = c.post("/v1/jobs", json={"kind": "evaluate", "params": {"benchmark": "q1"}})
        job = _wait_job(c, r.json()["job_id"])
        assert job["status"] == "failed"
        assert "no-datasets" in job["error"]
        r = c.post("/v1/jobs", json={"kind": "evaluate", "params": {"benchmark": "q9"}})
        assert "unknown benchmark 'q9'" in _wait_job(c, r.json()["job_id"])["error"]


@pytest.mark.slow
@pytest.mark.dataset
@pytest.mark.timeout(1800)
def test_evaluate_job_writes_a_report_the_models_panel_lists(
    settings: Settings, data_path: Path
) -> None:
    """REAL data: `shopcast evaluate q1 --quick` (MovieLens 100K) as a job."""
    from shopcast.api import create_app

    if not (data_path / "movielens-100k").is_dir():
        pytest.skip("MovieLens 100K is not under SHOPCAST_DATA")
    with TestClient(create_app(settings.model_copy(update={"data_path": data_path}))) as client:
        r = client.post("/v1/jobs", json={"kind": "evaluate", "params": {"benchmark": "q1"}})
        job = _wait_job(client, r.json()["job_id"], timeout=1800)
        assert job["status"] == "done", job
        listed = client.get("/v1/dashboard/evaluations").json()
    (report,) = listed["reports"]
    assert report["file"] == "q1-quick.json" and "RMSE" in report["columns"]
    assert report["rows"]


def test_tenants_see_only_their_own_catalog_stats_and_jobs(tmp_path: Path) -> None:
    from shopcast.api import create_app
    from shopcast.privacy.apikeys import KeyStore

    settings = Settings(
        environment="test",
        database_url=f"sqlite:///{tmp_path / 'shop.db'}",
        model_dir=tmp_path / "models",
        auth={"enabled": True, "keys_path": tmp_path / "keys.db"},
    )
    keys = KeyStore(settings.auth.keys_path)
    a = {"X-API-Key": keys.create(["admin"], tenant="shop-a")[1]}
    b = {"X-API-Key": keys.create(["admin"], tenant="shop-b")[1]}
    keys.close()
    with TestClient(create_app(settings)) as c:
        item = {"item_id": "a-1", "title": "Only in A", "category": ["A"]}
        assert c.put("/v1/items/a-1", json=item, headers=a).status_code == 200
        event = _now_events("ua", ["a-1"], ["view"])
        assert c.post("/v1/events", json=event, headers=a).status_code == 202
        assert c.get("/v1/shop/items", headers=a).json()["total"] == 1
        assert c.get("/v1/shop/items", headers=b).json()["total"] == 0
        assert c.get("/v1/shop/categories", headers=b).json()["categories"] == []
        assert c.get("/v1/dashboard/overview", headers=a).json()["total_events"] == 1
        assert c.get("/v1/dashboard/overview", headers=b).json()["total_events"] == 0
        job = {"kind": "import", "params": {"source": "no-such-set"}}
        job_id = c.post("/v1/jobs", json=job, headers=a).json()["job_id"]
        assert [j["job_id"] for j in c.get("/v1/jobs", headers=a).json()["jobs"]] == [job_id]
        assert c.get("/v1/jobs", headers=b).json()["jobs"] == []
        assert c.get(f"/v1/jobs/{job_id}", headers=b).status_code == 404
        assert c.get("/v1/admin/users/ua/session", headers=b).json()["events"] == []


def test_daily_chart_breaks_its_lines_over_days_without_events(settings: Settings) -> None:
    from shopcast.api import create_app

    day = 86_400.0
    with TestClient(create_app(settings)) as c:
        events = [
            {"type": "view", "user_id": "u1", "item_id": "i1", "timestamp": 1_780_000_000 + k * day}
            for k in (0, 1, 10)
        ]
        assert c.post("/v1/events", json=events).status_code == 202
        svg = c.get("/v1/dashboard/charts/daily.svg").text
    # conversion (no impressions: no CTR): a line over days 0-1, then day 10 alone, a dot
    assert svg.count("<polyline") == 1 and svg.count("<circle") == 1
    assert "…" in svg


def test_a_catalog_without_categories_is_browsed_by_genre(client: TestClient) -> None:
    movies = [
        {"item_id": "m1", "title": "Heat (1995)", "attributes": {"genres": ["Action", "Crime"]}},
        {"item_id": "m2", "title": "Babe (1995)", "attributes": {"genres": ["Comedy"]}},
        {"item_id": "m3", "title": "Speed (1994)", "attributes": {"genres": ["Action"]}},
    ]
    assert client.put("/v1/items", json=movies).status_code == 200
    cats = client.get("/v1/shop/categories").json()["categories"]
    assert cats[0] == {"name": "Action", "items": 2}
    assert {c["name"] for c in cats} == {"Action", "Crime", "Comedy"}
    action = client.get("/v1/shop/items?category=action").json()["items"]
    assert [i["item_id"] for i in action] == ["m1", "m3"]
