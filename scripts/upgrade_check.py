#!/usr/bin/env python3
"""The rolling-upgrade check's scenario (run by scripts/upgrade-check.sh).

Two api instances on one broker and one database: this release ("current")
and a synthetic next one ("next", built with scripts/upgrade-next.patch).
Traffic (posts, deletions, follows) goes through whichever instances run,
and feed clients read from them, resuming with Last-Event-ID on another
instance whenever theirs goes away, as a browser behind a load balancer
would. The instances are replaced one at a time:

  1. current + current
  2. next + current          (A rolled forward)
  3. next + next             (B rolled forward), then posts_v2 switched on
  4. next + current          (B rolled back, after posts_v2 is switched off
                              and the workers have drained)

At the end: every acknowledged post stored once, every acknowledged deletion
applied once, the follows as the last acknowledged change left them, the
numbers gap-free, and every client got every event once, in order (the
shell script then checks that nothing was dead-lettered).
"""

import json
import os
import sys
import time
import urllib.request

import checklib
from checklib import DEADLINE, INSTANCES, Client, Traffic, fail, log, psql, verify

checklib.BIN.update({"current": os.environ["CURRENT_BIN"], "next": os.environ["NEXT_BIN"]})
PHASE_SECS = float(os.environ.get("CHECK_PHASE_SECS", "8"))


def wait_drained():
    """Until every partition the workers own shows no lag."""
    until = time.time() + DEADLINE
    while time.time() < until:
        lags = []
        for inst in INSTANCES.values():
            if inst.up():
                with urllib.request.urlopen(inst.url("/api/ready"), timeout=5) as r:
                    ready = json.loads(r.read())
                lags += [p["lag"] for p in ready.get("worker", {}).get("partitions", [])]
        if lags and all(lag == 0 for lag in lags):
            return
        time.sleep(0.3)
    fail("the workers did not drain")


def phase(name, traffic):
    log(f"phase: {name}; traffic for {PHASE_SECS:.0f} s")
    start = len(traffic.posted)
    time.sleep(PHASE_SECS)
    log(f"  {len(traffic.posted) - start} posts answered in this phase")


def switch(feature, on):
    psql(f"UPDATE features SET enabled = {'true' if on else 'false'}, changed_at = now() WHERE name = '{feature}'")
    time.sleep(1.0)  # FEATURE_REFRESH_MS is 300: every instance has read it
    log(f"{feature} switched {'on' if on else 'off'}")


def main():
    a, b = INSTANCES["A"], INSTANCES["B"]
    a.start("current")
    b.start("current")
    clients = [Client(f"c{i}", "A" if i % 2 == 0 else "B") for i in range(4)]
    for c in clients:
        c.start()
    time.sleep(1.0)
    traffic = Traffic()
    traffic.start()
    phase("1. current + current", traffic)
    a.stop()
    a.start("next")
    phase("2. next + current (A rolled forward; next writes an extra field the current reads past)", traffic)
    if psql("SELECT enabled FROM features WHERE name = 'posts_v2'") != ["f"]:
        fail("posts_v2 must start off on an upgraded install")
    b.stop()
    b.start("next")
    phase("3. next + next", traffic)
    switch("posts_v2", True)
    phase("3b. next + next, posts_v2 on (version 2 records)", traffic)
    switch("posts_v2", False)
    wait_drained()
    b.stop()
    b.start("current")
    phase("4. next + current (B rolled back against the newer schema)", traffic)
    traffic.stop_flag.set()
    traffic.join()
    log(f"traffic: {len(traffic.posted)} posts, {len(traffic.deleted)} deletions, {len(traffic.follows)} follow pairs acknowledged")
    verify(traffic, clients)
    a.stop()
    b.stop()
    log("scenario passed (the shell script checks the dead-letter topic next)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        checklib.stop_all()
