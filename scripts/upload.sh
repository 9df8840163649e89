#!/usr/bin/env bash
# Uploads one file as every client does: ./scripts/upload.sh PROJECT FILE
# 1. POST $GALLERY_URL/images/ {"filename", "project_id"} answers with an upload link;
# 2. the file goes to that link as the link says: a multipart POST with every `params` field
#    first, then the file as the field `file` (local mode: the api's /uploads/{id}; S3 mode: the
#    bucket, with the same form).
# Prints image_id=... and upload_status=...; on a refusal, the server's error, and exits 1.
# GALLERY_URL defaults to http://127.0.0.1:8080; GALLERY_TOKEN (a token with `upload` on the
# project) is sent to the api when set, never to the upload link (the link is the permission).
set -euo pipefail
usage="usage: upload.sh PROJECT FILE"
PROJECT="${1:?$usage}"
FILE="${2:?$usage}"
BASE="${GALLERY_URL:-http://127.0.0.1:8080}"
BASE="${BASE%/}"
die() { echo "upload.sh: $*" >&2; exit 1; }
[ -f "$FILE" ] && [ -r "$FILE" ] || die "$FILE is not a readable file"
command -v curl >/dev/null || die "curl is needed (apt-get install curl)"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# The server's error in one line: the api's {"error": {"code", "message"}}, S3's XML
# <Code>/<Message>, or the start of whatever else came back.
explain() { # $1 = file holding a response body
    python3 - "$1" <<'PY'
import json, re, sys
raw = open(sys.argv[1], "rb").read().decode("utf-8", "replace")
try:
    err = json.loads(raw)["error"]
    print(f"{err['code']}: {err['message']}")
except Exception:
    code = re.search(r"<Code>(.*?)</Code>", raw, re.S)
    msg = re.search(r"<Message>(.*?)</Message>", raw, re.S)
    if code or msg:
        print(": ".join(m.group(1).strip() for m in (code, msg) if m))
    else:
        print(" ".join(raw.split())[:300] or "(no body)")
PY
}

# 1. The link.
python3 - "$(basename -- "$FILE")" "$PROJECT" >"$WORK/request.json" <<'PY'
import json, sys
print(json.dumps({"filename": sys.argv[1], "project_id": sys.argv[2]}))
PY
auth=()
[ -n "${GALLERY_TOKEN:-}" ] && auth=(-H "Authorization: Bearer $GALLERY_TOKEN")
if ! status="$(curl -sS -o "$WORK/link.json" -w '%{http_code}' -X POST \
        -H 'content-type: application/json' "${auth[@]}" \
        --data-binary "@$WORK/request.json" "$BASE/images/")"; then
    die "could not reach the gallery at GALLERY_URL=$BASE (is ./scripts/up.sh running? set GALLERY_URL to its address)"
fi
case "$status" in
    201)
        # A token sent to a gallery with auth off is not checked at all: say so.
        if [ -n "${GALLERY_TOKEN:-}" ] &&
            curl -s "$BASE/config" | grep -q '"auth_required": *false'; then
            echo "upload.sh: note: this gallery runs with auth off (gallery up --auth on turns it on); GALLERY_TOKEN was not checked" >&2
        fi ;;
    401|403)
        if [ -z "${GALLERY_TOKEN:-}" ]; then
            hint="set GALLERY_TOKEN to a token with \`upload\` on project $PROJECT"
        else
            hint="GALLERY_TOKEN must be minted with this service's keys and grant \`upload\` on project $PROJECT"
        fi
        hint="$hint (./target/release/gallery token --project $PROJECT --rights upload,read,subscribe)"
        die "POST $BASE/images/ refused (HTTP $status): $(explain "$WORK/link.json"); $hint" ;;
    *) die "POST $BASE/images/ refused (HTTP $status): $(explain "$WORK/link.json")" ;;
esac

# 2. The form, exactly as the link says: NUL-separated image id, method, link, then the fields.
python3 - "$WORK/link.json" >"$WORK/form" <<'PY'
import json, sys
link = json.load(open(sys.argv[1]))
parts = [link["image_id"], link["method"], link["upload_link"]]
parts += [f"{k}={v}" for k, v in link["params"].items()]
sys.stdout.write("".join(p + "\0" for p in parts))
PY
mapfile -d '' -t form <"$WORK/form"
IMAGE_ID="${form[0]}" METHOD="${form[1]}" LINK="${form[2]}"
echo "image_id=$IMAGE_ID"
[ "$METHOD" = POST ] || die "the link asks for method $METHOD; this script sends only POST forms"
fields=()
for field in "${form[@]:3}"; do
    fields+=(--form-string "$field") # verbatim: a value starting with @ or < is not a file
done
quoted="${FILE//\\/\\\\}"
quoted="${quoted//\"/\\\"}"
if ! status="$(curl -sS -o "$WORK/upload.out" -w '%{http_code}' \
        "${fields[@]}" -F "file=@\"$quoted\"" "$LINK")"; then
    die "the upload to $LINK did not complete (curl's error above): run this again for a new link (the unfinished image ends in upload_expired when its link expires)"
fi
echo "upload_status=$status"
case "$status" in
    2??) ;;
    *) die "the upload was refused (HTTP $status): $(explain "$WORK/upload.out")" ;;
esac
