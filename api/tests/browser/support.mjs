// What the browser tests share: an isolated environment per test (its own
// database, topics and consumer group on the test PostgreSQL and Tansu that
// scripts/test.sh starts), the real `feed-api` binary as a process, a TCP
// proxy in front of PostgreSQL that a test can cut, and Chromium.
import { spawn, execFile } from 'node:child_process';
import { once } from 'node:events';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repo = path.resolve(here, '../../..');
const target = path.join(repo, 'target');

/** How long any awaited condition may take before the test fails. */
export const DEADLINE_MS = 30_000;
/** How long one HTTP request of a test may take. */
const REQUEST_MS = 10_000;
/** How long a whole test may take. */
export const TEST_MS = 180_000;

/** `fetch` that gives up after REQUEST_MS. */
const request = (url, init = {}) => fetch(url, { ...init, signal: AbortSignal.timeout(REQUEST_MS) });

const adminUrl = process.env.TEST_DATABASE_URL || 'postgresql://postgres@127.0.0.1:55433/postgres';
const brokers = process.env.TEST_KAFKA_BROKERS || '127.0.0.1:19092';
const apiBinary = process.env.FEED_API_BIN || path.join(target, 'debug', 'feed-api');
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
/** Where the screenshots of a run go (docs/ keeps one of each page). */
export const screenshots = process.env.SCREENSHOT_DIR || path.join(target, 'browser-screenshots');
const logs = path.join(target, 'browser-tests');
fs.mkdirSync(logs, { recursive: true });
fs.mkdirSync(screenshots, { recursive: true });

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `probe` until it returns something other than undefined/false. */
export async function eventually(what, probe, deadlineMs = DEADLINE_MS) {
  const until = Date.now() + deadlineMs;
  let last;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined && value !== false && value !== null) return value;
    } catch (e) {
      last = e;
    }
    if (Date.now() > until) {
      throw new Error(`not within ${deadlineMs} ms: ${what}${last ? ` (last error: ${last.message})` : ''}`);
    }
    await sleep(50);
  }
}

function withDatabase(url, db) {
  const u = new URL(url);
  u.pathname = '/' + db;
  return u.toString();
}

/** Runs one SQL statement; returns its rows as arrays of column texts. */
export async function psql(url, sql) {
  // Unit and record separators: stored content may hold newlines and '|'.
  const { stdout } = await promisify(execFile)('psql', [
    url, '-v', 'ON_ERROR_STOP=1', '-tAq', '-F', '\x1f', '-R', '\x1e', '-c', sql,
  ]);
  const text = stdout.replace(/\n$/, '');
  return text ? text.split('\x1e').map((row) => row.split('\x1f')) : [];
}

/** A TCP proxy in front of PostgreSQL: `down()` cuts every connection and refuses new ones. */
export class DbProxy {
  static async start(targetPort) {
    const p = new DbProxy();
    p.up = true;
    p.sockets = new Set();
    p.server = net.createServer((inbound) => {
      if (!p.up) {
        inbound.destroy();
        return;
      }
      const outbound = net.connect(targetPort, '127.0.0.1');
      for (const s of [inbound, outbound]) {
        p.sockets.add(s);
        s.on('close', () => p.sockets.delete(s));
        s.on('error', () => {
          inbound.destroy();
          outbound.destroy();
        });
      }
      inbound.pipe(outbound);
      outbound.pipe(inbound);
    });
    p.server.listen(0, '127.0.0.1');
    await once(p.server, 'listening');
    p.port = p.server.address().port;
    return p;
  }

  down() {
    this.up = false;
    for (const s of this.sockets) s.destroy();
  }

  restore() {
    this.up = true;
  }

  close() {
    this.down();
    this.server.close();
  }
}

