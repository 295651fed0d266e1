#!/usr/bin/env bash
# The main job (README): pinned environment in .venv, then the demo.
source "$(dirname "$0")/_env.sh" test,dsta
exec .venv/bin/python examples/layers_demo.py "$@"
