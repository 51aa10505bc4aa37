#!/usr/bin/env bash
# Create or update the peers' venvs; it never touches the project's .venv (nightcrew's side
# of the benchmark runs there).
#
#   bench/.peers-venv     Python 3.11 (`$PYTHON`, default python3): procrastinate, pgqueuer,
#                         chancy, their drivers, matplotlib and psutil
#   bench/.peers312-venv  Python >= 3.12 (`$PYTHON312`, else python3.12, else pyenv's 3.12):
#                         oban, which requires 3.12; skipped with a note if none is found
#
# Idempotent and fast when complete: each venv keeps a stamp of the requirements it was
# installed with and pip runs only when they changed. `--upgrade` re-resolves to the
# current releases. Last line: the versions, or "oban: unavailable (...)".
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
upgrade=()
if [ "${1:-}" = "--upgrade" ]; then upgrade=(--upgrade); fi

# procrastinate: psycopg 3 with its C build and psycopg_pool (PsycopgConnector).
# pgqueuer: asyncpg, the driver its docs measure fastest; uvloop comes with it.
# chancy: psycopg 3 and psycopg_pool (its only dependencies); it shares the psycopg build.
main_reqs=(
    "procrastinate>=3,<4" "psycopg[binary,pool]>=3.2"
    "pgqueuer>=1,<2" "asyncpg>=0.30"
    "chancy>=0.26,<0.27"
    "matplotlib>=3.8" "psutil>=5.9"
)
# oban: its own dependencies (psycopg 3 binary, psycopg_pool, uvloop, orjson, erlpack; erlpack
# has no wheel and is compiled from source, so a C compiler is needed).
oban_reqs=("oban>=0.7,<0.8" "psutil>=5.9")

# install VENV PYTHON REQS...: make VENV with PYTHON if missing, pip-install REQS unless the
# stamp says they are already in.
install() {
    local venv="$1" python="$2"
    shift 2
    local stamp
    stamp="$venv/.bench-$(printf '%s\n' "$@" | sha256sum | cut -c1-16)"
    if [ ! -x "$venv/bin/python" ]; then
        "$python" -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --upgrade pip 2> >(grep -v "is ignored" >&2)
    fi
    if [ -f "$stamp" ] && [ ${#upgrade[@]} -eq 0 ]; then return 0; fi
    "$venv/bin/python" -m pip install --quiet "${upgrade[@]}" "$@" \
        2> >(grep -v "is ignored" >&2)
    rm -f "$venv"/.bench-* && touch "$stamp"
}

# find_python312: print an interpreter >= 3.12, or nothing.
find_python312() {
    local candidates=("${PYTHON312:-}" python3.12 python3.13 python3)
    if command -v pyenv > /dev/null; then
        candidates+=("$(pyenv root)"/versions/3.1[2-9]*/bin/python3)
    fi
    for c in "${candidates[@]}"; do
        [ -n "$c" ] || continue
        if "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2> /dev/null; then
            command -v "$c"
            return 0
        fi
    done
}

install "$here/.peers-venv" "${PYTHON:-python3}" "${main_reqs[@]}"
versions=$("$here/.peers-venv/bin/python" - << 'PY'
from importlib.metadata import version
names = ("procrastinate", "pgqueuer", "chancy", "asyncpg", "psycopg", "uvloop", "matplotlib")
print(" ".join(f"{n}=={version(n)}" for n in names))
PY
)

oban_note=""
py312="$(find_python312 || true)"
if [ -z "$py312" ] && [ ! -x "$here/.peers312-venv/bin/python" ]; then
    oban_note="oban: unavailable (no Python >= 3.12 found; set PYTHON312)"
elif ! install "$here/.peers312-venv" "${py312:-$here/.peers312-venv/bin/python}" \
    "${oban_reqs[@]}" > /tmp/bench-oban-install.log 2>&1; then
    oban_note="oban: unavailable (pip install failed, see /tmp/bench-oban-install.log)"
else
    oban_note="oban==$("$here/.peers312-venv/bin/python" -c \
        'from importlib.metadata import version; print(version("oban"))')"
fi
echo "$versions $oban_note"
