// The feed page and the status page in real Chromium against the real api
// binary, Tansu and PostgreSQL. Every wait is a condition with a deadline;
// timings are printed, never asserted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  TestEnv, eventually, listed, feedEvents, connectionState, waitState, screenshots, psql,
  shownStates, openSources, TEST_MS,
} from './support.mjs';

/** Runs `body` with a fresh environment and always cleans up. */
async function withEnv(options, body) {
  const env = await TestEnv.create(options);
  try {
    await body(env);
  } finally {
    await env.close();
  }
}

/** Cursors as numbers, top to bottom, must strictly decrease (newest on top, once each). */
function assertCursorOrder(rows) {
  const cursors = rows.map(([c]) => Number(c));
  for (let i = 1; i < cursors.length; i++) {
    assert.ok(cursors[i - 1] > cursors[i], `cursor ${cursors[i - 1]} above ${cursors[i]}: ${cursors}`);
  }
}

/** The page lists exactly the stored messages (all, or those matching `keep`). */
async function assertMatchesDatabase(page, env, keep = () => true) {
  const stored = (await env.rows()).filter(keep).map(([seq, , user, content]) => [seq, user, content]);
  const shown = await listed(page);
  assertCursorOrder(shown);
  assert.deepEqual(shown, stored);
}

/** Every message event was dispatched once: the server never sent a cursor twice. */
async function assertDeliveredOnce(page) {
  const seen = new Set();
  for (const e of await feedEvents(page)) {
    if (e.type !== 'message') continue;
    assert.ok(!seen.has(e.id), `cursor ${e.id} delivered twice`);
    seen.add(e.id);
  }
  return seen.size;
}

