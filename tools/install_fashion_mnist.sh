#!/bin/sh
# Debian's package dataset-fashion-mnist, the Fashion-MNIST files that dmcore.lab.data.fashion_mnist reads
# from /usr/share/datasets/fashion-mnist, installed when they are missing (otherwise nothing is done).
# `make test` and `make book` call it through `make fashion-mnist`; it needs root or sudo, and Debian's
# package registry (the package is 31 MB).
set -eu
DIR=/usr/share/datasets/fashion-mnist
FILES="train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz"
present() {
    for f in $FILES; do
        [ -f "$DIR/$f" ] || return 1
    done
}
if present; then
    exit 0
fi
echo "Fashion-MNIST is missing from $DIR: installing Debian's package dataset-fashion-mnist with apt-get"
command -v apt-get >/dev/null 2>&1 || { echo "installing dataset-fashion-mnist needs apt-get (Debian or Ubuntu)" >&2; exit 1; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "installing dataset-fashion-mnist needs root or sudo" >&2; exit 1; }
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends dataset-fashion-mnist >/dev/null
present || { echo "dataset-fashion-mnist is installed but $DIR still lacks some of: $FILES" >&2; exit 1; }
echo "Fashion-MNIST installed in $DIR"
