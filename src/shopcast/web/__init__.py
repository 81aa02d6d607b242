"""The web UI served by the API itself: the dashboard (``/dashboard``) and the demo
storefront (``/demo/shop``), the small JSON endpoints they need, and long jobs.

- ``pages``: the HTML pages and static assets (package data, nothing fetched at run time).
- ``api``: dashboard statistics, SVG charts, evaluation reports, live sessions, catalog
  browsing, ``/v1/jobs``.
- ``stats``: incremental event statistics and the request timer middleware.
- ``svg``: server-rendered charts.
- ``jobs``: the background job runner (import, train, evaluate).
"""

from __future__ import annotations

from fastapi import APIRouter

from shopcast.web.api import router as api_router
from shopcast.web.pages import router as pages_router
from shopcast.web.stats import RequestTimer

router = APIRouter()
router.include_router(pages_router)
router.include_router(api_router)

__all__ = ["RequestTimer", "router"]
