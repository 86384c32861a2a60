#!/usr/bin/env bash
# Set up everything audioclf needs on a Debian machine; safe to run again.
#   scripts/setup.sh          what running audioclf needs
#   scripts/setup.sh --test   that, plus what the tests need (a user-space PulseAudio for the live tests)
#   - Debian packages (ffmpeg, libsndfile1, libportaudio2, python3-venv) when missing
#   - a virtual environment in .venv with the locked package set (constraints.txt)
# Re-running skips whatever is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  "" | --test) [ $# -le 1 ] || { echo "setup: one option at most (--test)" >&2; exit 2; } ;;
  -h | --help) sed -n '2,7s/^# \{0,1\}//p' "$0"; exit 0 ;;
  *) echo "setup: unknown option '$1' (use --test, or nothing)" >&2; exit 2 ;;
esac

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV=.venv
STAMP="$VENV/.audioclf-installed"
DEB_PACKAGES=(ffmpeg libsndfile1 libportaudio2)
# The live tests play audio into a PulseAudio null sink that PortAudio reads through ALSA; sox writes
# the raw GSM case of the decode tests.
DEB_TEST_PACKAGES=(pulseaudio pulseaudio-utils libasound2-plugins sox)
[ "${1:-}" = "--test" ] && DEB_PACKAGES+=("${DEB_TEST_PACKAGES[@]}")

log() { printf 'setup: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else log "need root to run: $*"; return 1
  fi
}

apt_install() {
  command -v apt-get >/dev/null 2>&1 || { log "missing Debian packages ($*) and no apt-get: install them by hand"; return 1; }
  log "installing Debian packages: $*"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"

"$PYTHON" - <<'PY' || { log "audioclf needs Python 3.11 (found $("$PYTHON" --version 2>&1))"; exit 1; }
import sys
sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)
PY

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
    # Debian's own Python ships venv separately.
    rm -rf "$VENV"
    apt_install python3-venv
    "$PYTHON" -m venv "$VENV"
  fi
fi

want="$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  log "installing Python packages into $VENV (locked by constraints.txt)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -U pip wheel
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[test]"
  echo "$want" > "$STAMP"
else
  log "$VENV is up to date"
fi
