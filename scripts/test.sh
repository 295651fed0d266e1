#!/usr/bin/env bash
# The test command (README, .ci/run): pinned environment in .venv, then the whole suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/ops -x`.
source "$(dirname "$0")/_env.sh" test,dsta,export
exec .venv/bin/python -m pytest "${@:-tests}"
