#!/usr/bin/env bash
# Idempotent set-up: create (or reuse) .venv and install twinflow with both
# frameworks and the dev tools. A second run with an unchanged pyproject.toml
# installs nothing.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
# System packages of the tests: the browser test of the MLflow UI (Debian's Chromium
# and its driver), the shared-store tests (Debian's PostgreSQL server, started by
# the tests themselves) and the container tests (below). Installed when missing and
# we may (root with apt-get); else those tests skip, saying why.
missing=()
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium chromium-driver)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
# The container tests (tests/test_containers.py): Debian's Docker engine, and mmdebstrap
# for the base image that `twinflow images build` bootstraps where nothing can be pulled.
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    "${missing[@]}" >/dev/null
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.twinflow-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first and pinned: the CPU wheel; an unpinned torch pulls a CUDA build.
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[torch,tensorflow,serve,dev]"
echo "$want" > "$stamp"
