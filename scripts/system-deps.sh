#!/bin/sh
# Installs the Debian packages the test suite uses when it can (root on Debian), and says plainly when it
# cannot. Nothing here is needed to run the lab or the demo without a directory.
set -eu
need=""
for tool in samba samba-tool; do
    command -v "$tool" >/dev/null 2>&1 || need="yes"
done
[ -z "$need" ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: installing Samba (AD domain controller for the directory tests)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends samba samba-ad-provision samba-dsdb-modules \
        samba-vfs-modules ldb-tools krb5-user >/dev/null
else
    echo "system-deps: Samba is not installed and this is not root on Debian; the directory tests will say they cannot run."
fi
