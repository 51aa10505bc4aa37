"""Hosting nightcrew inside a web framework's application.

- `nightcrew.contrib.fastapi`: a worker in the host app's event loop for the app's lifetime
  (seed 003's lifespan pattern), stopped gracefully at shutdown, and the admin API mounted;
- `nightcrew.contrib.flask`: an extension with the app-factory pattern (seed 002), enqueueing
  in the request's SQLAlchemy session, and ``flask nightcrew worker``.

Each imports its framework only when used; Flask is an optional extra (``nightcrew[flask]``).
"""
