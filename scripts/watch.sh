#!/usr/bin/env bash
# Prints every WebSocket message of a project: ./scripts/watch.sh 42 [since]
# Uses the Python `websockets` package in .tools/venv (installed on first use). With auth on,
# set GALLERY_TOKEN (a token with `subscribe`): it is offered as a subprotocol, as browsers do.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROJECT="${1:?usage: watch.sh PROJECT_ID [SINCE_SEQ]}"
SINCE="${2:-}"
BASE="${GALLERY_URL:-http://127.0.0.1:8080}"
VENV="$ROOT/.tools/venv"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c 'import websockets' 2>/dev/null || "$VENV/bin/pip" install -q 'websockets==15.0.1'
URL="${BASE/http/ws}/projects/$PROJECT/ws${SINCE:+?since=$SINCE}"
exec "$VENV/bin/python" - "$URL" "${GALLERY_TOKEN:-}" <<'PY'
import asyncio, sys, websockets
async def main(url, token):
    protocols = ["gallery.v1"] + (["gallery.bearer." + token] if token else [])
    async with websockets.connect(url, subprotocols=protocols) as ws:
        print(f"watching {url}", file=sys.stderr)
        async for msg in ws:
            print(msg, flush=True)
asyncio.run(main(sys.argv[1], sys.argv[2]))
PY
