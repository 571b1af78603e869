#!/usr/bin/env bash
# Headless Chromium for tests/reports/test_gallery.py (`jade gallery` rendered by a real browser), installed
# with apt-get where this user can: as root, or with passwordless sudo. Elsewhere it says how and exits 0, so
# the other tests still run (the gallery test then fails, saying the same).
set -uo pipefail
if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then exit 0; fi
if [ "$(id -u)" = 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    echo "make browser: Chromium is not installed and this user cannot install it; as root: apt-get install -y chromium" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "make browser: no apt-get here; install Chromium with your package manager (the gallery test needs it)" >&2
    exit 0
fi
echo "make browser: installing Chromium (apt-get, about a minute)"
"${SUDO[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq chromium >/dev/null
