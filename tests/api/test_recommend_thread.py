"""Recommendations run on FastAPI's shared pool (``api.recommend_threads`` = 0, the
default) or on the tenant's own thread (1); answers are the same."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shopcast.config import Settings


@pytest.mark.parametrize("threads", [1, 0])
def test_recommendations_run_on_the_tenant_thread(settings: Settings, threads: int) -> None:
    assert Settings(environment="test").api.recommend_threads == 0  # the default
    from shopcast.api import create_app

    settings = settings.model_copy(
        update={"api": settings.api.model_copy(update={"recommend_threads": threads})}
    )
    seen: list[str] = []
    with TestClient(create_app(settings)) as client:
        engine = client.app.state.engine  # type: ignore[attr-defined]
        recommend = engine.recommend

        def spy(*args: Any, **kwargs: Any) -> Any:
            seen.append(threading.current_thread().name)
            return recommend(*args, **kwargs)

        engine.recommend = spy
        paths = [
            "/v1/users/ann/recommendations?k=3",
            "/v1/sessions/s1/recommendations",
            "/v1/trending",
        ]

        def get(path: str) -> int:
            return int(client.get(path).status_code)

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(get, paths * 8))
        assert codes == [200] * 24
        r = client.post("/v1/cart/recommendations", json={"items": ["x"]})
        assert r.status_code == 200
        tenant = client.app.state.tenants.get("default")  # type: ignore[attr-defined]
        assert (tenant.recommender is not None) == (threads > 0)
    assert len(seen) == 25
    if threads:
        assert set(seen) == {"shopcast-recommend-default_0"}
    else:
        assert not any(name.startswith("shopcast-recommend") for name in seen)
    assert tenant.recommender is None  # shut down with the app
