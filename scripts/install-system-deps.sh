#!/usr/bin/env bash
# The Debian packages boxoffice uses beside its Python ones: HAProxy (`boxoffice cluster`, the multi-node
# tests), Chromium (the browser tests), docker-compose (the compose file's check) and iproute2 (`ss`, read by
# the burst test). Installs the missing ones with apt-get when run as root; otherwise stops with the one
# command to run. A no-op when all are present. Used by `make install` (and so `make run` / `make test`), by .ci/run and by the CI workflow.
#
#   BOXOFFICE_ALLOW_SKIPS=1   only warn about missing packages (a partial test run: see tests/skips.py)
set -euo pipefail

need=()
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v ss >/dev/null 2>&1 || need+=(iproute2)  # the tests read the nodes' listen queues with ss
[ ${#need[@]} -eq 0 ] && exit 0

if [ "${BOXOFFICE_ALLOW_SKIPS:-}" = "1" ]; then
  echo "boxoffice: not installing ${need[*]} (BOXOFFICE_ALLOW_SKIPS=1): the tests that need them will not run" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "boxoffice: install these packages with your system's package manager, then run make again: ${need[*]}" >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "boxoffice: missing Debian packages; run: sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "boxoffice: installing Debian packages: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q "${need[@]}"
