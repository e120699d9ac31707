#!/bin/sh
# Debian's chromium and chromium-driver, for the browser test (tests/browser), installed when missing.
# `make test` calls it through `make browser`; it needs root or sudo, and Debian's package registry.
set -eu
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
"$(dirname "$0")/apt_install.sh" chromium chromium-driver fonts-dejavu-core
chromium --version
