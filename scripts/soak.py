#!/usr/bin/env python3
"""The soak's scenario (run by scripts/soak.sh): hours of churn and faults.

Two api instances (A and B) on one broker and one database, the bot posting,
a steady stream of posts, deletions and follows that are retried until
answered, a few thousand feed clients that keep connecting, dropping and
resuming (`feed-bot readers`: unfiltered, filtered, home streams, slow
ones), and a few clients that check exactly-once order across everything.
Every SOAK_FAULT_EVERY_SECS a fault chosen at random: kill -9 of api A, of
Tansu or of PostgreSQL, a frozen database (SIGSTOP for 20 s), a SIGTERM
restart of A. B is never touched on purpose: its memory, descriptors and
database connections over the whole run show a leak if there is one.

Every 30 s it samples each instance's resident memory and descriptors, the
database's connections and the broker's file; at the end it checks every
acknowledged post stored once, the numbers gap-free, every checking client
got every event once in order, and no reader met a status an EventSource
gives up on, and it writes the samples and the summary to SOAK_OUT.
"""

import glob
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import checklib
from checklib import INSTANCES, Client, Traffic, fail, log, psql, verify

checklib.BIN["current"] = os.environ["SOAK_BIN"]
# Native mode's retention: the broker's growth per hour is one of the figures.
checklib.EXTRA_ENV["KAFKA_RETENTION_HOURS"] = "168"
BOT = os.environ["SOAK_BOT"]
MINUTES = float(os.environ.get("SOAK_MINUTES", "30"))
FAULT_EVERY = float(os.environ.get("SOAK_FAULT_EVERY_SECS", "180"))
OUT = os.environ["SOAK_OUT"]
DATA = checklib.DATA
NATIVE = os.environ["SOAK_NATIVE"]  # scripts/native.sh
PG_PORT, KAFKA_PORT = os.environ["SOAK_PG_PORT"], os.environ["SOAK_KAFKA_PORT"]
SAMPLE_EVERY = 30.0


def native(call):
    """Runs a function of scripts/native.sh (starting PostgreSQL or Tansu again)."""
    out = subprocess.run(["bash", "-c", f"source '{NATIVE}'; {call}"], capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"{call}: {out.stderr.strip()}")


def pids(pattern):
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def postgres_pids():
    """The postmaster and its children (this soak's cluster only)."""
    with open(os.path.join(os.environ["SOAK_PG_DIR"], "postmaster.pid")) as f:
        master = int(f.readline())
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True)
    return [master] + [int(p) for p in out.stdout.split()]


def tansu_pid():
    with open(os.path.join(DATA, "tansu.pid")) as f:
        return int(f.read().strip())


# --- faults -------------------------------------------------------------

def kill_api():
    INSTANCES["A"].kill()
    time.sleep(5)
    INSTANCES["A"].start("current")


def restart_api():
    INSTANCES["A"].stop()
    INSTANCES["A"].start("current")


def kill_tansu():
    os.kill(tansu_pid(), signal.SIGKILL)
    log("Tansu killed")
    time.sleep(5)
    native(f"tansu_start '{DATA}' {KAFKA_PORT}")
    log("Tansu started again")


def kill_postgres():
    os.kill(postgres_pids()[0], signal.SIGKILL)
    log("PostgreSQL's postmaster killed")
    # The backends of a killed postmaster exit on their own (they notice it
    # is gone); until they have, a new one refuses to start.
    for _ in range(30):
        time.sleep(2)
        out = subprocess.run(["bash", "-c", f"source '{NATIVE}'; pg_start '{DATA}' {PG_PORT}"],
                             capture_output=True, text=True)
        if out.returncode == 0:
            log("PostgreSQL started again")
            return
    fail(f"PostgreSQL did not start again: {out.stderr.strip()}")


def freeze_postgres():
    frozen = postgres_pids()
    for p in frozen:
        os.kill(p, signal.SIGSTOP)
    log(f"PostgreSQL frozen (SIGSTOP to {len(frozen)} processes) for 20 s")
    time.sleep(20)
    for p in frozen:
        try:
            os.kill(p, signal.SIGCONT)
        except ProcessLookupError:
            pass
    log("PostgreSQL thawed")


FAULTS = [kill_api, restart_api, kill_tansu, kill_postgres, freeze_postgres]


# --- samples ------------------------------------------------------------

