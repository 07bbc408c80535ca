#!/usr/bin/env bash
# Make sure a real redis-server binary is available for the integration tier.
# Order: $CALLBOARD_REDIS_SERVER, redis-server on PATH, then Debian's package (as root).
set -euo pipefail
if [ -n "${CALLBOARD_REDIS_SERVER:-}" ] && [ -x "$CALLBOARD_REDIS_SERVER" ]; then exit 0; fi
if command -v redis-server >/dev/null 2>&1; then exit 0; fi
echo "[redis] redis-server not found; installing Debian's redis-server package"
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "[redis] cannot install: need root and apt-get. Install redis-server yourself" >&2
  echo "        (apt-get install -y redis-server, brew install redis) or set CALLBOARD_REDIS_SERVER." >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q redis-server >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q redis-server >/dev/null; }
# The package may start a system service; the tests start their own servers on free ports.
(service redis-server stop >/dev/null 2>&1 || true)
command -v redis-server >/dev/null && echo "[redis] $(redis-server --version)"
