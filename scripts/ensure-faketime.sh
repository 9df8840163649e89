#!/usr/bin/env bash
# Installs Debian's faketime (libfaketime) when missing: the fault suite runs a processor with
# its clock 25 h ahead and 25 h behind (LD_PRELOAD=libfaketime, e2e/tests/faults.rs s9).
set -euo pipefail
lib_present() {
    for p in /usr/lib/*/faketime/libfaketime.so.1 /usr/lib/faketime/libfaketime.so.1; do
        [ -f "$p" ] && return 0
    done
    return 1
}
if ! lib_present; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime
fi
