#!/usr/bin/env bash
# The main job (README): pinned environment in .venv, then the DSTA demo on synthetic videos
# (~10 min on 2 cores; report in runs/demo/). Arguments go to demo.py, e.g. --quick or --out DIR.
source "$(dirname "$0")/_env.sh" test,dsta
exec .venv/bin/python examples/dsta/demo.py "$@"