def proc_sample(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        return {"pid": pid, "rss_kib": rss, "fds": fds}
    except (OSError, StopIteration):
        return None


def sample(started):
    connections = psql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
    broker = sum(os.path.getsize(p) for p in glob.glob(os.path.join(DATA, "tansu.db*")))
    return {
        "minute": round((time.time() - started) / 60, 2),
        "A": proc_sample(INSTANCES["A"].pid()) if INSTANCES["A"].up() else None,
        "B": proc_sample(INSTANCES["B"].pid()) if INSTANCES["B"].up() else None,
        "db_connections": int(connections[0]) if connections else None,
        "broker_bytes": broker,
    }


def readers(label, url_a, url_b, clients, query, extra):
    cmd = [BOT, "readers", "--url", url_a, "--also-url", url_b, "--clients", str(clients),
           "--query", query, "--reconnect-within-ms", "3000", *extra]
    logf = open(os.path.join(DATA, f"readers-{label}.log"), "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=logf, text=True)
    checklib.CHILDREN.append(proc)
    return label, proc


def main():
    a, b = INSTANCES["A"], INSTANCES["B"]
    a.start("current")
    b.start("current")
    url_a, url_b = a.url(""), b.url("")
    bot_log = open(os.path.join(DATA, "bot.log"), "w")
    bot = subprocess.Popen([BOT], env={**os.environ, "API_URL": url_b, "BOT_USERS": "6", "BOT_INTERVAL_SECS": "2",
                                       "BOT_JITTER_SECS": "1", "RUST_LOG": "warn"}, stdout=bot_log, stderr=bot_log)
    checklib.CHILDREN.append(bot)
    crowd = [
        readers("unfiltered", url_a, url_b, 1500, "?history=10", ["--drop-within-ms", "60000"]),
        readers("filtered", url_b, url_a, 300, "?user_id=u1&history=5", ["--drop-within-ms", "60000"]),
        readers("home", url_a, url_b, 300, "?home=u2&history=5", ["--drop-within-ms", "60000"]),
        readers("slow", url_b, url_a, 100, "?history=0", ["--read-delay-ms", "200"]),
    ]
    checking = [Client(f"c{i}", "A" if i % 2 == 0 else "B") for i in range(4)]
    for c in checking:
        c.start()
    traffic = Traffic(pause=0.1)
    traffic.start()
    started = time.time()
    samples, faults = [], []
    next_sample, next_fault = started, started + FAULT_EVERY
    end = started + MINUTES * 60
    log(f"soak for {MINUTES:.0f} minutes, a fault every {FAULT_EVERY:.0f} s")
    while time.time() < end:
        now = time.time()
        if now >= next_sample:
            s = sample(started)
            samples.append(s)
            log(f"minute {s['minute']}: A {s['A']}, B {s['B']}, db connections {s['db_connections']}, broker {s['broker_bytes'] // 1024} KiB, posts answered {len(traffic.posted)}")
            next_sample += SAMPLE_EVERY
        if now >= next_fault and now < end - 120:
            fault = random.choice(FAULTS)
            log(f"fault: {fault.__name__}")
            faults.append({"minute": round((now - started) / 60, 2), "fault": fault.__name__})
            fault()
            next_fault += FAULT_EVERY
        time.sleep(1)
    traffic.stop_flag.set()
    traffic.join()
    bot.send_signal(signal.SIGTERM)
    bot.wait(timeout=30)
    log(f"traffic: {len(traffic.posted)} posts, {len(traffic.deleted)} deletions, {len(traffic.follows)} follow pairs acknowledged")
    verify(traffic, checking)
    crowd_reports = {}
    for label, proc in crowd:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        report = json.loads(out.strip().splitlines()[-1])
        report.pop("reconnect_ms", None)
        crowd_reports[label] = report
        log(f"readers {label}: {report}")
        if report["gave_up"]:
            fail(f"readers {label}: {report['gave_up']} clients met a status an EventSource gives up on")
    samples.append(sample(started))

    def growth(key):
        mine = [s["B"][key] for s in samples if s["B"] and s["minute"] >= 10]
        return (mine[0], mine[-1]) if len(mine) >= 2 else None

    summary = {
        "minutes": MINUTES, "faults": faults, "posts": len(traffic.posted), "deletions": len(traffic.deleted),
        "follow_pairs": len(traffic.follows), "readers": crowd_reports,
        "B_rss_kib_minute10_to_end": growth("rss_kib"), "B_fds_minute10_to_end": growth("fds"),
        "broker_bytes_start_end": (samples[0]["broker_bytes"], samples[-1]["broker_bytes"]),
    }
    with open(OUT, "w") as f:
        json.dump({"summary": summary, "samples": samples}, f, indent=1)
    log(f"summary: {json.dumps(summary)}")
    a.stop()
    b.stop()
    log("soak passed")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        checklib.stop_all()
