"""The file registry under concurrent promotions (threads of one process, as the API's
continuous-learning thread and an admin request can be)."""

from __future__ import annotations

import itertools
import json
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shopcast.training.registry import ModelRegistry


def _fake_versions(model_dir: Path, n: int) -> list[str]:
    versions = []
    for i in range(n):
        version = f"v{i:03d}"
        (model_dir / version).mkdir(parents=True)
        (model_dir / version / "manifest.json").write_text(json.dumps({"created_at": i}))
        versions.append(version)
    return versions


def test_concurrent_promotions_form_one_chain(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    versions = _fake_versions(tmp_path, 40)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def promote_some(chunk: list[str]) -> None:
        start.wait()
        for version in chunk:
            try:
                registry.promote(version)
            except BaseException as e:  # collected: a failure in a thread must fail the test
                errors.append(e)

    threads = [threading.Thread(target=promote_some, args=(versions[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    history = registry.history()
    assert len(history) == len(versions)
    assert sorted(entry["version"] for entry in history) == versions
    # Each promotion saw the one before it as "previous": no lost update.
    assert history[0]["previous"] is None
    for before, after in itertools.pairwise(history):
        assert after["previous"] == before["version"]
    assert registry.current() == history[-1]["version"]
    assert not list(tmp_path.glob(".CURRENT.*"))  # no temporary file left behind


def test_hostile_version_names_are_not_found(tmp_path: Path) -> None:
    from shopcast.errors import NotFoundError

    registry = ModelRegistry(tmp_path)
    _fake_versions(tmp_path, 1)
    for bad in ("x" * 300, "../v000", ".hidden", "v000/../v000", "", "v 000"):
        with pytest.raises(NotFoundError):
            registry.path(bad)
    assert registry.path("v000") == tmp_path / "v000"


def test_long_version_through_the_api_is_404(client: TestClient) -> None:
    response = client.post(f"/v1/models/{'x' * 300}/promote")
    assert response.status_code == 404, response.text
    body = response.json()
    assert body["error"] == "not_found"
    assert "not found" in body["message"]
    assert "/" not in body["message"]  # no server path in the answer
