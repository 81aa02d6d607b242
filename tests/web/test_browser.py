"""The storefront and the dashboard in headless Chromium against a real server.

The server (``conftest.live_server``) runs ``shopcast serve`` over a small SIMULATED
shop with a trained model. Screenshots: ``bench/screenshots/`` at 1280×800 and 390×844.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.web.conftest import SecureServer, Server, shot

pytestmark = [pytest.mark.server, pytest.mark.browser]

WIDE = {"width": 1280, "height": 800}
PNG_1X1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c63f8cfc0f01f0005000201a5e1c5b70000000049454e44ae426082"
)
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def page_factory(browser: Any) -> Iterator[Any]:
    contexts: list[Any] = []
    errors: list[str] = []

    def make(viewport: dict[str, int]) -> Any:
        ctx = browser.new_context(viewport=viewport)
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(15_000)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        return page

    yield make
    for ctx in contexts:
        ctx.close()
    assert errors == [], f"JavaScript errors: {errors}"


def _ids(page: Any, shelf: str) -> list[str]:
    sel = f"[data-testid={shelf}][aria-busy=false] .card a"
    page.wait_for_selector(sel)
    return [str(a.get_attribute("data-item-id")) for a in page.query_selector_all(sel)]


def _accessible(page: Any) -> None:
    """axe-core (WCAG 2 A/AA rules and best practices) finds nothing on the page as shown."""
    axe = pytest.importorskip("axe_playwright_python.sync_playwright")
    violations = axe.Axe().run(page).response["violations"]
    found = [
        f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']][:3]}" for v in violations
    ]
    assert found == [], found


def _session(server: Server, user: str) -> dict[str, Any]:
    r = httpx.get(f"{server.url}/v1/admin/users/{user}/session", timeout=10)
    assert r.status_code == 200
    return dict(r.json())


def _push_stream_exists(server: Server) -> bool:
    """Whether the push engine's SSE endpoint is deployed (not a missing route)."""
    with httpx.Client(timeout=5) as http:
        try:
            with http.stream("GET", f"{server.url}/v1/users/probe/stream") as r:
                return r.status_code == 200
        except httpx.ReadTimeout:
            return True


# -- storefront ---------------------------------------------------------------------------


def test_storefront_shelves_follow_the_shopper_and_every_action_is_an_event(
    live_server: Server, page_factory: Any
) -> None:
    user = f"pw-{uuid.uuid4().hex[:8]}"
    page = page_factory(WIDE)
    page.goto(f"{live_server.url}/demo/shop?user={user}")
    before = _ids(page, "for-you")
    assert before, "the 'for you' shelf is empty"
    page.wait_for_selector("[data-testid=catalog] .card")
    shot(page, "shop-home-1280")
    _accessible(page)

    # open a product from the catalog grid (the last one: unlikely to be on the shelf)
    target = page.query_selector_all("[data-testid=catalog] .card a")[-1]
    item_id = target.get_attribute("data-item-id")
    target.click()
    page.wait_for_selector(f"[data-testid=product][data-item-id='{item_id}']")
    similar = _ids(page, "similar")
    assert similar and item_id not in similar
    page.wait_for_selector("[data-testid=bought-together][aria-busy=false]")
    after = _ids(page, "for-you")
    assert after != before, "the 'for you' shelf did not change after viewing a product"
    assert item_id not in after  # not the product on the screen
    shot(page, "shop-product-1280")
    _accessible(page)

    # from a shelf: a click carrying the recommendation id, then the view
    page.click("[data-testid=similar] .card a >> nth=0")
    page.wait_for_selector(f"[data-testid=product][data-item-id='{similar[0]}']")
    page.click("[data-testid=add-to-cart]")
    page.wait_for_selector("#cart-count:text('1')")
    page.click("[data-testid=cart-link]")
    page.wait_for_selector("[data-testid=buy]")
    page.wait_for_selector("[data-testid=complete-cart][aria-busy=false]")
    shot(page, "shop-cart-1280")
    _accessible(page)
    page.click("[data-testid=buy]")
    page.wait_for_selector("#thanks")
    assert page.evaluate("document.activeElement.id") == "thanks"  # focus moved for AT users

    live = _session(live_server, user)
    kinds = [(e["type"], e["item_id"]) for e in live["events"]]
    assert ("view", item_id) in kinds
    assert ("purchase", similar[0]) in kinds
    assert ("add_to_cart", similar[0]) in kinds
    assert live["cart"] == []  # bought


