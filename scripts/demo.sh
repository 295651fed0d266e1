#!/usr/bin/env bash
# The main job (README): pinned environment in .venv, then the DSTA demo on synthetic videos
# (report in runs/demo/; its time: README.md). Arguments go to demo.py, e.g. --quick or --out DIR.
source "$(dirname "$0")/_env.sh" test,dsta
exec .venv/bin/python examples/dsta/demo.py "$@"