/** What one test owns: a database, topics, a consumer group. */
export class TestEnv {
  static async create({ dbProxy = false } = {}) {
    const env = new TestEnv();
    const suffix = randomUUID().replaceAll('-', '').slice(0, 12);
    env.dbName = `feed_test_${suffix}`;
    await psql(adminUrl, `CREATE DATABASE ${env.dbName}`);
    env.dbUrl = withDatabase(adminUrl, env.dbName);
    env.topics = {
      in: `test-${suffix}-to-process`,
      out: `test-${suffix}-processed`,
      dead: `test-${suffix}-dead-letter`,
    };
    env.group = `test-${suffix}-worker`;
    if (dbProxy) {
      env.proxy = await DbProxy.start(Number(new URL(adminUrl).port || 5432));
      const u = new URL(env.dbUrl);
      u.port = String(env.proxy.port);
      env.appDbUrl = u.toString();
    } else {
      env.appDbUrl = env.dbUrl;
    }
    env.apis = [];
    env.browsers = [];
    return env;
  }

  vars(extra) {
    return {
      HOST: '127.0.0.1',
      DATABASE_URL: this.appDbUrl,
      KAFKA_BROKERS: brokers,
      TOPIC_EVENTS_TO_PROCESS: this.topics.in,
      TOPIC_EVENTS_PROCESSED: this.topics.out,
      TOPIC_EVENTS_DEAD_LETTER: this.topics.dead,
      KAFKA_WORKER_GROUP: this.group,
      DB_POOL_SIZE: '4',
      DB_TIMEOUT_MS: '2000',
      // Everything comes from 127.0.0.1, faster than a person: the public
      // defaults of these limits are raised here, explicitly.
      POST_RATE_PER_MINUTE: '100000000',
      POST_RATE_BURST: '1000000',
      FEED_MAX_CLIENTS_PER_IP: '1000000',
      // Browsers come back within a second after a stream ends or is refused.
      FEED_RETRY_MS: '500',
      FEED_UNAVAILABLE_RETRY_SECS: '1',
      RUST_LOG: 'info',
      ...extra,
    };
  }

  /** Starts an api instance of this environment and waits until it is ready. */
  async api(name, extra = {}) {
    const api = new ApiProcess(this, name, extra);
    // Listed before it starts, so a failed start-up is still stopped.
    this.apis.push(api);
    await api.start();
    return api;
  }

  /** A fresh Chromium (its own profile), recording what its pages do. */
  async browser(options = {}) {
    const b = await Browser.launch(options);
    this.browsers.push(b);
    return b;
  }

  /** `[seq, id, user_id, content]` of every stored message, newest first. */
  async rows() {
    return psql(this.dbUrl, 'SELECT seq, id, user_id, content FROM messages WHERE deleted_at IS NULL ORDER BY seq DESC');
  }

  async count() {
    return Number((await psql(this.dbUrl, 'SELECT count(*) FROM messages'))[0][0]);
  }

  async waitRows(n) {
    return eventually(`${n} messages stored`, async () => (await this.count()) >= n);
  }

  async close() {
    for (const b of this.browsers) await b.close().catch(() => {});
    for (const a of this.apis) await a.kill();
    if (this.proxy) this.proxy.close();
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

/** The real `feed-api` binary, stoppable with SIGTERM and restartable on the same port. */
export class ApiProcess {
  constructor(env, name, extra) {
    this.env = env;
    this.name = name;
    this.extra = extra;
    this.log = path.join(logs, `${env.dbName}-${name}.log`);
  }

  async start() {
    if (!this.port) this.port = await freePort();
    this.base = `http://127.0.0.1:${this.port}`;
    const out = fs.openSync(this.log, 'a');
    this.child = spawn(apiBinary, [], {
      env: { PATH: process.env.PATH, ...this.env.vars(this.extra), PORT: String(this.port) },
      stdio: ['ignore', out, out],
    });
    fs.closeSync(out);
    this.exited = once(this.child, 'exit');
    let exitedEarly = null;
    this.exited.then(([code, signal]) => { exitedEarly = `${code ?? signal}`; });
    await eventually(`${this.name} ready (log: ${this.log})`, async () => {
      if (exitedEarly) throw new Error(`${this.name} exited during start-up (${exitedEarly}); see ${this.log}`);
      const res = await request(this.base + '/api/ready');
      return res.status === 200;
    }, 90_000);
  }

  /** SIGTERM, then waits for the exit (the api is out within 10 s). */
  async stop() {
    if (!this.child) return;
    this.child.kill('SIGTERM');
    const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error(`${this.name} still running 30 s after SIGTERM`)), 30_000).unref());
    const [code] = await Promise.race([this.exited, timeout]);
    this.child = null;
    return code;
  }

  async kill() {
    if (!this.child) return;
    this.child.kill('SIGKILL');
    await this.exited;
    this.child = null;
  }

  /** POSTs a message; returns the 202 body. */
  async post(userId, content) {
    const res = await request(this.base + '/api/messages', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ user_id: userId, content }),
    });
    if (res.status !== 202) throw new Error(`POST answered ${res.status}: ${await res.text()}`);
    return res.json();
  }

  async del(id) {
    const res = await request(this.base + '/api/messages/' + id, { method: 'DELETE' });
    if (res.status !== 202) throw new Error(`DELETE answered ${res.status}: ${await res.text()}`);
    return res.json();
  }

  async json(pathAndQuery) {
    const res = await request(this.base + pathAndQuery);
    return { status: res.status, body: await res.json() };
  }
}