def test_push_arrives_as_a_toast(live_server: Server, page_factory: Any) -> None:
    user = f"pw-{uuid.uuid4().hex[:8]}"
    page = page_factory(WIDE)
    real = _push_stream_exists(live_server)
    if not real:
        # The push engine (issue 6) is not deployed on this server: feed the page the
        # contract's SSE message so the toast path is still exercised end to end.
        message = {
            "message_id": "m-test",
            "user_id": user,
            "trigger": "cart_abandonment",
            "channel": "live",
            "title": "Still thinking about it?",
            "body": "Your cart is waiting.",
            "items": [{"item_id": live_server.items[0], "title": "An item", "price": 9.5}],
            "created_at": time.time(),
        }
        body = f"event: push\ndata: {json.dumps(message)}\n\n"
        page.route(
            "**/v1/users/*/stream",
            lambda route: route.fulfill(
                status=200, headers={"Content-Type": "text/event-stream"}, body=body
            ),
        )
    page.goto(f"{live_server.url}/demo/shop?user={user}#item/{live_server.items[3]}")
    page.wait_for_selector("[data-testid=product]")
    if real:
        page.wait_for_selector("[data-testid=push-status][data-status=live]")
    page.click("[data-testid=add-to-cart]")  # then leave it: cart abandonment after ~1.5 s
    toast = page.wait_for_selector(".toast", timeout=20_000)
    assert toast.get_attribute("data-trigger") in ("cart_abandonment", "session_nudge")
    assert toast.inner_text().strip()
    shot(page, "shop-toast-1280")
    _accessible(page)
    if real:  # the push engine recorded the message and, from the page, that it was seen
        message_id = toast.get_attribute("data-message-id")
        deadline = time.monotonic() + 10
        while True:
            history = httpx.get(f"{live_server.url}/v1/users/{user}/push", timeout=10).json()
            mine = [m for m in history["messages"] if m["message_id"] == message_id]
            if mine and "open" in mine[0]["feedback"]:
                break
            assert time.monotonic() < deadline, history
            time.sleep(0.1)
    toast.query_selector("button.close").click()
    assert not page.query_selector(".toast")


def test_session_nudge_and_price_drop_arrive_live(live_server: Server, page_factory: Any) -> None:
    """The real push engine: three views in one category bring an in-session nudge (its
    delay set to 1.5 s); a price cut on a viewed item brings a price-drop message."""
    if not _push_stream_exists(live_server):
        pytest.skip("this server has no push stream (the toast test covers the page side)")
    user = f"pw-{uuid.uuid4().hex[:8]}"
    page = page_factory(WIDE)
    same_category = live_server.items[0:24:8]  # the simulated shop cycles its 8 categories
    page.goto(f"{live_server.url}/demo/shop?user={user}")
    page.wait_for_selector("[data-testid=push-status][data-status=live]")
    for item in same_category:
        page.goto(f"{live_server.url}/demo/shop?user={user}#item/{item}")
        page.wait_for_selector(f"[data-testid=product][data-item-id='{item}']")
        page.wait_for_selector("[data-testid=push-status][data-status=live]")
    nudge = page.wait_for_selector(".toast[data-trigger=session_nudge]", timeout=20_000)
    assert nudge.inner_text().strip()
    nudge.query_selector("button.close").click()

    cut = same_category[-1]
    record = httpx.get(f"{live_server.url}/v1/items/{cut}", timeout=10).json()
    record["price"] = round(record["price"] * 0.5, 2)
    assert (
        httpx.put(f"{live_server.url}/v1/items/{cut}", json=record, timeout=10).status_code == 200
    )
    drop = page.wait_for_selector(".toast[data-trigger=price_drop]", timeout=20_000)
    assert f"{record['price']:g}" in drop.inner_text()
    shot(page, "shop-price-drop-1280")
    # a click on the message's item opens it and is reported to the push engine
    message_id = drop.get_attribute("data-message-id")
    drop.query_selector("a").click()
    page.wait_for_selector("[data-testid=product]")
    deadline = time.monotonic() + 10
    while True:
        history = httpx.get(f"{live_server.url}/v1/users/{user}/push", timeout=10).json()
        feedback = {m["message_id"]: m["feedback"] for m in history["messages"]}
        if "click" in feedback.get(message_id, {}):
            break
        assert time.monotonic() < deadline, history
        time.sleep(0.1)


