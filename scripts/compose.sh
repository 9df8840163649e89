#!/usr/bin/env bash
# `docker compose` with the generated secrets: creates .env on first use, then passes every
# argument on (e.g. `scripts/compose.sh up --build`, or with `-f docker-compose.yml -f
# docker-compose.cluster.yml up`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/compose-env.sh"
cd "$ROOT"
exec docker compose "$@"
