"""Alembic migrations of the PostgreSQL backend (applied on open and by ``shopcast db upgrade``)."""
