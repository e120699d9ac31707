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
"$(dirname "$0")/apt_install.sh" dataset-fashion-mnist
present || { echo "dataset-fashion-mnist is installed but $DIR still lacks some of: $FILES" >&2; exit 1; }
echo "Fashion-MNIST installed in $DIR"
