#!/usr/bin/env bash
# Runs the unit suite (tests/unit) on every Python the package supports: 3.10 (Ubuntu 22.04's)
# through 3.13. One virtual environment per version, .venv-py310 ... .venv-py313, made with that
# version's own interpreter and reused by later runs; pip's cache makes a first run cheap too.
# The unit suite needs the package, pytest, hypothesis and jsonschema: no torch, no server.
#
# Usage: scripts/test-pythons.sh [VERSION...]     e.g. scripts/test-pythons.sh 3.10 3.13
#   default: 3.10 3.11 3.12 3.13. An interpreter is pythonX.Y on PATH or a pyenv build
#   ($PYENV_ROOT/versions/X.Y.*, default ~/.pyenv). A missing one fails the run (name the versions
#   to test rather than silently testing fewer).
#   XR_PYTHON_JOBS: how many versions run at once (default 2: the suite is single-threaded).
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(3.10 3.11 3.12 3.13)
jobs="${XR_PYTHON_JOBS:-2}"
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT

find_python() {  # X.Y -> the path of an interpreter of that version, or nothing
  local v="$1" candidate
  for candidate in "$(command -v "python$v" 2>/dev/null || true)" \
    $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}/versions/$v".* 2>/dev/null | sort -V -r | sed 's|$|/bin/python|'); do
    if [ -n "$candidate" ] && [ -x "$candidate" ] &&
      [ "$("$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$v" ]; then
      echo "$candidate"
      return 0
    fi
  done
}

one() {  # X.Y: venv, install, unit suite; the exit status says whether it passed
  local v="$1" start=$SECONDS py venv
  py="$(find_python "$v")"
  if [ -z "$py" ]; then
    echo "Python $v: no interpreter (python$v on PATH, or a pyenv build of $v)"
    return 1
  fi
  venv=".venv-py${v/./}"
  if ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
    rm -rf "$venv"
    "$py" -m venv "$venv"
  fi
  # -qq: pip's warnings about this machine's index settings are noise here; errors still show.
  "$venv/bin/python" -m pip install -qq -e . 'pytest>=8' 'hypothesis>=6.100' 'jsonschema>=4.20'
  echo "Python $("$venv/bin/python" -c 'import platform; print(platform.python_version())'): tests/unit"
  "$venv/bin/python" -m pytest tests/unit -q -p no:cacheprovider
  echo "Python $v: passed in $((SECONDS - start)) s (install and tests)"
}

start=$SECONDS
running=0
for v in "${versions[@]}"; do
  (one "$v" >"$logs/$v.log" 2>&1 && touch "$logs/$v.ok") &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true

failed=()
for v in "${versions[@]}"; do
  echo "=== Python $v"
  grep -v '^WARNING: Location' "$logs/$v.log" || true
  [ -e "$logs/$v.ok" ] || failed+=("$v")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "unit suite FAILED on Python ${failed[*]}" >&2
  exit 1
fi
echo "unit suite passed on Python ${versions[*]} in $((SECONDS - start)) s"