def test_storefront_on_a_phone_with_the_keyboard(live_server: Server, page_factory: Any) -> None:
    user = f"pw-{uuid.uuid4().hex[:8]}"
    page = page_factory(PHONE)
    page.goto(f"{live_server.url}/demo/shop?user={user}")
    page.wait_for_selector("[data-testid=catalog] .card")
    _ids(page, "for-you")
    # nothing wider than the screen but the scrollable shelves
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shot(page, "shop-home-390")
    _accessible(page)
    # keyboard: the skip link comes first and is visible when focused
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none")
    # every control has an accessible name
    unnamed = page.evaluate(
        """[...document.querySelectorAll('input, select, button, a')].filter(e => {
             const id = e.id && document.querySelector(`label[for="${e.id}"]`);
             return !(id || e.getAttribute('aria-label') || e.textContent.trim());
           }).map(e => e.outerHTML.slice(0, 80))"""
    )
    assert unnamed == []
    # open a product with the keyboard only
    link = page.query_selector("[data-testid=catalog] .card a")
    item_id = link.get_attribute("data-item-id")
    link.focus()
    page.keyboard.press("Enter")
    page.wait_for_selector(f"[data-testid=product][data-item-id='{item_id}']")
    page.wait_for_selector("[data-testid=similar][aria-busy=false]")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shot(page, "shop-product-390")
    _accessible(page)


# -- dashboard ----------------------------------------------------------------------------


def test_dashboard_panels(live_server: Server, page_factory: Any) -> None:
    page = page_factory(WIDE)
    httpx.get(f"{live_server.url}/v1/trending", timeout=10)  # a request for the latency panel
    page.goto(f"{live_server.url}/dashboard")
    page.wait_for_selector("[data-testid=kpi-total]")
    page.wait_for_selector("[data-chart] svg >> nth=3")  # all four charts
    page.wait_for_selector("[data-testid=online-metrics] table, [data-testid=online-metrics] .na")
    total = page.inner_text("[data-testid=kpi-total] .v").replace(",", "")
    assert int(total) > 0
    shot(page, "dashboard-overview-1280")
    _accessible(page)

    # an offline report as `shopcast evaluate` writes it (relative to the server's directory)
    reports = live_server.data_dir / "bench" / "results" / "evaluate"
    reports.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "q1", "dataset": "test report", "models": {"mf": {"RMSE": 0.93}}}
    (reports / "q1-quick.json").write_text(json.dumps(report))
    (reports / "q1-quick-rmse.png").write_bytes(PNG_1X1)

    # tabs follow the WAI-ARIA pattern: arrow keys move the selection
    page.focus("#tab-overview")
    page.keyboard.press("ArrowRight")
    assert page.get_attribute("#tab-models", "aria-selected") == "true"
    assert page.evaluate("document.activeElement.id") == "tab-models"
    page.wait_for_selector("[data-testid=registry] tr[data-version]")
    assert page.query_selector("[data-testid=registry] .badge")  # the version serving
    page.wait_for_selector("[data-testid=evaluations] td:has-text('0.93')")
    img = page.wait_for_selector("[data-testid=evaluations] img[src^='blob:']")
    page.wait_for_function("img => img.complete && img.naturalWidth === 1", arg=img)
    shot(page, "dashboard-models-1280")

    page.click("#tab-users")
    page.fill("#user-q", live_server.users[0])
    page.press("#user-q", "Enter")
    page.wait_for_selector("[data-testid=user-recs] tbody tr")
    page.wait_for_selector("[data-testid=user-profile] dl")
    assert page.query_selector("[data-testid=user-session] table, [data-testid=user-session] p")
    assert page.inner_text("[data-testid=user-pushes]").strip()
    shot(page, "dashboard-user-1280")
    _accessible(page)

    page.click("#tab-items")
    page.fill("#item-q", live_server.items[5])
    page.click("#item-form button")
    page.wait_for_selector("[data-testid=item-similar] tbody tr")
    page.wait_for_selector("[data-testid=item-record] dl")
    page.wait_for_selector("[data-testid=item-targets] table, [data-testid=item-targets] p")
    shot(page, "dashboard-item-1280")
    _accessible(page)

    spec = {
        "experiment_id": f"pw-{uuid.uuid4().hex[:6]}",
        "variants": [{"name": "control", "share": 1}, {"name": "diverse", "share": 1}],
        "scenes": ["cart"],
    }
    created = httpx.post(f"{live_server.url}/v1/experiments", json=spec, timeout=10)
    push_metrics = httpx.get(f"{live_server.url}/v1/push/metrics", timeout=10)
    page.click("#tab-experiments")
    page.wait_for_selector("[data-testid=push-out] > *")
    page.wait_for_selector("[data-testid=experiments-out] > *")
    if created.status_code == 201:  # the feedback loop's experiments are deployed
        rows = page.wait_for_selector(f"h3:has-text('{spec['experiment_id']}') + * tbody")
        assert rows.inner_text().count("\n") >= 1  # both variants
    else:
        assert created.status_code == 404
        assert "not available" in page.inner_text("[data-testid=experiments-out]")
    if push_metrics.status_code == 200:
        page.wait_for_selector("[data-testid=push-triggers], [data-testid=push-out] p")
    else:
        assert "not available" in page.inner_text("[data-testid=push-out]")
    shot(page, "dashboard-experiments-1280")
    _accessible(page)

    page.click("#tab-jobs")
    page.select_option("#job-kind", "train")
    page.click("#job-start")
    page.wait_for_selector(".job[data-status=done]", timeout=60_000)
    assert page.query_selector(".job progress").get_attribute("value") == "1"
    shot(page, "dashboard-jobs-1280")
    _accessible(page)
    trained = httpx.get(f"{live_server.url}/v1/models", timeout=10).json()["serving"]
    page.click("#tab-models")
    page.wait_for_selector("[data-testid=registry] tr[data-version] >> nth=1")
    # promote the older version from its row, then roll back to the new one
    older = page.query_selector(
        f"[data-testid=registry] tr[data-version]:not([data-version='{trained}'])"
    )
    version = older.get_attribute("data-version")
    older.query_selector("button").click()
    page.wait_for_selector(f"tr[data-version='{version}'] .badge")
    assert httpx.get(f"{live_server.url}/v1/models", timeout=10).json()["serving"] == version
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#rollback")
    page.wait_for_selector(f"tr[data-version='{trained}'] .badge")
    assert httpx.get(f"{live_server.url}/v1/models", timeout=10).json()["serving"] == trained


