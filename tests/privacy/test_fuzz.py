"""Schemathesis fuzzing of the OpenAPI spec, in-process against the ASGI app (slow; needs
the extra ``security``): no 5xx, and every answer matches the schema and content type.

Runs on the small SYNTHETIC simulated shop with a trained model, once with auth off (the
endpoints' own answers) and once with auth, pseudonymization and encryption on and an
admin key. ``SHOPCAST_FUZZ_EXAMPLES`` (default 30) examples per operation. (The
operations are looped here rather than with ``schema.parametrize``: its fixture loader
does not run under pytest 9.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from shopcast.config import Settings

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")

from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
)

pytestmark = pytest.mark.slow
FUZZ_EXAMPLES = int(os.environ.get("SHOPCAST_FUZZ_EXAMPLES", "30"))
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


def _app(root: Path, auth: bool) -> tuple[Any, dict[str, str]]:
    from shopcast.api import create_app
    from shopcast.ingest.importer import import_events, import_items, import_users
    from shopcast.privacy.apikeys import KeyStore
    from shopcast.simulate import simulate_shop
    from shopcast.storage import open_store
    from shopcast.training.bundle import save_bundle, train_bundle

    settings = Settings(
        environment="test",
        database_url=f"sqlite:///{root / 'shop.db'}",
        model_dir=root / "models",
        auth={"enabled": auth, "keys_path": root / "keys.db", "rate_limit": {"enabled": False}},
        privacy={"pseudonymize": auth, "encrypt_users": auth},
    )
    shop = simulate_shop(n_users=30, n_items=40, sessions_per_user=2, seed=5)
    store = open_store(settings.database_url)
    import_items(store, shop.items)
    import_users(store, shop.users)
    import_events(store, shop.events)
    save_bundle(train_bundle(store, settings.recommend), settings.model_dir)
    store.close()
    headers: dict[str, str] = {}
    if auth:
        keys = KeyStore(settings.auth.keys_path)
        headers = {"Authorization": f"Bearer {keys.create(['admin'])[1]}"}
        keys.close()
    return create_app(settings), headers


@pytest.mark.parametrize("auth", [False, True], ids=["auth-off", "auth-on"])
def test_api_conforms(auth: bool, tmp_path: Path) -> None:
    app, headers = _app(tmp_path, auth)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 20
    for operation in operations:

        @hypothesis.settings(
            max_examples=FUZZ_EXAMPLES,
            deadline=None,
            suppress_health_check=list(hypothesis.HealthCheck),
            derandomize=True,
            database=None,
        )
        @hypothesis.given(case=operation.as_strategy())
        def run(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            run()
        except Exception as exc:  # collect every operation's failure, then report all
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
