"""Shared pieces of the by-hand pipeline checks (scripts/upgrade_check.py,
scripts/soak.py): api instances as child processes, traffic that retries
until answered, feed clients that resume across instances, and the final
check of the database and of what each client received. Standard library
only; everything talks to 127.0.0.1.
"""

import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

DB_URL = os.environ["CHECK_DATABASE_URL"]
PSQL_URL = os.environ["CHECK_PSQL_URL"]
BROKERS = os.environ["CHECK_KAFKA_BROKERS"]
DATA = os.environ["CHECK_DATA"]
PORTS = {"A": int(os.environ.get("CHECK_PORT_A", "18111")), "B": int(os.environ.get("CHECK_PORT_B", "18112"))}
DEADLINE = 120.0
# The binaries by release name ("current", "next"); set by the script.
BIN = {}
# Extra environment for every instance (the script's own settings).
EXTRA_ENV = {}
# Other child processes of the check (the bot, readers), stopped with it.
CHILDREN = []


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def fail(msg):
    """Stops everything, from any thread: the check has failed."""
    log(f"FAILED: {msg}")
    stop_all()
    os._exit(1)


def stop_all():
    """Kills every process the check started that still runs."""
    procs = [inst.proc for inst in INSTANCES.values() if inst.proc is not None] + CHILDREN
    for proc in procs:
        if proc.poll() is None:
            proc.kill()


def psql(sql):
    out = subprocess.run(["psql", "-X", "-q", "-tA", PSQL_URL, "-c", sql], capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"psql: {out.stderr.strip()}")
    return [line for line in out.stdout.splitlines() if line]


class Instance:
    def __init__(self, name):
        self.name, self.port, self.proc, self.release = name, PORTS[name], None, None

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self, release):
        env = dict(os.environ)
        env.update({
            "HOST": "127.0.0.1", "PORT": str(self.port), "DATABASE_URL": DB_URL,
            "KAFKA_BROKERS": BROKERS, "FEATURE_REFRESH_MS": "300", "FOLLOW_REFRESH_MS": "200",
            "POST_RATE_PER_MINUTE": "100000000", "POST_RATE_BURST": "1000000",
            "FEED_MAX_CLIENTS_PER_IP": "100000", "RUST_LOG": "warn,feed_api=info",
            "KAFKA_SESSION_TIMEOUT_MS": "6000",
        })
        env.update(EXTRA_ENV)
        logf = open(os.path.join(DATA, f"api-{self.name}.log"), "a")
        logf.write(f"\n==== {self.name} starting {release}\n")
        logf.flush()
        self.proc = subprocess.Popen([BIN[release]], env=env, stdout=logf, stderr=logf)
        self.release = release
        until = time.time() + DEADLINE
        while time.time() < until:
            if self.proc.poll() is not None:
                fail(f"{self.name} ({release}) exited with {self.proc.returncode}; see {DATA}/api-{self.name}.log")
            try:
                with urllib.request.urlopen(self.url("/api/ready"), timeout=2) as r:
                    if r.status == 200:
                        log(f"{self.name} runs {release} on {self.port}")
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        fail(f"{self.name} ({release}) not ready")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            fail(f"{self.name} did not stop within 20 s of SIGTERM")
        if code != 0:
            fail(f"{self.name} exited with {code} on SIGTERM")
        log(f"{self.name} ({self.release}) stopped")
        self.proc = None

    def kill(self):
        """SIGKILL: a crash."""
        self.proc.kill()
        self.proc.wait()
        log(f"{self.name} ({self.release}) killed")
        self.proc = None

    def up(self):
        return self.proc is not None

    def pid(self):
        return self.proc.pid if self.proc is not None else None


INSTANCES = {"A": Instance("A"), "B": Instance("B")}


