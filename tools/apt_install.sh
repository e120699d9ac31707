#!/bin/sh
# Install Debian packages with apt-get, as root or through sudo: tools/apt_install.sh PACKAGE...
# The shared step of tools/install_chromium.sh and tools/install_fashion_mnist.sh, which call it only
# when what they need is missing; it needs Debian's package registry.
set -eu
command -v apt-get >/dev/null 2>&1 || { echo "installing $* needs apt-get (Debian or Ubuntu)" >&2; exit 1; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "installing $* needs root or sudo" >&2; exit 1; }
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
