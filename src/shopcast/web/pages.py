"""The HTML pages and their static assets, shipped inside the package.

``/dashboard`` and ``/demo/shop`` are static pages (no data in them): they call the
JSON API with the key the user types in (kept in the tab's ``sessionStorage``) or
without one when ``auth.enabled`` is off, as in ``shopcast demo``. They and
``/ui/static/*`` are open paths (``api/auth.py``).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from shopcast.errors import NotFoundError

router = APIRouter(include_in_schema=False)

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
#: Pages are re-validated on every load; assets are cached for a short while.
_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
}


@cache
def asset_names() -> frozenset[str]:
    """The files under ``static/`` (no sub-folders: a request can only name one of these)."""
    folder = resources.files("shopcast.web").joinpath("static")
    return frozenset(
        p.name for p in folder.iterdir() if p.is_file() and any(p.name.endswith(s) for s in TYPES)
    )


@cache
def _read(name: str) -> bytes:
    return resources.files("shopcast.web").joinpath("static", name).read_bytes()


def _page(name: str) -> HTMLResponse:
    return HTMLResponse(_read(name), headers={**_HEADERS, "Cache-Control": "no-cache"})


@router.get("/dashboard")
def dashboard() -> HTMLResponse:
    return _page("dashboard.html")


@router.get("/dashboard/")
def dashboard_slash() -> RedirectResponse:
    return RedirectResponse("/dashboard")


@router.get("/demo/shop")
def shop() -> HTMLResponse:
    return _page("shop.html")


@router.get("/ui/static/{name}")
def asset(name: str) -> Response:
    if name not in asset_names():
        raise NotFoundError(f"no asset {name!r}")
    kind = TYPES[name[name.rfind(".") :]]
    return Response(
        _read(name), media_type=kind, headers={**_HEADERS, "Cache-Control": "max-age=60"}
    )
