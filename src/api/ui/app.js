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
    } catch (_) { /* retried on the next tick */ }
  }
  refreshDeliveries();
  setInterval(refreshDeliveries, 1000);
})();
