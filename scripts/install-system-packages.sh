#!/usr/bin/env bash
# Debian packages the tests need: chromium for the browser tests (Playwright's own download cannot be used
# offline), a C++ compiler for torch.compile's CPU backend, and Orthanc with its DICOMweb plugin (a real PACS: the
# PACS tests start their own on a free loopback port, whatever the system service does), and Caddy with openssl
# (the README's TLS recipe, run by tests/test_tls_proxy.py on a free port with its own certificate; the system
# service is not used). Needs root (or sudo).
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium g++ orthanc orthanc-dicomweb caddy openssl >/dev/null
/usr/bin/chromium --version
# sed reads to the end where head would stop early: under pipefail the tool's SIGPIPE would fail the install
g++ --version | sed -n 1p
Orthanc --version | sed -n 1p
caddy version
