"""``/v1/experiments`` and ``shopcast experiments`` on the small SIMULATED shop."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from shopcast.cli import app as cli_app
from shopcast.config import Settings
from shopcast.feedback.tracker import FeedbackTracker, tracker_for
from shopcast.privacy.apikeys import KeyStore
from shopcast.storage import open_store
from shopcast.training.bundle import save_bundle, train_bundle
from shopcast.training.registry import ModelRegistry


def _second_version(settings: Settings) -> str:
    store = open_store(settings.database_url)
    try:
        bundle = train_bundle(store, settings.recommend, ranker=False)
    finally:
        store.close()
    save_bundle(bundle, settings.model_dir, promote=False)
    return bundle.version


def _spec(version: str, **kw: object) -> dict[str, object]:
    return {
        "experiment_id": "exp-a",
        "variants": [
            {"name": "control", "share": 1},
            {"name": "treatment", "share": 1, "model_version": version},
        ],
        **kw,
    }


def test_crud_report_stop_and_validation(shop_client: TestClient, settings: Settings) -> None:
    version = _second_version(settings)
    c = shop_client
    bad = c.post("/v1/experiments", json=_spec("v-nope"))
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "variants.1.model_version"
    bad = c.post("/v1/experiments", json={**_spec(version), "traffic": 2})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "traffic"
    assert c.post("/v1/experiments", json=_spec(version)).status_code == 201
    clash = c.post("/v1/experiments", json={**_spec(version), "experiment_id": "exp-b"})
    assert clash.status_code == 409 and clash.json()["error"] == "conflict"
    assert [e["experiment_id"] for e in c.get("/v1/experiments").json()["experiments"]] == ["exp-a"]
    # requests are served by the assigned variant, labelled, with a consistent version
    seen: dict[str, str] = {}
    for n in range(40):
        rec = c.get(f"/v1/users/sim-user-{n:05d}/recommendations").json()
        assert rec["experiment"] == "exp-a" and rec["variant"] in ("control", "treatment")
        seen[rec["variant"]] = rec["model_version"]
        again = c.get(f"/v1/users/sim-user-{n:05d}/recommendations").json()
        assert again["variant"] == rec["variant"]
    assert seen["treatment"] == version and seen["control"] != version
    report = c.get("/v1/experiments/exp-a/report").json()
    assert {v["name"]: v["users"] for v in report["variants"]}.keys() == {"control", "treatment"}
    assert sum(v["users"] for v in report["variants"]) == 40
    assert sum(v["impressions"] for v in report["variants"]) > 0
    assert report["winner"] is None  # no clicks: nothing significant
    promote = c.post("/v1/experiments/exp-a/promote", json={})
    assert promote.status_code == 409  # no winner yet
    stopped = c.post("/v1/experiments/exp-a/stop").json()
    assert stopped["status"] == "stopped"
    rec = c.get("/v1/users/sim-user-00001/recommendations").json()
    assert rec["experiment"] is None  # the layer re-read the directory
    assert c.get("/v1/experiments/nope").status_code == 404
    assert c.delete("/v1/experiments/exp-a").status_code == 204
    assert c.get("/v1/experiments").json()["experiments"] == []


def test_forced_promotion_makes_the_variant_current(
    shop_client: TestClient, settings: Settings
) -> None:
    version = _second_version(settings)
    c = shop_client
    assert c.post("/v1/experiments", json=_spec(version)).status_code == 201
    assert c.post("/v1/experiments/exp-a/promote", json={"variant": "treatment"}).status_code == 409
    out = c.post("/v1/experiments/exp-a/promote", json={"variant": "treatment", "force": True})
    assert out.status_code == 200, out.text
    assert ModelRegistry(settings.model_dir).current() == version
    assert c.get("/v1/models").json()["serving"] == version
    assert c.get("/v1/experiments/exp-a").json()["status"] == "promoted"


def test_diversity_variant(shop_client: TestClient) -> None:
    spec = {
        "experiment_id": "div",
        "variants": [{"name": "low", "share": 1}, {"name": "high", "share": 1, "diversity": 1.0}],
        "scenes": ["home"],
    }
    assert shop_client.post("/v1/experiments", json=spec).status_code == 201
    variants = set()
    for n in range(30):
        rec = shop_client.get(f"/v1/users/sim-user-{n:05d}/recommendations").json()
        variants.add(rec["variant"])
        other = shop_client.get(
            f"/v1/users/sim-user-{n:05d}/recommendations", params={"scene": "search"}
        ).json()
        assert other["experiment"] is None  # the experiment covers home only
    assert variants == {"low", "high"}
    out = shop_client.post("/v1/experiments/div/promote", json={"variant": "high", "force": True})
    assert out.status_code == 409 and "merchandising.diversity" in out.json()["message"]


def test_experiments_need_the_admin_scope(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shopcast.api import create_app

    secure = settings.model_copy(
        update={
            "auth": settings.auth.model_copy(
                update={"enabled": True, "keys_path": tmp_path / "k.db"}
            )
        }
    )
    keys = KeyStore(secure.auth.keys_path)
    _, read = keys.create(["read"])
    _, admin = keys.create(["admin"])
    keys.close()
    with TestClient(create_app(secure)) as c:
        assert c.get("/v1/experiments").status_code == 401
        assert c.get("/v1/experiments", headers={"X-API-Key": read}).status_code == 403
        assert c.get("/v1/experiments", headers={"X-API-Key": admin}).status_code == 200
        assert c.get("/v1/metrics", headers={"X-API-Key": read}).status_code == 200


def test_cli(settings: Settings, shop_client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    version = _second_version(settings)
    monkeypatch.setenv("SHOPCAST_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("SHOPCAST_MODEL_DIR", str(settings.model_dir))
    run = CliRunner().invoke
    out = run(
        cli_app,
        [
            "experiments",
            "create",
            "cli-exp",
            "-v",
            "A:1",
            "-v",
            f"B:1:{version}",
            "--scene",
            "home",
        ],
    )
    assert out.exit_code == 0, out.output
    out = run(cli_app, ["experiments", "create", "bad", "-v", "A"])
    assert out.exit_code == 2
    assert "cli-exp" in run(cli_app, ["experiments", "list"]).output
    for n in range(20):
        shop_client.get(f"/v1/users/sim-user-{n:05d}/recommendations")
    shop_client.app.state.engine.impressions.flush()  # type: ignore[attr-defined]
    out = run(cli_app, ["experiments", "report", "cli-exp"])
    assert out.exit_code == 0 and "winner: none yet" in out.output, out.output
    out = run(cli_app, ["experiments", "report", "cli-exp", "--json"])
    assert '"experiment": "cli-exp"' in out.output
    assert run(cli_app, ["experiments", "promote", "cli-exp"]).exit_code == 2  # no winner
    out = run(cli_app, ["experiments", "promote", "cli-exp", "--variant", "B", "--force"])
    assert out.exit_code == 0 and version in out.output
    assert "promoted" in run(cli_app, ["experiments", "list"]).output
    assert run(cli_app, ["experiments", "stop", "missing"]).exit_code == 2


def test_erasure_drops_the_users_cached_feedback(
    shop_client: TestClient, settings: Settings
) -> None:
    c = shop_client
    c.get("/v1/users/sim-user-00003/recommendations")
    c.get("/v1/users/sim-user-00004/recommendations")
    engine = c.app.state.engine  # type: ignore[attr-defined]
    engine.impressions.flush()
    tracker: FeedbackTracker = tracker_for(engine.store, settings)
    users = set(tracker.attributed(fresh=True)["user_id"].to_list())
    assert {"sim-user-00003", "sim-user-00004"} <= users
    assert c.delete("/v1/users/sim-user-00003").status_code == 200
    users = set(tracker.attributed(fresh=True)["user_id"].to_list())
    assert "sim-user-00003" not in users and "sim-user-00004" in users


def test_thompson_exploration_logs_propensities(
    shop_client: TestClient, settings: Settings
) -> None:
    from shopcast.api import create_app

    explore = settings.model_copy(
        update={
            "experiments": settings.experiments.model_copy(
                update={"exploration": "thompson", "exploration_share": 0.5, "exploration_seed": 1}
            )
        }
    )
    with TestClient(create_app(explore)) as c:
        explored = []
        for n in range(30):
            rec = c.get(f"/v1/users/sim-user-{n:05d}/recommendations").json()
            explored += [i for i in rec["items"] if i["explored"]]
            if rec["items"]:
                first = rec["items"][0]
                c.post(
                    "/v1/events",
                    json={"type": "click", "user_id": f"sim-user-{n:05d}",
                          "item_id": first["item_id"],
                          "recommendation_id": rec["recommendation_id"]},
                )  # fmt: skip
        assert len(explored) > 50
        assert all(0 < i["propensity"] <= 1 and i["source"] == "exploration" for i in explored)
        engine = c.app.state.engine  # type: ignore[attr-defined]
        engine.impressions.flush()
        logged = tracker_for(engine.store, explore).attributed(fresh=True)
        rows = logged.filter(logged["explored"])
        assert rows.height == len(explored) and rows["propensity"].min() > 0  # type: ignore[operator]
        body = c.get("/v1/metrics", params={"window_s": [60, 3600]}).json()
        assert [w["window_s"] for w in body["windows"]] == [60, 3600]
        by_source = {r["source"]: r for r in body["windows"][1]["by_source"]}
        assert by_source["exploration"]["impressions"] == len(explored)
        bad = c.get("/v1/metrics", params={"window_s": 0})
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"].startswith("window_s")


HOSTILE = ["../x", "a b", "x" * 300, "%00", "' OR 1=1 --", "UPPER", "-lead"]


def test_hostile_inputs_never_answer_5xx(shop_client: TestClient) -> None:
    c = shop_client
    for bad in HOSTILE:
        for method, path in (
            ("GET", f"/v1/experiments/{bad}"),
            ("GET", f"/v1/experiments/{bad}/report"),
            ("POST", f"/v1/experiments/{bad}/stop"),
            ("POST", f"/v1/experiments/{bad}/promote"),
            ("DELETE", f"/v1/experiments/{bad}"),
        ):
            r = c.request(method, path)
            assert r.status_code in (404, 405, 422), (method, path, r.status_code, r.text)
        r = c.post("/v1/experiments", json={**_spec("x"), "experiment_id": bad})
        assert r.status_code == 422
        r = c.post("/v1/experiments/ope", json={"model_version": bad})
        assert r.status_code in (404, 422), r.text
    for body in ([], {"variants": "x"}, {"experiment_id": "a", "variants": [{"name": "A"}]}, "x"):
        assert c.post("/v1/experiments", json=body).status_code == 422
    assert c.post("/v1/experiments/ope", json={"scene": "nowhere"}).status_code == 422
    assert c.post("/v1/experiments/ope", json={"k": 0}).status_code == 422
    ok = c.post("/v1/experiments/ope", json={})  # nothing explored yet: an empty estimate
    assert ok.status_code == 200 and ok.json()["explored_slots"] == 0
    assert c.get("/v1/metrics", params={"window_s": "abc"}).status_code == 422