def request(method, path, body=None, headers=None):
    """One request to a running instance (tried in a random order); None when none answered."""
    names = list(INSTANCES)
    random.shuffle(names)
    for name in names:
        inst = INSTANCES[name]
        if not inst.up():
            continue
        conn = http.client.HTTPConnection("127.0.0.1", inst.port, timeout=10)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            h = {"Content-Type": "application/json"} if payload else {}
            h.update(headers or {})
            conn.request(method, path, body=payload, headers=h)
            r = conn.getresponse()
            data = r.read()
            return r.status, (json.loads(data) if data else None)
        except (OSError, http.client.HTTPException):
            continue
        finally:
            conn.close()
    return None


class Traffic(threading.Thread):
    """Posts, deletions and follows until stopped, each retried until it is
    answered (a post with the same Idempotency-Key, so it is stored once)."""

    USERS = [f"u{i}" for i in range(12)]

    def __init__(self, pause=0.02):
        super().__init__(daemon=True)
        self.stop_flag = threading.Event()
        self.posted, self.deleted, self.follows = [], [], {}
        self.lock = threading.Lock()
        # Between two posts: sets the rate.
        self.pause = pause

    def until_answered(self, method, path, body=None, headers=None, ok=(202, 204)):
        until = time.time() + DEADLINE
        while time.time() < until:
            got = request(method, path, body, headers)
            if got and got[0] in ok:
                return got
            if got and got[0] not in (429, 503):
                fail(f"{method} {path}: {got}")
            time.sleep(0.2)
        fail(f"{method} {path} never answered {ok}")

    def run(self):
        n = 0
        while not self.stop_flag.is_set():
            n += 1
            user = random.choice(self.USERS)
            key = str(uuid.uuid4())
            _, body = self.until_answered("POST", "/api/messages", {"user_id": user, "content": f"post {n}"},
                                          {"Idempotency-Key": key})
            with self.lock:
                self.posted.append(body["id"])
            if n % 7 == 0 and len(self.posted) > 3:
                victim = self.posted[-3]
                # A post still on its way answers 404: wait for it.
                until = time.time() + DEADLINE
                while True:
                    got = request("DELETE", f"/api/messages/{victim}")
                    if got and got[0] == 202:
                        break
                    if got and got[0] not in (404, 429, 503) or time.time() > until:
                        fail(f"DELETE {victim}: {got}")
                    time.sleep(0.1)
                with self.lock:
                    self.deleted.append(victim)
            if n % 5 == 0:
                a, b = random.sample(self.USERS, 2)
                follow = random.random() < 0.7
                self.until_answered("PUT" if follow else "DELETE", f"/api/users/{a}/following/{b}", ok=(204,))
                with self.lock:
                    self.follows[(a, b)] = follow
            time.sleep(self.pause)


class Client(threading.Thread):
    """A feed client that resumes with Last-Event-ID on whichever instance runs."""

    def __init__(self, label, prefer):
        super().__init__(daemon=True)
        self.label, self.prefer = label, prefer
        self.stop_flag = threading.Event()
        self.events = []  # (cursor, kind, message id)
        self.last = None
        self.connections = 0

    def run(self):
        while not self.stop_flag.is_set():
            names = [self.prefer] + [n for n in INSTANCES if n != self.prefer]
            inst = next((INSTANCES[n] for n in names if INSTANCES[n].up()), None)
            if inst is None:
                time.sleep(0.1)
                continue
            try:
                self.read(inst)
            except (OSError, http.client.HTTPException, ValueError):
                pass
            time.sleep(0.05)

    def read(self, inst):
        conn = http.client.HTTPConnection("127.0.0.1", inst.port, timeout=30)
        headers = {"Accept": "text/event-stream"}
        if self.last is not None:
            headers["Last-Event-ID"] = self.last
        conn.request("GET", "/api/feed?history=0" if self.last is None else "/api/feed", headers=headers)
        r = conn.getresponse()
        if r.status != 200:
            raise ValueError(r.status)
        self.connections += 1
        event = {}
        while not self.stop_flag.is_set():
            line = r.fp.readline()
            if not line:
                return
            line = line.decode().rstrip("\n")
            if line == "":
                self.take(event)
                event = {}
            elif ":" in line and not line.startswith(":"):
                k, v = line.split(":", 1)
                event[k] = v[1:] if v.startswith(" ") else v

    def take(self, ev):
        kind = ev.get("event")
        if kind in ("message", "delete"):
            data = json.loads(ev["data"])
            self.events.append((int(ev["id"]), kind, data["id"]))
            self.last = ev["id"]
        elif kind == "lagged" and "id" in ev:
            self.last = ev["id"]
        elif kind == "reset":
            fail(f"client {self.label}: reset {ev}")


