#!/usr/bin/env bash
# Debian packages the tests need: chromium for the browser tests (Playwright's own download cannot be used
# offline) and a C++ compiler for torch.compile's CPU backend. Needs root (or sudo).
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium g++ >/dev/null
/usr/bin/chromium --version
g++ --version | head -n 1
