'use strict';
// Everything from the server is written with textContent: event data is never parsed as HTML.
(() => {
  const MAX_EVENTS = 200;
  const body = document.body;
  const list = document.getElementById('events');
  const table = document.getElementById('deliveries');
  const status = document.getElementById('status');
  const filter = document.getElementById('filter');

  function cell(row, text) {
    const td = document.createElement('td');
    td.textContent = String(text);
    row.appendChild(td);
  }

  function addEvent(ev) {
    if (typeof ev.tag !== 'string') return;
    const li = document.createElement('li');
    li.dataset.tag = ev.tag;
    if (ev.tag.startsWith('saltgate/stream/')) li.className = 'notice';
    const tag = document.createElement('span');
    tag.className = 'tag';
    tag.textContent = ev.tag;
    const pre = document.createElement('pre');
    pre.textContent = JSON.stringify(ev.data, null, 2);
    li.append(tag, pre);
    li.hidden = !ev.tag.startsWith(filter.value);
    list.prepend(li);
    while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
  }

  filter.addEventListener('input', () => {
    for (const li of list.children) li.hidden = !li.dataset.tag.startsWith(filter.value);
  });

  const source = new EventSource(body.dataset.events, { withCredentials: true });
  source.onopen = () => { status.textContent = 'live'; status.className = 'ok'; };
  source.onerror = () => { status.textContent = 'reconnecting…'; status.className = 'bad'; };
  source.onmessage = (m) => {
    try { addEvent(JSON.parse(m.data)); } catch (_) { /* not an event */ }
  };

  async function refreshDeliveries() {
    try {
      const r = await fetch(body.dataset.deliveries, {
        credentials: 'same-origin', headers: { Accept: 'application/json' }, cache: 'no-store',
      });
      if (r.status === 401) { location.reload(); return; }
      if (!r.ok) return;
      const { deliveries } = await r.json();
      const rows = deliveries.map((d) => {
        const tr = document.createElement('tr');
        tr.dataset.tag = d.tag;
        tr.className = d.status < 300 ? 'ok' : 'bad';
        for (const v of [d.time, d.tag, d.client_ip, d.status, d.outcome]) cell(tr, v);
        return tr;
      });
      table.replaceChildren(...rows);
      drawChart(deliveries);
    } catch (_) { /* retried on the next tick */ }
  }

  // Hooks per minute over the last 30 minutes, accepted (2xx) above refused, from the recent
  // answers. Drawn on a canvas: no external assets.
  const chart = document.getElementById('chart');
  function drawChart(deliveries) {
    const minutes = 30;
    const now = Math.floor(Date.now() / 60000);
    const ok = new Array(minutes).fill(0);
    const bad = new Array(minutes).fill(0);
    for (const d of deliveries) {
      const t = Date.parse(String(d.time).replace(' ', 'T').replace(/(\.\d{3})\d*$/, '$1') + 'Z');
      if (Number.isNaN(t)) continue;
      const i = minutes - 1 - (now - Math.floor(t / 60000));
      if (i < 0 || i >= minutes) continue;
      if (d.status < 300) ok[i] += 1; else bad[i] += 1;
    }
    const ctx = chart.getContext('2d');
    const w = chart.width / minutes;
    const top = Math.max(1, ...ok.map((n, i) => n + bad[i]));
    ctx.clearRect(0, 0, chart.width, chart.height);
    for (let i = 0; i < minutes; i += 1) {
      const hOk = (ok[i] / top) * (chart.height - 2);
      const hBad = (bad[i] / top) * (chart.height - 2);
      ctx.fillStyle = '#2e7d32';
      ctx.fillRect(i * w + 1, chart.height - hOk, w - 2, hOk);
      ctx.fillStyle = '#c62828';
      ctx.fillRect(i * w + 1, chart.height - hOk - hBad, w - 2, hBad);
    }
    chart.dataset.total = String(ok.reduce((a, b) => a + b, 0) + bad.reduce((a, b) => a + b, 0));
  }

  // The delivery log: the spool's entries, newest first; a row opens its event.
  const log = document.getElementById('log');
  const logPath = document.getElementById('log-path');
  const logState = document.getElementById('log-state');
  const logStatus = document.getElementById('log-status');
  const entry = document.getElementById('entry');
  const entrySeq = document.getElementById('entry-seq');
  const entryEvent = document.getElementById('entry-event');
  const entryStatus = document.getElementById('entry-status');
  const redeliverButton = document.getElementById('redeliver');
  let selected = null;

  function utc(ms) {
    return typeof ms === 'number' ? new Date(ms).toISOString().replace('T', ' ').replace('Z', '') : '';
  }

  async function getJson(url, init) {
    const r = await fetch(url, Object.assign({
      credentials: 'same-origin', headers: { Accept: 'application/json' }, cache: 'no-store',
    }, init || {}));
    if (r.status === 401) { location.reload(); return null; }
    const json = await r.json().catch(() => ({}));
    return { ok: r.ok, status: r.status, json };
  }

  async function refreshLog() {
    const q = new URLSearchParams();
    if (logPath.value) q.set('path', logPath.value);
    if (logState.value) q.set('state', logState.value);
    try {
      const r = await getJson(`${body.dataset.log}?${q}`);
      if (!r) return;
      if (!r.ok) { logStatus.textContent = r.json.message || `error ${r.status}`; return; }
      logStatus.textContent = '';
      const rows = r.json.deliveries.map((d) => {
        const tr = document.createElement('tr');
        tr.dataset.seq = String(d.seq);
        tr.className = d.state + (selected === d.seq ? ' selected' : '');
        for (const v of [d.seq, utc(d.received_ms), d.path, d.state, d.attempts, utc(d.confirmed_ms)]) cell(tr, v);
        tr.addEventListener('click', () => openEntry(d.seq));
        return tr;
      });
      log.replaceChildren(...rows);
    } catch (_) { /* retried on the next tick */ }
  }

  async function openEntry(seq) {
    selected = seq;
    const r = await getJson(`${body.dataset.log}/${seq}`);
    if (!r) return;
    entry.hidden = false;
    entrySeq.textContent = String(seq);
    entryStatus.textContent = '';
    entryEvent.textContent = r.ok ? JSON.stringify(r.json.event, null, 2) : (r.json.message || `error ${r.status}`);
    for (const tr of log.children) tr.classList.toggle('selected', tr.dataset.seq === String(seq));
  }

  redeliverButton.addEventListener('click', async () => {
    if (selected === null) return;
    const r = await getJson(`${body.dataset.log}/${selected}/redeliver`, { method: 'POST' });
    if (!r) return;
    entryStatus.textContent = r.ok ? 'redelivered' : (r.json.message || `error ${r.status}`);
    refreshLog();
  });
  logPath.addEventListener('input', refreshLog);
  logState.addEventListener('change', refreshLog);

  refreshDeliveries();
  setInterval(refreshDeliveries, 1000);
  refreshLog();
  setInterval(refreshLog, 2000);
})();