def verify(traffic, clients):
    posted, deleted = set(traffic.posted), set(traffic.deleted)
    until = time.time() + DEADLINE
    while time.time() < until:
        stored = set(psql("SELECT id FROM messages"))
        applied = set(psql("SELECT message_id FROM deletions"))
        if posted <= stored and deleted <= applied:
            break
        time.sleep(0.5)
    else:
        fail(f"missing: {len(posted - stored)} posts, {len(deleted - applied)} deletions")
    # Ids come from the Idempotency-Key, so a post stored twice would have two
    # ids: each of our posts has a text of its own, which must be there once.
    twice = psql("SELECT content FROM messages WHERE content LIKE 'post %' GROUP BY content HAVING count(*) > 1")
    if twice:
        fail(f"posts stored twice: {twice[:5]}")
    # Others (the bot) may post and delete too: only ours are compared.
    if (applied & posted) != deleted:
        fail(f"deletions of our posts applied that were not asked for: {(applied & posted) - deleted}")
    seqs = sorted(int(s) for s in psql("SELECT seq FROM messages UNION ALL SELECT seq FROM deletions"))
    if seqs != list(range(1, len(seqs) + 1)):
        fail("the numbers of messages and deletions have a gap or a repeat")
    want = {(a, b) for (a, b), on in traffic.follows.items() if on}
    ours = set(Traffic.USERS)
    have = {tuple(r.split("|")) for r in psql("SELECT user_id || '|' || target FROM follows")}
    have = {(a, b) for a, b in have if a in ours and b in ours}
    if want != have:
        fail(f"follows differ: missing {want - have}, extra {have - want}")
    log(f"stored {len(stored)} messages, {len(applied)} deletions, {len(have)} follows; numbers 1..{len(seqs)} gap-free")

    live = {r.split("|")[0]: int(r.split("|")[1]) for r in psql("SELECT id || '|' || seq FROM messages WHERE deleted_at IS NULL")}
    dels = {r.split("|")[0]: int(r.split("|")[1]) for r in psql("SELECT message_id || '|' || seq FROM deletions")}
    last = max(seqs)
    until = time.time() + DEADLINE
    while time.time() < until and not all(c.events and c.events[-1][0] >= last for c in clients):
        time.sleep(0.3)
    for c in clients:
        c.stop_flag.set()
    behind = [c.label for c in clients if not (c.events and c.events[-1][0] >= last)]
    if behind:
        fail(f"clients {behind} did not reach the last event ({last}) within {DEADLINE:.0f} s")
    for c in clients:
        cursors = [e[0] for e in c.events]
        first = cursors[0]
        if cursors != sorted(set(cursors)):
            fail(f"client {c.label}: events repeated or out of order")
        got_msgs = {e[2]: e[0] for e in c.events if e[1] == "message"}
        got_dels = {e[2]: e[0] for e in c.events if e[1] == "delete"}
        for mid, seq in live.items():
            if seq >= first and got_msgs.get(mid) != seq:
                fail(f"client {c.label}: message {mid} ({seq}) missing")
        for mid, seq in dels.items():
            if seq >= first and got_dels.get(mid) != seq:
                fail(f"client {c.label}: deletion of {mid} ({seq}) missing")
        for mid, seq in got_msgs.items():
            if mid not in live and mid not in dels:
                fail(f"client {c.label}: message {mid} that is not stored")
        log(f"client {c.label}: {len(got_msgs)} messages, {len(got_dels)} deletions over {c.connections} connections, once each, in order")


