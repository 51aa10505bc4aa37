"""Alembic environment for nightcrew's own schema.

Normally run through `nightcrew.migrate` (``nightcrew db upgrade``), which configures
Alembic in code and hands over an open connection in ``config.attributes["connection"]``;
no ``alembic.ini`` is needed. Given only ``sqlalchemy.url`` (for instance to write a new
revision with ``alembic.command.revision(nightcrew.migrate.make_config(url), ...)``), an
engine is made from that URL the same way. Offline mode (``--sql``) renders the SQL for
the URL's dialect.

The version table is nightcrew's own, ``nightcrew_alembic_version`` (the application's
Alembic keeps ``alembic_version``), and autogenerate compares only nightcrew's tables: both
come from `nightcrew.migrate.context_options`, shared with `nightcrew.migrate`. It is
created unqualified, so on PostgreSQL it lives in the first schema of the connection's
``search_path``, next to ``maintenance_tasks``. Moving nightcrew 0.1's row out of
``alembic_version`` and adopting existing tables are done by `nightcrew.migrate` before it
gets here; plain ``alembic`` commands do neither.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from nightcrew.migrate import context_options, open_engine
from nightcrew.models import Base
from nightcrew.store.database import normalize_url

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        **context_options(connection.dialect.name),
    )
    # Inside a transaction opened by the caller this is a no-op: the caller commits.
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    url = normalize_url(config.get_main_option("sqlalchemy.url") or "", is_async=False)
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **context_options(url.get_backend_name()),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        _run(connection)
        return
    engine = open_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
