#!/usr/bin/env bash
# Installs Debian's Chromium for the browser tests (tests/test_page.py drive it through PyPI playwright,
# with executable_path=/usr/bin/chromium, so `playwright install` is never needed).
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo unknown version)"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q chromium
/usr/bin/chromium --version