def test_dashboard_on_a_phone(live_server: Server, page_factory: Any) -> None:
    page = page_factory(PHONE)
    page.goto(f"{live_server.url}/dashboard")
    page.wait_for_selector("[data-chart] svg >> nth=3")  # all four charts
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shot(page, "dashboard-overview-390")
    _accessible(page)
    page.click("#tab-users")
    page.fill("#user-q", live_server.users[1])
    page.press("#user-q", "Enter")
    page.wait_for_selector("[data-testid=user-recs] tbody tr")
    shot(page, "dashboard-user-390")
    _accessible(page)


# -- API keys ------------------------------------------------------------------------------


def test_pages_ask_for_a_key_and_respect_its_scopes(
    secure_server: SecureServer, page_factory: Any
) -> None:
    url, keys = secure_server.url, secure_server.keys
    page = page_factory(WIDE)
    page.goto(f"{url}/dashboard")
    assert "API key" in page.wait_for_selector("#kpis .error").inner_text()
    page.fill("#api-key", keys["read"])
    page.click("#key-form button")
    page.wait_for_selector("[data-testid=kpi-total]")
    assert page.input_value("#api-key") == ""  # not left on screen
    # a read key sees aggregates, not a person's profile
    page.click("#tab-users")
    page.fill("#user-q", secure_server.users[0])
    page.press("#user-q", "Enter")
    assert "scope" in page.wait_for_selector("[data-testid=user-profile] .error").inner_text()
    page.fill("#api-key", keys["admin"])
    page.click("#key-form button")
    page.press("#user-q", "Enter")
    page.wait_for_selector("[data-testid=user-profile] dl")
    shot(page, "dashboard-user-with-key-1280")

    shopper = f"pw-{uuid.uuid4().hex[:8]}"
    shop = page_factory(PHONE)
    item = secure_server.items[7]
    shop.goto(f"{url}/demo/shop?user={shopper}#key={keys['shop']}&item/{item}")
    shop.wait_for_selector("[data-testid=product]")
    assert "key=" not in shop.url  # taken out of the address bar
    _ids(shop, "for-you")
    admin = {"X-API-Key": keys["admin"]}
    r = httpx.get(f"{url}/v1/admin/users/{shopper}/session", headers=admin, timeout=10)
    assert ("view", item) in [(e["type"], e["item_id"]) for e in r.json()["events"]]
    assert httpx.get(f"{url}/v1/admin/users/{shopper}/session", timeout=10).status_code == 401
    logs = "".join(p.read_text() for p in secure_server.data_dir.glob("server-*.log"))
    assert "GET /demo/shop" in logs and keys["shop"] not in logs  # the key never reached it
