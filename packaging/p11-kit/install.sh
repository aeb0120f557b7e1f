#!/bin/sh
# Installs libhsm_pkcs11.so into p11-kit's module directory and registers it with p11-kit
# (hsm.module), so `p11-kit list-modules` shows the module and p11-kit-aware applications
# find it without configuration.
#
#   packaging/p11-kit/install.sh [path/to/libhsm_pkcs11.so]   (default: target/release/)
#
# Environment: DESTDIR (staging root, e.g. for a package build), P11_MODULE_DIR (default:
# p11-kit's module directory), P11_MODULE_CONFIG_DIR (default: /etc/pkcs11/modules, the
# administrator's p11-kit configuration; a distribution package uses
# /usr/share/p11-kit/modules instead).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
lib=${1:-$here/../../target/release/libhsm_pkcs11.so}
if [ ! -f "$lib" ]; then
    echo "install.sh: $lib not found (cargo build --release -p hsm-pkcs11)" >&2
    exit 1
fi

if [ -z "${P11_MODULE_DIR:-}" ]; then
    P11_MODULE_DIR=$(pkg-config --variable=p11_module_path p11-kit-1 2>/dev/null || true)
fi
if [ -z "${P11_MODULE_DIR:-}" ]; then
    multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null ||
        gcc -print-multiarch 2>/dev/null || true)
    P11_MODULE_DIR=/usr/lib${multiarch:+/$multiarch}/pkcs11
fi
P11_MODULE_CONFIG_DIR=${P11_MODULE_CONFIG_DIR:-/etc/pkcs11/modules}
DESTDIR=${DESTDIR:-}

install -d "$DESTDIR$P11_MODULE_DIR" "$DESTDIR$P11_MODULE_CONFIG_DIR"
install -m 0644 "$lib" "$DESTDIR$P11_MODULE_DIR/libhsm_pkcs11.so"
install -m 0644 "$here/hsm.module" "$DESTDIR$P11_MODULE_CONFIG_DIR/hsm.module"
echo "installed $DESTDIR$P11_MODULE_DIR/libhsm_pkcs11.so"
echo "installed $DESTDIR$P11_MODULE_CONFIG_DIR/hsm.module"
