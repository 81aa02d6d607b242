"""Alembic environment: runs on the connection handed over by ``shopcast.storage._pg_migrate``.

There is no ``alembic.ini``: ``upgrade`` in ``_pg_migrate`` builds the configuration and puts
an open SQLAlchemy connection (whose ``search_path`` is the store's schema) in
``config.attributes["connection"]``.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
