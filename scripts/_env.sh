# Sourced by the scripts: create or reuse .venv and install stattn with the given extras, pinned.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[stattn] creating virtual environment in .venv"
  "$PY" -m venv .venv
fi
EXTRAS="${1:-}"
STAMP=".venv/.stattn-installed${EXTRAS:+-${EXTRAS//,/-}}"
# reinstall only when the pins or the package metadata changed
if [ ! -f "$STAMP" ] || [ constraints.txt -nt "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ] \
   || [ examples/dsta/pyproject.toml -nt "$STAMP" ]; then
  echo "[stattn] installing pinned dependencies (constraints.txt)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt "torch==2.13.0"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".${EXTRAS:+[$EXTRAS]}"
  # the DSTA example as the package `dsta` (its dependencies are the dsta extra above)
  case ",$EXTRAS," in *,dsta,*)
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e examples/dsta ;;
  esac
  touch "$STAMP"
fi
