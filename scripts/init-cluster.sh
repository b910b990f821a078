#!/usr/bin/env bash
# Initialises the two-node CockroachDB cluster (compose's roach-init step)
# and waits until it answers SQL. Safe to run again on an initialised cluster.
set -euo pipefail

HOST=${COCKROACH_HOST:-roach1:26257}

echo "Waiting for $HOST..."
for _ in $(seq 1 60); do
  out=$(cockroach init --insecure --host="$HOST" 2>&1) && { echo "$out"; break; }
  if grep -qi "already been initialized" <<<"$out"; then echo "cluster already initialised"; break; fi
  sleep 2
done

for _ in $(seq 1 60); do
  if cockroach sql --insecure --host="$HOST" -e "SELECT 1" >/dev/null 2>&1; then
    # Since 24.3 a cluster of more than one node without a licence key is
    # throttled to 5 concurrent open transactions 7 days after initialisation
    # (CockroachDB licensing FAQ); Enterprise Free keys need telemetry on.
    if [ -n "${COCKROACH_LICENSE:-}" ]; then
      cockroach sql --insecure --host="$HOST" -e "SET CLUSTER SETTING enterprise.license = '${COCKROACH_LICENSE}'"
      echo "licence key applied"
    else
      echo "WARNING: no COCKROACH_LICENSE: this two-node cluster will be throttled to 5 concurrent" >&2
      echo "WARNING: transactions 7 days after initialisation; see docs/COMPOSE.md" >&2
    fi
    cockroach node status --insecure --host="$HOST" || true
    echo "CockroachDB is ready"
    exit 0
  fi
  sleep 2
done
echo "CockroachDB did not become ready" >&2
exit 1