// Installed in every page before its own scripts run: wraps the browser's
// EventSource (which still does all the connecting and reconnecting) to
// record each event it dispatches, so a test can see what the server sent,
// and records every connection state the page shows, however briefly.
function recordEventSources() {
  const Native = window.EventSource;
  const events = [];
  const sources = [];
  const states = [];
  window.__feedEvents = events;
  window.__feedSources = sources;
  window.__feedStates = states;
  document.addEventListener('DOMContentLoaded', () => {
    const el = document.getElementById('connection');
    if (!el) return;
    const note = () => states.push(`${el.dataset.state}: ${el.textContent}`);
    note();
    new MutationObserver(note).observe(el, { attributes: true, childList: true, characterData: true, subtree: true });
  });
  window.EventSource = class extends Native {
    constructor(url, init) {
      super(url, init);
      sources.push(this);
      events.push({ type: 'created', url: String(url) });
      for (const type of ['open', 'error', 'message', 'delete', 'reset', 'lagged', 'unavailable']) {
        this.addEventListener(type, (e) => {
          events.push({ type, id: e.lastEventId ?? null, data: e.data ?? null, readyState: this.readyState });
        });
      }
    }
  };
}

/** One Chromium with a fresh profile (a separate browser context from any other). */
export class Browser {
  static async launch({ viewport = { width: 1000, height: 900 } } = {}) {
    const b = new Browser();
    b.profile = fs.mkdtempSync(path.join(os.tmpdir(), 'feed-chromium-'));
    b.context = await chromium.launchPersistentContext(b.profile, {
      executablePath: chromiumPath,
      headless: true,
      viewport,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    await b.context.addInitScript(recordEventSources);
    b.problems = [];
    b.feedRequests = [];
    return b;
  }

  /** Opens `url` in a new tab, collecting console errors and feed requests. */
  async open(url) {
    const page = await this.context.newPage();
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') this.problems.push(`console ${m.type()}: ${m.text()}`);
    });
    page.on('pageerror', (e) => this.problems.push(`page error: ${e.message}`));
    page.on('request', (r) => {
      if (new URL(r.url()).pathname === '/api/feed') this.feedRequests.push(r);
    });
    await page.goto(url);
    return page;
  }

  async close() {
    await this.context.close();
    fs.rmSync(this.profile, { recursive: true, force: true });
  }
}

/** What a feed page shows: `[cursor, user, content]`, top to bottom. */
export async function listed(page) {
  return page.$$eval('#messages li', (items) => items.map((li) => [
    li.dataset.cursor,
    li.querySelector('.user').textContent,
    li.querySelector('.content').textContent,
  ]));
}

/** The events the page's EventSources dispatched, in order. */
export async function feedEvents(page) {
  return page.evaluate(() => window.__feedEvents);
}

/** Every connection state the page showed, as "state: text", in order. */
export async function shownStates(page) {
  return page.evaluate(() => window.__feedStates);
}

/** EventSources of the page that are not closed (at most one per tab). */
export async function openSources(page) {
  return page.evaluate(() => window.__feedSources.filter((s) => s.readyState !== 2).length);
}

export async function connectionState(page) {
  return page.$eval('#connection', (el) => el.dataset.state);
}

/** Waits until the page's connection state is `state`. */
export async function waitState(page, state) {
  return eventually(`connection state "${state}"`, async () => (await connectionState(page)) === state);
}
