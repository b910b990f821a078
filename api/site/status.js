// The status page (GET /status): GET /api/status every few seconds, shown
// as text (docs/OPERATIONS.md explains each number).
'use strict';

(() => {
  const EVERY_MS = 3000;
  // A request that hangs must not stop the refreshing.
  const TIMEOUT_MS = 5000;
  const $ = (id) => document.getElementById(id);
  const number = new Intl.NumberFormat();

  function set(id, text) {
    $(id).textContent = text;
  }

  function count(value) {
    return value === null || value === undefined ? 'unknown' : number.format(value);
  }

  function check(id, result) {
    const dd = $(id);
    dd.className = result.status === 'ok' ? 'ok' : 'bad';
    dd.textContent = result.status === 'ok' ? 'ready' : result.status + (result.error ? ': ' + result.error : '');
  }

  function duration(seconds) {
    const d = Math.floor(seconds / 86400);
    const h = Math.floor((seconds % 86400) / 3600);
    const m = Math.floor((seconds % 3600) / 60);
    const s = seconds % 60;
    return (d ? d + ' d ' : '') + (d || h ? h + ' h ' : '') + (d || h || m ? m + ' min ' : '') + s + ' s';
  }

  function millis(value) {
    return value === null ? 'nothing delivered' : number.format(value) + ' ms';
  }

  const SVG = 'http://www.w3.org/2000/svg';
  const W = 300;
  const H = 80;

  function svgNode(name, attrs) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    return node;
  }

  // A bar a second, scaled to the busiest one; its value in a tooltip.
  function barChart(svg, scale, values, label) {
    const max = Math.max(1, ...values);
    const step = W / 60;
    const bars = values.map((v, i) => {
      const h = (v / max) * (H - 4);
      const bar = svgNode('rect', { x: W - (values.length - i) * step, y: H - h, width: Math.max(step - 1, 1), height: h, class: 'bar' });
      bar.appendChild(svgNode('title', {})).textContent = label(v, values.length - 1 - i);
      return bar;
    });
    scale.textContent = '(top: ' + number.format(max) + ')';
    svg.replaceChildren(...bars);
  }

  // One line per series, a level a second (a gap where nothing was
  // delivered), so a single second shows too.
  function lineChart(svg, scale, series) {
    const all = series.flatMap((s) => s.values).filter((v) => v !== null);
    const max = Math.max(1, ...all);
    const step = W / 60;
    const lines = series.map((s) => {
      let d = '';
      let drawn = 0;
      s.values.forEach((v, i) => {
        if (v === null) return;
        const x = W - (s.values.length - i) * step;
        const y = (H - 2 - (v / max) * (H - 4)).toFixed(1);
        const joined = i > 0 && s.values[i - 1] !== null;
        d += (joined ? ' L' : ' M') + x.toFixed(1) + ' ' + y + ' L' + (x + step).toFixed(1) + ' ' + y;
        drawn += 1;
      });
      return svgNode('path', { d: d.trim() || 'M0 0', class: 'line ' + s.name, 'data-points': drawn });
    });
    scale.textContent = '(top: ' + number.format(max) + ' ms)';
    svg.replaceChildren(...lines);
  }

  function charts(minute) {
    const seconds = minute.seconds;
    barChart($('chart-posts'), $('scale-posts'), seconds.map((s) => s.posts), (v, ago) => `${number.format(v)} posts, ${ago} s ago`);
    lineChart($('chart-latency'), $('scale-latency'), [
      { name: 'p50', values: seconds.map((s) => s.delivery_p50_ms) },
      { name: 'p99', values: seconds.map((s) => s.delivery_p99_ms) },
    ]);
  }

  function show(s) {
    check('check-database', s.checks.database);
    check('check-broker', s.checks.broker);
    set('stored', count(s.messages.stored));
    set('deleted', count(s.messages.deleted));
    set('last-seq', count(s.messages.last_seq));
    set('last-released', count(s.broadcaster.last_released));
    set('held-back', count(s.broadcaster.held_back));
    set('clients', count(s.feed.clients) + ' of at most ' + count(s.feed.max_clients));
    set('home-streams', count(s.feed.home_streams) + ' (for ' + count(s.feed.home_readers) + (s.feed.home_readers === 1 ? ' reader)' : ' readers)'));
    const minute = s.last_minute;
    set('posts-per-second', minute.posts_per_second.toFixed(1) + ' (' + count(minute.posts) + ' in ' + minute.window_s + ' s)');
    set('delivered', count(minute.delivered));
    set('latency-p50', millis(minute.delivery_p50_ms));
    set('latency-p99', millis(minute.delivery_p99_ms));
    charts(minute);
    const worker = s.worker;
    const body = $('partitions').tBodies[0];
    body.replaceChildren();
    if (worker.status === 'disabled') {
      set('worker-state', 'This instance runs no worker (WORKER_ENABLED=false).');
    } else {
      set('worker-state', worker.partitions.length
        ? (worker.status === 'stalled' ? 'Stalled on a partition: see docs/OPERATIONS.md.' : 'Working.') + ' Partitions owned by this instance:'
        : 'This instance owns no partition right now (another instance has them, or the group is rebalancing).');
      for (const p of worker.partitions) {
        const row = body.insertRow();
        for (const cell of [p.partition, count(p.offset), count(p.lag), duration(p.idle_s), p.stalled ? 'stalled' : 'ok']) {
          row.insertCell().textContent = String(cell);
        }
        row.dataset.partition = String(p.partition);
        if (p.stalled) row.className = 'bad';
      }
    }
    set('version', s.instance.version);
    set('uptime', duration(s.instance.uptime_s));
    const updated = $('updated');
    const healthy = s.checks.database.status === 'ok' && s.checks.broker.status === 'ok';
    updated.dataset.state = healthy ? 'ok' : 'failed';
    updated.textContent = (healthy ? 'Healthy' : 'Degraded') + ', updated ' + new Date().toLocaleTimeString();
  }

  async function refresh() {
    try {
      const res = await fetch('/api/status', {
        headers: { Accept: 'application/json' },
        cache: 'no-store',
        signal: AbortSignal.timeout(TIMEOUT_MS),
      });
      if (!res.ok) throw new Error('status ' + res.status);
      show(await res.json());
      document.body.classList.remove('stale');
    } catch (e) {
      const updated = $('updated');
      updated.dataset.state = 'failed';
      updated.textContent = 'Cannot reach this instance (' + (e.name === 'TimeoutError' ? 'no answer in 5 s' : e.message) + '); the figures below are old; retrying';
      document.body.classList.add('stale');
    } finally {
      setTimeout(refresh, EVERY_MS);
    }
  }

  refresh();
})();
