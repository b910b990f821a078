// The live feed page (GET /): one EventSource per tab on /api/feed, a post
// form, a user filter or a home timeline kept in the URL (?user_id=,
// ?home=), follow buttons, and "load older" through pages.
// The contract it relies on is docs/API.md; everything user-supplied is
// rendered with textContent, never as HTML.
'use strict';

(() => {
  const MAX_CHARS = 280;
  const USER_ID = /^[A-Za-z0-9_.-]{1,64}$/;
  const PAGE = 50;
  // A tab left open for days must not grow without bound: past this many
  // messages the oldest leave the list (and "Load older" brings them back).
  const MAX_SHOWN = 1000;
  // When the browser's EventSource gives up for good (a proxy answering an
  // error status, say), the page opens a new one after this, doubling.
  const REOPEN_MIN_MS = 2000;
  const REOPEN_MAX_MS = 60000;

  const $ = (id) => document.getElementById(id);
  const list = $('messages');
  const connection = $('connection');
  const notice = $('notice');
  const loadMore = $('load-more');
  const empty = $('empty');

  /** cursor (BigInt) -> <li>, for exactly-once display in cursor order. */
  const shown = new Map();
  /** Ids of messages deleted while this tab was open: never shown again
   * (an older page fetched before the deletion may still carry one). */
  const deleted = new Set();
  const MAX_DELETED = 10000;
  let filter = '';
  /** The reader whose home timeline is shown ('' for none). */
  let home = '';
  /** Whom `followsOf` follows, for the buttons next to each author. */
  let follows = new Set();
  let followsOf = '';
  let source = null;
  let opened = false;
  let reopenDelay = REOPEN_MIN_MS;
  let reopenTimer = null;
  let olderDone = false;
  /** The last event id this tab received, to resume from if the browser gives up. */
  let lastId;
  /** Why the stream ended (refused, lagged): kept while the browser reconnects. */
  let hint = null;
  /** Bumped whenever the list starts afresh, so a page fetched before it is dropped. */
  let generation = 0;

  // ---- the list -----------------------------------------------------------

  const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

  function render(message, cursor) {
    const li = document.createElement('li');
    li.dataset.cursor = cursor.toString();
    li.dataset.id = message.id;
    const meta = document.createElement('div');
    meta.className = 'meta';
    const user = document.createElement('a');
    user.className = 'user';
    user.textContent = message.user_id;
    user.href = '?user_id=' + encodeURIComponent(message.user_id);
    user.addEventListener('click', (e) => {
      // Ctrl/Cmd/Shift-click and middle-click keep their usual meaning.
      if (e.button !== 0 || e.ctrlKey || e.metaKey || e.shiftKey || e.altKey) return;
      e.preventDefault();
      setFilter(message.user_id, true);
      // The link is gone with the old list: keep the keyboard where it was.
      $('filter').focus();
    });
    const time = document.createElement('time');
    const created = new Date(message.created_at);
    time.dateTime = message.created_at;
    time.textContent = created.toDateString() === new Date().toDateString()
      ? timeFormat.format(created)
      : dateFormat.format(created);
    meta.append(user, time);
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'follow';
    button.dataset.user = message.user_id;
    button.addEventListener('click', () => toggleFollow(message.user_id));
    setButton(button);
    meta.append(button);
    const content = document.createElement('p');
    content.className = 'content';
    content.textContent = message.content;
    li.append(meta, content);
    return li;
  }

  /** Inserts a message where its cursor belongs (newest on top), once. */
  function show(message, cursorText) {
    let cursor;
    try {
      cursor = BigInt(cursorText);
    } catch {
      return;
    }
    if (shown.has(cursor) || deleted.has(message.id)) return;
    const li = render(message, cursor);
    // Live messages go on top and older pages at the bottom; anything else
    // walks the list to its place.
    const first = list.firstElementChild;
    const last = list.lastElementChild;
    if (!first || cursor > BigInt(first.dataset.cursor)) {
      list.prepend(li);
    } else if (cursor < BigInt(last.dataset.cursor)) {
      list.append(li);
    } else {
      let next = first;
      while (next && BigInt(next.dataset.cursor) > cursor) next = next.nextElementSibling;
      list.insertBefore(li, next);
    }
    shown.set(cursor, li);
    if (li === list.firstElementChild) {
      while (shown.size > MAX_SHOWN) {
        const oldest = list.lastElementChild;
        shown.delete(BigInt(oldest.dataset.cursor));
        oldest.remove();
        olderDone = false;
      }
    }
    updateEmpty();
  }

  /** Removes a deleted message, now and for good. */
  function remove(id, cursorText) {
    deleted.add(id);
    if (deleted.size > MAX_DELETED) deleted.delete(deleted.values().next().value);
    let cursor = null;
    try {
      cursor = BigInt(cursorText);
    } catch {
      // Found by id below.
    }
    let li = cursor !== null ? shown.get(cursor) : undefined;
    if (!li) {
      li = [...list.children].find((el) => el.dataset.id === id);
      if (li) cursor = BigInt(li.dataset.cursor);
    }
    if (li) {
      li.remove();
      shown.delete(cursor);
    }
    updateEmpty();
  }

  function clearList() {
    list.replaceChildren();
    shown.clear();
    olderDone = false;
    // A new list resumes from nothing of the old one's (a filter, a reset).
    lastId = undefined;
    generation += 1;
    updateEmpty();
  }

  function updateEmpty() {
    empty.hidden = shown.size > 0 || !opened;
    const hide = shown.size === 0 || olderDone;
    if (hide && document.activeElement === loadMore) $('feed-heading').focus();
    loadMore.hidden = hide;
  }

  /** Shows a notice above the list (`kind` says which, so it can be cleared). */
  function say(text, kind = '') {
    notice.textContent = text;
    notice.dataset.kind = kind;
    notice.hidden = !text;
  }

  // ---- the stream ---------------------------------------------------------

  function setState(state, text) {
    connection.dataset.state = state;
    connection.textContent = text;
  }

  function feedUrl(resumeFrom) {
    const query = new URLSearchParams();
    if (filter) query.set('user_id', filter);
    if (home) query.set('home', home);
    if (resumeFrom !== undefined) query.set('last_event_id', resumeFrom.toString());
    const q = query.toString();
    return '/api/feed' + (q ? '?' + q : '');
  }

  /** Opens the one feed connection of this tab (closing any other). */
  function connect(resumeFrom) {
    if (source) source.close();
    clearTimeout(reopenTimer);
    opened = false;
    hint = null;
    setState('connecting', 'Connecting…');
    const es = new EventSource(feedUrl(resumeFrom));
    source = es;
    es.addEventListener('open', () => {
      if (es !== source) return;
      reopenDelay = REOPEN_MIN_MS;
      hint = null;
      if (opened) {
        setState('resumed', 'Live (resumed)');
      } else {
        setState(resumeFrom === undefined ? 'live' : 'resumed', resumeFrom === undefined ? 'Live' : 'Live (resumed)');
      }
      opened = true;
      updateEmpty();
    });
    es.addEventListener('error', () => {
      if (es !== source) return;
      if (es.readyState === EventSource.CLOSED) {
        // The browser will not retry this one (an error status). Open a new
        // stream later, resuming from the newest message shown.
        const delay = Math.round(reopenDelay * (0.5 + Math.random()));
        reopenDelay = Math.min(reopenDelay * 2, REOPEN_MAX_MS);
        setState('closed', 'Disconnected; trying again in ' + Math.ceil(delay / 1000) + ' s');
        reopenTimer = setTimeout(() => connect(lastId), delay);
      } else {
        setState('reconnecting', hint || 'Reconnecting…');
      }
    });
    es.addEventListener('message', (event) => {
      if (es !== source) return;
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      lastId = event.lastEventId;
      show(message, event.lastEventId);
      if (notice.dataset.kind === 'lagged') say('');
    });
    es.addEventListener('delete', (event) => {
      if (es !== source) return;
      let deletion;
      try {
        deletion = JSON.parse(event.data);
      } catch {
        return;
      }
      lastId = event.lastEventId;
      remove(deletion.id, deletion.cursor);
    });
    es.addEventListener('reset', (event) => {
      if (es !== source) return;
      // The server could not resume from our cursor (too old, or unknown):
      // the stream starts afresh with the newest messages. Start the list
      // afresh too, so it never hides a gap; older ones are a "load" away.
      clearList();
      // Its id is where the fresh stream starts: the list's cursor now.
      if (event.lastEventId) lastId = event.lastEventId;
      say(describe(event, 'The feed started afresh') + ' Older messages are below "Load older messages".', 'reset');
    });
    es.addEventListener('lagged', (event) => {
      if (es !== source) return;
      // The server ends this stream; the browser reconnects with this id and
      // the server sends everything missed.
      if (event.lastEventId) lastId = event.lastEventId;
      say('This page fell behind the feed; catching up…', 'lagged');
      hint = 'Catching up…';
      setState('reconnecting', hint);
    });
    es.addEventListener('unavailable', (event) => {
      if (es !== source) return;
      let seconds = '';
      try {
        seconds = ' in ' + Math.ceil(JSON.parse(event.data).retry_ms / 1000) + ' s';
      } catch { /* keep the generic text */ }
      hint = 'Server unavailable; reconnecting' + seconds;
      setState('reconnecting', hint);
    });
  }

  function describe(event, fallback) {
    try {
      const data = JSON.parse(event.data);
      return (data.message ? data.message.charAt(0).toUpperCase() + data.message.slice(1) : fallback) + '.';
    } catch {
      return fallback + '.';
    }
  }

  // ---- older pages --------------------------------------------------------

  async function loadOlder() {
    const last = list.lastElementChild;
    if (!last) return;
    const query = new URLSearchParams({ before: last.dataset.cursor, limit: String(PAGE) });
    if (filter) query.set('user_id', filter);
    if (home) query.set('home', home);
    const wanted = generation;
    loadMore.disabled = true;
    try {
      const res = await fetch('/api/messages?' + query.toString(), { headers: { Accept: 'application/json' } });
      const body = await res.json().catch(() => null);
      // The list started afresh meanwhile (a filter, a reset): this page
      // would sit under it with a gap.
      if (wanted !== generation) return;
      if (!res.ok || !body) {
        say((body && body.message) ? 'Could not load older messages: ' + body.message : 'Could not load older messages; try again.');
        return;
      }
      for (const m of body.messages) show(m, m.cursor);
      if (body.next_before === null) olderDone = true;
      updateEmpty();
    } catch {
      say('Could not reach the server to load older messages; try again.');
    } finally {
      loadMore.disabled = false;
    }
  }

  // ---- the view: everyone, one user, or a home timeline ----------------------

  /** Shows `kind` ('user_id' or 'home') of `value` ('' for everyone). */
  function setView(kind, value, push, quiet = false) {
    const input = $(kind === 'home' ? 'home' : 'filter');
    const error = $(kind === 'home' ? 'home-error' : 'filter-error');
    value = value.trim();
    if (value && !USER_ID.test(value)) {
      error.textContent = 'A user is 1 to 64 letters, digits, "_", "." or "-".';
      error.hidden = false;
      input.value = value;
      input.setAttribute('aria-invalid', 'true');
      if (!quiet) input.focus();
      return;
    }
    for (const id of ['filter-error', 'home-error']) $(id).hidden = true;
    for (const id of ['filter', 'home']) $(id).removeAttribute('aria-invalid');
    const wantFilter = kind === 'user_id' ? value : '';
    const wantHome = kind === 'home' ? value : '';
    $('filter').value = wantFilter;
    $('home').value = wantHome;
    $('clear-filter').hidden = !wantFilter && !wantHome;
    if (wantFilter === filter && wantHome === home && source) return;
    filter = wantFilter;
    home = wantHome;
    if (push) {
      const url = new URL(location.href);
      url.searchParams.delete('user_id');
      url.searchParams.delete('home');
      if (filter) url.searchParams.set('user_id', filter);
      if (home) url.searchParams.set('home', home);
      history.pushState({ user_id: filter, home }, '', url);
    }
    document.title = home ? 'Feed: home of ' + home : filter ? 'Feed: ' + filter : 'Feed';
    $('feed-heading').textContent = home ? 'Home of ' + home : 'Messages';
    $('home-panel').hidden = !home;
    clearList();
    say('');
    connect();
    loadFollows();
  }

  function setFilter(value, push, quiet = false) {
    setView('user_id', value, push, quiet);
  }

  $('filter-form').addEventListener('submit', (e) => {
    e.preventDefault();
    setFilter($('filter').value, true);
  });
  $('home-form').addEventListener('submit', (e) => {
    e.preventDefault();
    setView('home', $('home').value, true);
  });
  $('clear-filter').addEventListener('click', () => setFilter('', true));
  window.addEventListener('popstate', () => {
    const q = new URLSearchParams(location.search);
    if (q.get('home')) setView('home', q.get('home'), false);
    else setFilter(q.get('user_id') || '', false);
  });
  loadMore.addEventListener('click', loadOlder);

  // ---- following ----------------------------------------------------------

  /** Who acts on the follow buttons: the home reader, else the post form's user. */
  function actor() {
    if (home) return home;
    const user = $('user_id').value.trim();
    return USER_ID.test(user) ? user : '';
  }

  function setButton(button) {
    const who = actor();
    const author = button.dataset.user;
    button.hidden = !who || who !== followsOf || author === who;
    const on = follows.has(author);
    button.textContent = on ? 'Unfollow' : 'Follow';
    button.setAttribute('aria-label', (on ? 'Unfollow ' : 'Follow ') + author);
    button.setAttribute('aria-pressed', on ? 'true' : 'false');
  }

  function refreshButtons() {
    for (const button of list.querySelectorAll('button.follow')) setButton(button);
  }

  /** Reads whom the actor follows (all pages), then the counts of a home view. */
  async function loadFollows() {
    const who = actor();
    if (!who) {
      followsOf = '';
      follows = new Set();
      refreshButtons();
      return;
    }
    try {
      const all = new Set();
      let after = null;
      do {
        const query = new URLSearchParams({ limit: '1000' });
        if (after) query.set('after', after);
        const res = await fetch('/api/users/' + encodeURIComponent(who) + '/following?' + query.toString(), { headers: { Accept: 'application/json' } });
        if (!res.ok) return;
        const body = await res.json();
        for (const id of body.following) all.add(id);
        after = body.next_after;
      } while (after);
      if (who !== actor()) return;
      follows = all;
      followsOf = who;
      refreshButtons();
    } catch {
      // The buttons stay hidden; the next change of view tries again.
    }
    loadCounts();
  }

  async function loadCounts() {
    if (!home) return;
    const who = home;
    try {
      const res = await fetch('/api/users/' + encodeURIComponent(who), { headers: { Accept: 'application/json' } });
      const c = await res.json();
      if (!res.ok || who !== home) return;
      const plural = (n, word) => n + ' ' + word + (n === 1 ? '' : 's');
      $('counts').textContent = who + ' follows ' + c.following + ' · ' + plural(c.followers, 'follower') + ' · ' + plural(c.posts, 'post');
    } catch {
      $('counts').textContent = '';
    }
  }

  /** Follows or unfollows `target` as the actor. */
  async function toggleFollow(target, wanted = !follows.has(target)) {
    const who = actor();
    if (!who) return false;
    const error = $('follow-error');
    error.hidden = true;
    try {
      const res = await fetch('/api/users/' + encodeURIComponent(who) + '/following/' + encodeURIComponent(target), {
        method: wanted ? 'PUT' : 'DELETE',
        headers: { Accept: 'application/json' },
      });
      if (res.status !== 204) {
        const body = await res.json().catch(() => null);
        error.textContent = body && body.message ? body.message : 'The server answered ' + res.status + '.';
        error.hidden = false;
        return false;
      }
      if (wanted) follows.add(target);
      else follows.delete(target);
      refreshButtons();
      loadCounts();
      // A home view shows the change from the next message on (history is
      // not rewritten): say so once.
      if (home) say(wanted ? target + ' followed: their next posts appear here.' : target + ' unfollowed: their next posts will not appear here.', 'follow');
      return true;
    } catch {
      error.textContent = 'Could not reach the server; try again.';
      error.hidden = false;
      return false;
    }
  }

  $('follow-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const input = $('follow-target');
    const target = input.value.trim();
    if (!USER_ID.test(target)) {
      $('follow-error').textContent = 'A user is 1 to 64 letters, digits, "_", "." or "-".';
      $('follow-error').hidden = false;
      input.focus();
      return;
    }
    if (await toggleFollow(target, true)) input.value = '';
  });

  // ---- posting ------------------------------------------------------------

  const form = $('post-form');
  const userInput = $('user_id');
  const contentInput = $('content');
  const counter = $('content-count');
  // One key per draft: a retry of the same text after a timeout or a 503 is
  // stored once (docs/API.md, Idempotency-Key); a new text gets a new key.
  let draftKey = null;
  let sending = false;

  function newKey() {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  function countChars() {
    // The server counts Unicode scalar values after trimming.
    const n = [...contentInput.value.trim()].length;
    counter.textContent = n + ' / ' + MAX_CHARS;
    counter.classList.toggle('over', n > MAX_CHARS);
  }

  function fieldError(field, text) {
    const input = field === 'user_id' ? userInput : field === 'content' ? contentInput : null;
    const box = input ? $(field + '-error') : $('form-error');
    box.textContent = text;
    box.hidden = !text;
    if (input) {
      if (text) input.setAttribute('aria-invalid', 'true');
      else input.removeAttribute('aria-invalid');
    }
  }

  function clearErrors() {
    fieldError('user_id', '');
    fieldError('content', '');
    fieldError('form', '');
  }

  contentInput.addEventListener('input', () => {
    draftKey = null;
    countChars();
  });
  userInput.addEventListener('input', () => { draftKey = null; });
  // The post form's user acts on the follow buttons outside a home view.
  userInput.addEventListener('change', () => { if (!home) loadFollows(); });
  contentInput.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      // A second press after a quick 202 finds the box cleared: posting
      // nothing would only earn an error (the Post button still shows it).
      if (contentInput.value.trim() === '') return;
      form.requestSubmit();
    }
  });

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    // Ctrl+Enter submits even while the button is disabled.
    if (sending) return;
    clearErrors();
    $('post-result').textContent = '';
    const button = $('post-button');
    if (!draftKey) draftKey = newKey();
    const sent = contentInput.value;
    sending = true;
    button.disabled = true;
    try {
      const res = await fetch('/api/messages', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'Idempotency-Key': draftKey, Accept: 'application/json' },
        body: JSON.stringify({ user_id: userInput.value, content: sent }),
      });
      const body = await res.json().catch(() => null);
      if (res.status === 202) {
        try { localStorage.setItem('feed.user_id', userInput.value); } catch { /* private mode */ }
        // Text typed while the post was on its way is a new draft: keep it.
        if (contentInput.value === sent) {
          contentInput.value = '';
          draftKey = null;
        }
        countChars();
        $('post-result').textContent = 'Posted.';
        contentInput.focus();
        return;
      }
      let text = body && body.message ? body.message : 'The server answered ' + res.status + '.';
      const retry = res.headers.get('Retry-After');
      if (retry && (res.status === 429 || res.status === 503)) text += ' Try again in ' + retry + ' s.';
      fieldError(body && (body.field === 'user_id' || body.field === 'content') ? body.field : 'form', text);
      const bad = body && body.field === 'user_id' ? userInput : body && body.field === 'content' ? contentInput : null;
      if (bad) bad.focus();
    } catch {
      fieldError('form', 'Could not reach the server; the message was not confirmed. Posting again will not post it twice.');
    } finally {
      sending = false;
      button.disabled = false;
    }
  });

  // ---- start --------------------------------------------------------------

  try {
    userInput.value = localStorage.getItem('feed.user_id') || '';
  } catch { /* private mode */ }
  countChars();
  const start = new URLSearchParams(location.search);
  if (start.get('home')) setView('home', start.get('home'), false, true);
  else setFilter(start.get('user_id') || '', false, true);
  if (!source) connect(); // an invalid ?user_id= or ?home= in the address: show everyone
})();
