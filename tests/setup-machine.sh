#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian 12 machine: the real peers the
# integration tests talk to (Mosquitto, pcscd with the vsmartcard virtual reader, Chromium for
# the console), the headers pyscard and evdev build against, a CJK font for receipt previews
# and console screenshots, and the Python packages in a virtual environment, .venv (Debian's
# own python3 refuses pip installs outside one: externally-managed-environment).
# Then: . .venv/bin/activate
set -euo pipefail
cd "$(dirname "$0")/.."

debs=(mosquitto pcscd vsmartcard-vpcd libpcsclite-dev swig gcc python3-dev
      libxkbcommon-dev xkb-data fonts-noto-cjk postgresql postgresql-client python3-venv
      chromium chromium-driver)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# pcscd wants its runtime directory; without systemd nobody else makes it.
mkdir -p /run/pcscd 2>/dev/null || true
# The hub's PostgreSQL backend is tested against a real server (trust auth on 127.0.0.1).
if ! pg_isready -q -h 127.0.0.1; then
  (service postgresql start || pg_ctlcluster 15 main start) >/dev/null 2>&1 || true
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 && break; sleep 1; done
fi

# Whichever python3 is first on PATH (Debian's, or a pyenv one) makes the venv; an existing
# .venv is reused, so a second run only brings the packages up to date.
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev,hardware,hub]"