test('the page shows the feed, posts from its form, shows the API\'s errors, filters by user and pages back', { timeout: TEST_MS }, async () => {
  await withEnv({}, async (env) => {
    const api = await env.api('a', { FEED_HISTORY_DEFAULT: '5' });
    const seeds = [
      ['alice', 'first'], ['bob', 'second'], ['alice', 'third'], ['carol', 'fourth'],
      ['bob', 'fifth'], ['alice', 'sixth'], ['bob', '<b>not bold</b> & <script>no script</script>'],
      ['carol', 'eighth, with\na newline'],
    ];
    for (const [user, content] of seeds) await api.post(user, content);
    await env.waitRows(seeds.length);

    const reader = await env.browser();
    const page = await reader.open(api.base + '/');
    await waitState(page, 'live');
    // History: the last 5, newest on top, as text.
    await eventually('5 messages of history', async () => (await listed(page)).length === 5);
    const history = await listed(page);
    assert.deepEqual(history.map(([, u, c]) => [u, c]), seeds.slice(3).reverse());
    assert.equal(await page.locator('#messages b, #messages script').count(), 0, 'content is never HTML');

    // Load more: the rest, then no button.
    await page.click('#load-more');
    await eventually('all 8 after load more', async () => (await listed(page)).length === 8);
    await assertMatchesDatabase(page, env);
    await eventually('no more to load', async () => page.locator('#load-more').isHidden());
    await page.screenshot({ path: path.join(screenshots, 'feed-page.png'), fullPage: true });

    // A post from the form (keyboard only) appears in another browser.
    const writer = await env.browser();
    const form = await writer.open(api.base + '/');
    await waitState(form, 'live');
    await form.focus('#user_id');
    await form.keyboard.type('dave');
    await form.keyboard.press('Tab');
    const text = `from the form ${Date.now()}`;
    await form.keyboard.type(text);
    assert.equal(await form.textContent('#content-count'), `${text.length} / 280`);
    const started = Date.now();
    await form.keyboard.press('Control+Enter');
    await eventually('the post in the other browser', async () => (await listed(page)).some(([, u, c]) => u === 'dave' && c === text));
    console.log(`form post visible in the other browser after ${Date.now() - started} ms`);
    await eventually('the form clears on 202', async () => (await form.inputValue('#content')) === '');
    assert.equal(await form.textContent('#content-count'), '0 / 280');
    assert.equal(await form.textContent('#post-result'), 'Posted.');
    // Ctrl+Enter twice in a row posts once.
    const twice = `pressed twice ${Date.now()}`;
    await form.fill('#content', twice);
    await form.focus('#content');
    await form.keyboard.press('Control+Enter');
    await form.keyboard.press('Control+Enter');
    await eventually('the double press stored', async () => (await env.rows()).some((r) => r[3] === twice));
    await eventually('the form clears', async () => (await form.inputValue('#content')) === '');
    await eventually('the double press shown', async () => (await listed(page)).some(([, , c]) => c === twice));
    assert.equal((await env.rows()).filter((r) => r[3] === twice).length, 1, 'stored once');

    // Invalid posts show the API's own message next to the field it names.
    await form.fill('#content', 'x'.repeat(281));
    assert.equal(await form.textContent('#content-count'), '281 / 280');
    await form.click('#post-button');
    await eventually('content error', async () => form.locator('#content-error').isVisible());
    assert.equal(await form.textContent('#content-error'), 'content: must be at most 280 characters after trimming (got 281)');
    assert.equal(await form.getAttribute('#content', 'aria-invalid'), 'true');
    await form.fill('#content', 'fine');
    await form.fill('#user_id', 'not a user');
    await form.click('#post-button');
    await eventually('user_id error', async () => form.locator('#user_id-error').isVisible());
    assert.equal(await form.textContent('#user_id-error'), "user_id: may only contain letters A-Z a-z, digits, '_', '.' and '-'");
    assert.ok(await form.locator('#content-error').isHidden(), 'the earlier error is gone');
    await form.screenshot({ path: path.join(screenshots, 'feed-page-error.png') });

    // The user filter: in the URL, history and live.
    await form.fill('#filter', 'alice');
    await form.press('#filter', 'Enter');
    await eventually('filtered URL', async () => new URL(form.url()).searchParams.get('user_id') === 'alice');
    await waitState(form, 'live');
    await eventually('alice only', async () => (await listed(form)).length === 3);
    await api.post('bob', 'bob, live, filtered out');
    await api.post('alice', 'alice, live');
    await eventually('alice live', async () => (await listed(form)).some(([, , c]) => c === 'alice, live'));
    await assertMatchesDatabase(form, env, ([, , user]) => user === 'alice');
    assert.equal(await openSources(form), 1, 'one feed connection per tab, also after a filter change');
    // Back and forward move between the filters without reloading the page.
    await form.goBack();
    await eventually('back to everyone', async () => new URL(form.url()).searchParams.get('user_id') === null
      && (await listed(form)).some(([, u]) => u === 'bob'));
    assert.equal(await form.inputValue('#filter'), '');
    await form.goForward();
    await eventually('forward to alice', async () => {
      const shown = await listed(form);
      return shown.length === 4 && shown.every(([, u]) => u === 'alice');
    });
    assert.equal(await openSources(form), 1);
    // Reloading the filtered address keeps the filter.
    await form.reload();
    await waitState(form, 'live');
    await eventually('alice after reload', async () => (await listed(form)).length === 4);
    assert.equal(await form.inputValue('#filter'), 'alice');

    // Phone width: nothing wider than the screen.
    const phone = await env.browser({ viewport: { width: 360, height: 740 } });
    const small = await phone.open(api.base + '/');
    await waitState(small, 'live');
    await eventually('messages on the phone', async () => (await listed(small)).length > 0);
    const overflow = await small.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow} px wider than a 360 px screen`);
    await small.screenshot({ path: path.join(screenshots, 'feed-page-phone.png'), fullPage: true });

    assert.equal(await assertDeliveredOnce(page) > 0, true);
    for (const b of [reader, phone]) assert.deepEqual(b.problems, []);
    // Chromium logs every non-2xx response; the two refused posts are the
    // only lines, and the page's own script reported nothing.
    assert.deepEqual(writer.problems, Array(2).fill(
      'console error: Failed to load resource: the server responded with a status of 400 (Bad Request)',
    ));
    // One feed connection per tab: the reader's one stream was never replaced.
    assert.equal((await feedEvents(page)).filter((e) => e.type === 'created').length, 1);
  });
});

test('an api restart: the page reconnects by itself with Last-Event-ID and shows every message once, in order', { timeout: TEST_MS }, async () => {
  await withEnv({}, async (env) => {
    const a = await env.api('a');
    // A second instance takes posts while the first one is away.
    const b = await env.api('b');
    for (let i = 1; i <= 3; i++) await a.post('alice', `before ${i}`);
    await env.waitRows(3);
    const browser = await env.browser();
    const page = await browser.open(a.base + '/');
    await waitState(page, 'live');
    await eventually('3 messages', async () => (await listed(page)).length === 3);
    const lastSeen = (await listed(page))[0][0];
    // Both workers own partitions before the first leaves: a member that
    // leaves while the group is still forming can leave the other with none
    // for a while (Tansu's coordinator, docs/ARCHITECTURE.md).
    await eventually('both workers own partitions', async () => {
      for (const api of [a, b]) {
        const { body } = await api.json('/api/status');
        if (!(body.worker.assigned.length > 0)) return false;
      }
      return true;
    });

    await a.stop();
    await waitState(page, 'reconnecting');
    assert.equal(await openSources(page), 1, 'the browser keeps its EventSource while the api is away');
    for (let i = 1; i <= 4; i++) await b.post('bob', `while away ${i}`);
    await env.waitRows(7);
    await a.start();
    await waitState(page, 'resumed');
    await eventually('7 messages', async () => (await listed(page)).length === 7);
    await assertMatchesDatabase(page, env);
    assert.equal(await assertDeliveredOnce(page), 7);

    // The browser's own EventSource sent the cursor it had.
    const resumes = [];
    for (const r of browser.feedRequests.slice(1)) {
      const id = (await r.allHeaders())['last-event-id'];
      if (id !== undefined) resumes.push(id);
    }
    assert.ok(resumes.length > 0, 'a reconnect carried Last-Event-ID');
    assert.deepEqual([...new Set(resumes)], [lastSeen]);
    assert.equal((await feedEvents(page)).filter((e) => e.type === 'created').length, 1, 'the browser reconnected, not the page');
    // Live again after the restart.
    await a.post('carol', 'after the restart');
    await eventually('a live message after the restart', async () => (await listed(page)).length === 8);
    await assertMatchesDatabase(page, env);
    // While the api was down, the browser logged its failed reconnects; nothing else.
    const unexpected = browser.problems.filter((p) => !/ERR_CONNECTION_REFUSED|net::ERR_/.test(p));
    assert.deepEqual(unexpected, []);
  });
});

test('a deleted message leaves the page live, and on reconnect after a deletion made meanwhile', { timeout: TEST_MS }, async () => {
  await withEnv({}, async (env) => {
    const a = await env.api('a');
    const b = await env.api('b');
    const posted = [];
    for (let i = 1; i <= 4; i++) posted.push((await a.post('alice', `post ${i}`)).id);
    await env.waitRows(4);
    const browser = await env.browser();
    const page = await browser.open(a.base + '/');
    await waitState(page, 'live');
    await eventually('4 messages', async () => (await listed(page)).length === 4);

    // Live: the deletion's event removes the message.
    await a.del(posted[1]);
    await eventually('post 2 removed', async () => !(await listed(page)).some(([, , c]) => c === 'post 2'));
    await assertMatchesDatabase(page, env);

    // Away: a deletion made while the page is disconnected arrives on resume.
    await a.stop();
    await waitState(page, 'reconnecting');
    await b.del(posted[2]);
    await eventually('the deletion applied', async () => (await env.rows()).length === 2);
    await a.start();
    await waitState(page, 'resumed');
    await eventually('post 3 removed', async () => !(await listed(page)).some(([, , c]) => c === 'post 3'));
    await assertMatchesDatabase(page, env);
    const deletes = (await feedEvents(page)).filter((e) => e.type === 'delete').length;
    assert.equal(deletes, 2, 'one delete event per deletion');
    await page.screenshot({ path: path.join(screenshots, 'feed-page-deleted.png'), fullPage: true });
  });
});

/** `feed_home_follow_reloads_total` of an api: how often it read a follow set again. */
async function followReloads(api) {
  const text = await (await fetch(api.base + '/metrics')).text();
  const m = text.match(/^feed_home_follow_reloads_total (\S+)/m);
  return m ? Number(m[1]) : 0;
}

/** Waits until the api has read a follow change made after `before` reloads. */
async function waitReloaded(api, before) {
  await eventually('the follow change reached the instance', async () => (await followReloads(api)) > before);
}

test('a home view: follow someone and their next post appears; unfollow and the next does not', { timeout: TEST_MS }, async () => {
  await withEnv({}, async (env) => {
    const a = await env.api('a');
    await a.post('bob', 'before the follow');
    await a.post('carol', 'never followed');
    await env.waitRows(2);
    const browser = await env.browser();
    const page = await browser.open(a.base + '/?home=alice');
    await waitState(page, 'live');
    assert.equal(await page.textContent('#feed-heading'), 'Home of alice');
    await eventually('no messages yet', async () => page.isVisible('#empty'));
    await eventually('the counts', async () => (await page.textContent('#counts')).startsWith('alice follows 0'));

    // Follow bob from the page: his next post appears, the earlier one does not.
    let before = await followReloads(a);
    await page.fill('#follow-target', 'bob');
    await page.click('#follow-form button[type="submit"]');
    await eventually('the counts after following', async () => (await page.textContent('#counts')).startsWith('alice follows 1'));
    await waitReloaded(a, before);
    await a.post('carol', 'still not followed');
    await a.post('bob', 'after the follow');
    await eventually("bob's post on the home view", async () => (await listed(page)).some(([, , c]) => c === 'after the follow'));
    let shown = (await listed(page)).map(([, u, c]) => [u, c]);
    assert.deepEqual(shown, [['bob', 'after the follow']], 'history is not rewritten; carol is not followed');
    await page.screenshot({ path: path.join(screenshots, 'feed-page-home.png'), fullPage: true });

    // Unfollow with the button next to his message: his next post does not appear.
    before = await followReloads(a);
    await page.click('#messages button.follow[data-user="bob"]');
    await eventually('the counts after unfollowing', async () => (await page.textContent('#counts')).startsWith('alice follows 0'));
    await waitReloaded(a, before);
    await a.post('bob', 'after the unfollow');
    await a.post('alice', 'her own post');
    await eventually("alice's own post", async () => (await listed(page)).some(([, , c]) => c === 'her own post'));
    shown = (await listed(page)).map(([, u, c]) => [u, c]);
    console.log(`home view after unfollowing bob: ${JSON.stringify(shown)}`);
    assert.deepEqual(shown, [['alice', 'her own post'], ['bob', 'after the follow']]);
    assert.equal(new URL(page.url()).search, '?home=alice', 'the view is kept in the address');
  });
});

test('a database outage: the page stays live, then shows what was posted meanwhile', { timeout: TEST_MS }, async () => {
  await withEnv({ dbProxy: true }, async (env) => {
    const api = await env.api('a');
    await api.post('alice', 'before the outage');
    await env.waitRows(1);
    const browser = await env.browser();
    const open = await browser.open(api.base + '/');
    await waitState(open, 'live');
    await eventually('1 message', async () => (await listed(open)).length === 1);

    env.proxy.down();
    // A browser arriving now is told "unavailable" with a retry, and keeps trying.
    const late = await browser.open(api.base + '/');
    await eventually('unavailable: database_unavailable', async () => (await feedEvents(late))
      .some((e) => e.type === 'unavailable' && JSON.parse(e.data).reason === 'database_unavailable'));
    await waitState(late, 'reconnecting');
    await eventually('the page says the server is unavailable', async () => (await shownStates(late))
      .some((s) => s === 'reconnecting: Server unavailable; reconnecting in 1 s'));
    // Posts are still accepted: the broker holds them.
    const during = await api.post('bob', 'during the outage');
    env.proxy.restore();
    for (const page of [open, late]) {
      await eventually('the post from the outage', async () => (await listed(page)).some(([, , c]) => c === 'during the outage'));
      await assertMatchesDatabase(page, env);
      assert.equal(await page.$eval('#messages li', (li) => li.dataset.id), during.id);
      assert.ok(['live', 'resumed'].includes(await connectionState(page)));
      // Never given up: no EventSource ever reached CLOSED.
      assert.ok(!(await feedEvents(page)).some((e) => e.type === 'error' && e.readyState === 2));
    }
    assert.deepEqual(browser.problems, []);
  });
});

test('a stale cursor gets reset and the list starts afresh; load more fills it back in order', { timeout: TEST_MS }, async () => {
  await withEnv({}, async (env) => {
    const extra = { FEED_RESUME_WINDOW: '3', FEED_HISTORY_DEFAULT: '5' };
    const a = await env.api('a', extra);
    const b = await env.api('b', extra);
    await a.post('alice', 'one');
    await a.post('alice', 'two');
    await env.waitRows(2);
    const browser = await env.browser();
    const page = await browser.open(a.base + '/');
    await waitState(page, 'live');
    await eventually('2 messages', async () => (await listed(page)).length === 2);

    await a.stop();
    await waitState(page, 'reconnecting');
    for (let i = 1; i <= 10; i++) await b.post('bob', `away ${i}`);
    await env.waitRows(12);
    await a.start();
    // Cursor 2 is 10 behind with a window of 3: reset, then the last 5.
    await eventually('reset: cursor_too_old', async () => (await feedEvents(page))
      .some((e) => e.type === 'reset' && JSON.parse(e.data).reason === 'cursor_too_old'));
    await eventually('the newest 5', async () => {
      const shown = await listed(page);
      return shown.length === 5 && shown[0][0] === '12' && shown[4][0] === '8';
    });
    assert.ok(await page.locator('#notice').isVisible());
    assert.match(await page.textContent('#notice'), /older than the resume window/);
    await page.click('#load-more');
    await eventually('all 12', async () => (await listed(page)).length === 12);
    await assertMatchesDatabase(page, env);
    assert.deepEqual(browser.problems.filter((p) => !/net::ERR_/.test(p)), []);
  });
});

test('a lagged stream: the browser resumes from the lagged cursor and the list stays whole', { timeout: TEST_MS }, async () => {
  await withEnv({}, async (env) => {
    // A ring of one event: any burst overtakes a client.
    const api = await env.api('a', { FEED_CLIENT_BUFFER: '1' });
    await api.post('alice', 'start');
    await env.waitRows(1);
    const browser = await env.browser();
    const page = await browser.open(api.base + '/');
    await waitState(page, 'live');
    await eventually('1 message', async () => (await listed(page)).length === 1);
    // Bursts until the page has been told it lagged (a failed post fails the test).
    let posted = 1;
    for (let burst = 0; !(await feedEvents(page)).some((e) => e.type === 'lagged'); burst++) {
      assert.ok(burst < 20, 'no lagged event after 20 bursts of 50 posts');
      await Promise.all(Array.from({ length: 50 }, (_, i) => api.post('bob', `burst ${posted + i}`)));
      posted += 50;
      // Let the burst reach the page before deciding on another.
      await env.waitRows(posted);
      await eventually('the burst released', async () => {
        const { body } = await api.json('/api/status');
        return body.broadcaster.last_released >= posted;
      });
    }
    const lagged = (await feedEvents(page)).find((e) => e.type === 'lagged');
    assert.equal(JSON.parse(lagged.data).last_event_id, lagged.id);
    await env.waitRows(posted);
    await eventually(`${posted} messages`, async () => (await listed(page)).length === posted);
    await assertMatchesDatabase(page, env);
    assert.equal(await assertDeliveredOnce(page), posted);
    const resumed = [];
    for (const r of browser.feedRequests.slice(1)) resumed.push((await r.allHeaders())['last-event-id']);
    assert.ok(resumed.includes(lagged.id), `a reconnect resumed from ${lagged.id}: ${resumed}`);
    const states = await shownStates(page);
    assert.ok(states.includes('reconnecting: Catching up…'), `the page said it was catching up: ${states}`);
    assert.ok(states.indexOf('resumed: Live (resumed)') > states.indexOf('reconnecting: Catching up…'));
    assert.deepEqual(browser.problems, []);
  });
});

test('/status shows numbers that match the database, and a database failure with its cause', { timeout: TEST_MS }, async () => {
  await withEnv({ dbProxy: true }, async (env) => {
    const api = await env.api('a');
    for (let i = 1; i <= 7; i++) await api.post(i % 2 ? 'alice' : 'bob', `status ${i}`);
    await env.waitRows(7);
    const browser = await env.browser();
    const feed = await browser.open(api.base + '/');
    await waitState(feed, 'live');
    const page = await browser.open(api.base + '/status');
    const [[count, max]] = await psql(env.dbUrl, 'SELECT count(*), max(seq) FROM messages');
    await eventually('status numbers', async () => (await page.textContent('#stored')) === count
      && (await page.textContent('#last-seq')) === max
      && (await page.textContent('#last-released')) === max);
    assert.equal(await page.textContent('#check-database'), 'ready');
    assert.equal(await page.textContent('#check-broker'), 'ready');
    assert.match(await page.textContent('#clients'), /^1 of at most /);
    assert.match(await page.textContent('#posts-per-second'), / \(7 in \d+ s\)$/);
    assert.equal(await page.textContent('#delivered'), '7');
    // The charts: a bar a second whose values add up to the 7 posts, and the
    // latency lines with a point for each second that delivered something.
    await eventually('charts drawn', async () => {
      const bars = await page.$$eval('#chart-posts rect.bar', (rects) => rects.map((r) => r.querySelector('title').textContent));
      const posts = bars.reduce((sum, t) => sum + Number(t.split(' ')[0]), 0);
      const points = await page.$$eval('#chart-latency path', (lines) => lines.map((l) => Number(l.dataset.points)));
      return bars.length > 0 && posts === 7 && points.length === 2 && points.every((n) => n > 0);
    });
    assert.match(await page.textContent('#latency-p99'), /^[\d.,]+ ms$/);
    // Partitions that carried records: their next offsets add up to the 7
    // records of this test's fresh topic, with no lag.
    await eventually('partitions with 7 records and no lag', async () => {
      const rows = await page.$$eval('#partitions tbody tr', (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent)));
      return rows.length > 0 && rows.every((r) => r[2] === '0' && r[4] === 'ok')
        && rows.reduce((sum, r) => sum + Number(r[1]), 0) === 7;
    });
    const { body } = await api.json('/api/status');
    assert.equal(body.messages.stored, Number(count));
    assert.doesNotMatch(JSON.stringify(body), /postgres(ql)?:\/\/|password/i, 'nothing secret');
    await page.screenshot({ path: path.join(screenshots, 'status-page.png'), fullPage: true });

    env.proxy.down();
    await eventually('database unavailable', async () => /^(unavailable|timeout): /.test(await page.textContent('#check-database')));
    assert.equal(await page.$eval('#updated', (el) => el.dataset.state), 'failed');
    assert.equal(await page.textContent('#stored'), 'unknown');
    env.proxy.restore();
    await eventually('database back', async () => (await page.textContent('#check-database')) === 'ready');
    assert.deepEqual(browser.problems, []);
  });
});
