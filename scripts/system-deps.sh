#!/bin/sh
# Installs the Debian packages the test suite uses when it can (root on Debian), and says plainly when it
# cannot: Samba (an AD domain controller for the directory tests) and Chromium (the browser the campaign
# report's tests open the report in). Nothing here is needed to run the lab or the demo without a directory.
set -eu
need_samba=""
for tool in samba samba-tool; do
    command -v "$tool" >/dev/null 2>&1 || need_samba="yes"
done
need_chromium=""
[ -x /usr/bin/chromium ] || need_chromium="yes"
[ -z "$need_samba$need_chromium" ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    if [ -n "$need_samba" ]; then
        echo "system-deps: installing Samba (AD domain controller for the directory tests)"
        apt-get install -y -qq --no-install-recommends samba samba-ad-provision samba-dsdb-modules \
            samba-vfs-modules ldb-tools krb5-user >/dev/null
    fi
    if [ -n "$need_chromium" ]; then
        # The tests run it with --no-sandbox (as root), so the recommended chromium-sandbox is not needed.
        echo "system-deps: installing Chromium (headless browser for the campaign report's tests)"
        apt-get install -y -qq --no-install-recommends chromium >/dev/null
    fi
else
    if [ -n "$need_samba" ]; then
        echo "system-deps: Samba is not installed and this is not root on Debian; the directory tests will say they cannot run."
    fi
    if [ -n "$need_chromium" ]; then
        echo "system-deps: Chromium is not installed and this is not root on Debian; the report's browser tests will fail until /usr/bin/chromium exists."
    fi
fi
