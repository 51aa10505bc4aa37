"""The dashboard: server-rendered pages over the operator actions, on the admin API's app.

``create_api`` serves it at ``/ui`` (``mount_admin`` under its prefix): overview, tasks with
live progress, task detail, schedules, pipelines as graphs, workers, the audit log, and a
form per processor to create tasks. Sign-in trades an API token for a signed cookie
session (or uses the host's own rule); roles decide what is shown and allowed, exactly as
in the API, and every action is an operator action, audited the same way.

Templates are Jinja2; the only JavaScript is htmx and its SSE extension, shipped inside the
package (``static/vendor``), so nothing is fetched from elsewhere and nothing is built.
"""

from nightcrew.ui.app import UI_PREFIX, install

__all__ = ["UI_PREFIX", "install"]
