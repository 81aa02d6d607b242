"""The HTTP API (FastAPI): ``create_app(settings)``."""

from fastapi import FastAPI

from shopcast.api.app import create_app

__all__ = ["app_from_env", "create_app"]


def app_from_env() -> FastAPI:
    """The app over the settings of the environment (``shopcast serve --workers N``:
    each uvicorn worker process builds its own)."""
    from shopcast.config import load_settings

    return create_app(load_settings())
