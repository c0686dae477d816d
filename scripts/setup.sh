#!/usr/bin/env bash
# Set up sotopia-pi in ./.venv on a fresh machine. Safe to run again (it only adds what is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first and pinned: this machine has a CPU build of 2.13.0 on disk, while an unpinned
# `torch` (pulled in by transformers/peft) would download a multi-GB CUDA build.
.venv/bin/python -m pip install --quiet torch==2.13.0
# llama-cpp-python builds from source the first time (about 6 minutes on 2 cores; pip caches it).
.venv/bin/python -m pip install --quiet -e ".[train,dev]"
