#!/usr/bin/env bash
# Prints every WebSocket message of a project: ./scripts/watch.sh 42 [since]
# Uses the Python `websockets` package in .tools/venv (installed on first use). Talks to
# GALLERY_URL (default http://127.0.0.1:8080). With auth on, set GALLERY_TOKEN (a token with
# `subscribe`): it is offered as a subprotocol, as browsers do. A refused or unreachable server,
# or a socket the server closes, is one line on stderr and exit status 1.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROJECT="${1:?usage: watch.sh PROJECT_ID [SINCE_SEQ]}"
SINCE="${2:-}"
BASE="${GALLERY_URL:-http://127.0.0.1:8080}"
BASE="${BASE%/}"
case "$BASE" in
    http://* | https://*) ;;
    *) echo "watch.sh: GALLERY_URL=$BASE must start with http:// or https://" >&2; exit 1 ;;
esac
VENV="$ROOT/.tools/venv"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c 'import websockets' 2>/dev/null || "$VENV/bin/pip" install -q 'websockets==15.0.1'
URL="${BASE/http/ws}/projects/$PROJECT/ws${SINCE:+?since=$SINCE}"
exec "$VENV/bin/python" - "$URL" "${GALLERY_TOKEN:-}" "$BASE" "$PROJECT" <<'PY'
import asyncio, json, sys
import websockets
from websockets.exceptions import (ConnectionClosedError, InvalidHandshake, InvalidStatus,
                                   InvalidURI)

url, token, base, project = sys.argv[1:5]
mint = f"./target/release/gallery token --project {project} --rights subscribe"


def fail(line):
    print(f"watch.sh: {line}", file=sys.stderr)
    sys.exit(1)


def server_message(body):
    """The api's {"error": {"code", "message"}}, or the start of whatever came back."""
    try:
        err = json.loads(body)["error"]
        return f"{err['code']}: {err['message']}"
    except Exception:
        return " ".join(body.decode("utf-8", "replace").split())[:200]


def refused(status, body):
    said = server_message(body)
    said = f", {said}" if said else ""
    if status == 401 and not token:
        fix = f"set GALLERY_TOKEN to a token with `subscribe` on project {project} ({mint})"
    elif status == 401:
        fix = ("GALLERY_TOKEN was not accepted: it may have expired, or been minted with other "
               f"keys than the service's (mint it with the service's data dir: {mint} "
               "--data-dir DIR)")
    elif status == 403:
        fix = f"GALLERY_TOKEN must grant `subscribe` on project {project} ({mint})"
    elif status == 404:
        fix = f"is GALLERY_URL={base} a LITE Gallery?"
    elif status == 429:
        fix = "too many connects: wait a few seconds"
    else:
        fix = "see the message"
    fail(f"the server refused the WebSocket (HTTP {status}{said}): {fix}")


def auth_required():
    """What the gallery's /config says (True when it can't be read: no note then)."""
    import urllib.request
    try:
        with urllib.request.urlopen(f"{base}/config", timeout=5) as r:
            return json.load(r).get("auth_required", True)
    except Exception:
        return True


async def main():
    protocols = ["gallery.v1"] + (["gallery.bearer." + token] if token else [])
    last_seq = None
    try:
        async with websockets.connect(url, subprotocols=protocols, open_timeout=10) as ws:
            print(f"watching {url}", file=sys.stderr)
            if token and not auth_required():
                print("watch.sh: note: this gallery runs with auth off (gallery up --auth on "
                      "turns it on); GALLERY_TOKEN was not checked", file=sys.stderr)
            try:
                async for msg in ws:
                    print(msg, flush=True)
                    try:
                        last_seq = json.loads(msg).get("seq", last_seq)
                    except (ValueError, AttributeError):
                        pass
            except ConnectionClosedError:
                pass
            code, reason = ws.close_code, ws.close_reason
    except InvalidStatus as e:
        refused(e.response.status_code, e.response.body or b"")
    except InvalidURI as e:
        fail(f"GALLERY_URL={base} is not a usable address ({e})")
    except (OSError, TimeoutError) as e:
        fail(f"cannot reach the gallery at GALLERY_URL={base} ({e}): is ./scripts/up.sh "
             "running? set GALLERY_URL to its address")
    except InvalidHandshake as e:
        fail(f"GALLERY_URL={base} did not answer as a LITE Gallery WebSocket ({e})")
    resume = f"./scripts/watch.sh {project} {last_seq}" if last_seq is not None else \
        f"./scripts/watch.sh {project}"
    fail(f"the server closed the WebSocket ({code}{': ' + reason if reason else ''}); "
         f"resume with {resume}")


try:
    asyncio.run(main())
except KeyboardInterrupt:
    sys.exit(130)
PY
