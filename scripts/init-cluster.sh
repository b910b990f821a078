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
    cockroach sql --insecure --host="$HOST" -e "SELECT node_id, address, is_live FROM crdb_internal.gossip_liveness JOIN crdb_internal.gossip_nodes USING (node_id)" || true
    echo "CockroachDB is ready"
    exit 0
  fi
  sleep 2
done
echo "CockroachDB did not become ready" >&2
exit 1
