#!/usr/bin/env bash
# Create or update bench/.peers-venv: procrastinate, pgqueuer, their fastest drivers,
# matplotlib and psutil. It never touches the project's .venv (nightcrew's side of the
# benchmark runs there). Idempotent; `--upgrade` re-resolves to the current releases.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.peers-venv"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip 2> >(grep -v "is ignored" >&2)
fi
upgrade=()
if [ "${1:-}" = "--upgrade" ]; then upgrade=(--upgrade); fi
# procrastinate: psycopg 3 with its C build and psycopg_pool (PsycopgConnector).
# pgqueuer: asyncpg, the driver its docs measure fastest; uvloop comes with it.
"$venv/bin/python" -m pip install --quiet "${upgrade[@]}" \
    "procrastinate>=3,<4" "psycopg[binary,pool]>=3.2" \
    "pgqueuer>=1,<2" "asyncpg>=0.30" \
    "matplotlib>=3.8" "psutil>=5.9" \
    2> >(grep -v "is ignored" >&2)
"$venv/bin/python" - <<'PY'
from importlib.metadata import version
print(" ".join(f"{n}=={version(n)}" for n in
               ("procrastinate", "pgqueuer", "asyncpg", "psycopg", "uvloop", "matplotlib")))
PY
