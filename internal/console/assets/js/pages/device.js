import { h, fill, field, table, fmtTime, badge, confirmAction, secretBox, toast, pretty } from '../dom.js';
import { api, enc, q, stream } from '../api.js';
import { lineChart } from '../chart.js';
import { act, pager } from './util.js';

const MAX_LOG = 100;
const RANGES = [['15m', 900], ['1h', 3600], ['6h', 21600], ['24h', 86400], ['7d', 604800], ['30d', 2592000]];

export async function device(main, [pk, dk], signal) {
  const base = '/devices/' + enc(pk) + '/' + enc(dk);
  let d = await api('GET', base, undefined, { signal });

  const ident = h('div', { class: 'card', id: 'device-identity' });
  const secret = h('div', { id: 'device-secret' });
  const pointsEl = h('div', { id: 'points' });
  const pointSel = h('select', { id: 'chart-point' });
  const rangeSel = h('select', { id: 'chart-range' }, RANGES.map(([l, s]) => h('option', { value: s, selected: l === '1h' }, 'last ' + l)));
  const chartEl = h('div', { class: 'chart', id: 'point-chart', role: 'img' });
  const chartNote = h('p', { class: 'muted', id: 'chart-note' });
  const logEl = h('tbody', { id: 'message-log' });
  const liveDot = h('span', { class: 'live', id: 'live-dot', title: 'live stream' });
  const eventsEl = h('div', { id: 'events' });
  const cmdList = h('div', { id: 'commands' });

  fill(main,
    h('p', {}, h('a', { href: '#/devices' }, '← Devices')),
    h('h1', {}, 'Device ', h('span', { class: 'mono', id: 'device-title' }, pk + '/' + dk)),
    ident, secret,
    h('div', { class: 'grid2' },
      h('section', { class: 'card', 'aria-labelledby': 'h-points' }, h('h2', { id: 'h-points' }, 'Latest values'), pointsEl),
      h('section', { class: 'card', 'aria-labelledby': 'h-chart' }, h('h2', { id: 'h-chart' }, 'Chart'),
        h('div', { class: 'bar' }, field('Point', pointSel), field('Range', rangeSel)), chartEl, chartNote)),
    h('section', { class: 'card', 'aria-labelledby': 'h-cmd' }, h('h2', { id: 'h-cmd' }, 'Commands'), commandForm(), cmdList),
    h('section', { class: 'card', 'aria-labelledby': 'h-log' }, h('h2', { id: 'h-log' }, liveDot, 'Message log (live)'),
      h('div', { class: 'scroll' }, h('table', {}, h('thead', {}, h('tr', {}, ['received', 'topic', 'payload', 'transport'].map((t) => h('th', { scope: 'col' }, t)))), logEl))),
    h('section', { class: 'card', 'aria-labelledby': 'h-ev' }, h('h2', { id: 'h-ev' }, 'Online / offline events'), eventsEl));

  const chart = lineChart(chartEl, ['value'], { title: 'point chart' });
  signal.addEventListener('abort', () => chart.destroy());
  let chartData = { xs: [], ys: [] };

  // --- identity and actions: built once, updated in place (a live update
  // must not take the keyboard focus away from a button).
  const dl = h('dl', { class: 'kv' });
  const toggle = h('button', { type: 'button', class: 'secondary', id: 'device-toggle', onclick: act(async () => {
    if (d.enabled && !await confirmAction('Disable ' + dk + '? It is refused until enabled again.', 'Disable')) return;
    d = await api('PATCH', base, { enabled: !d.enabled });
    renderIdent();
  }) });
  fill(ident, dl, h('div', { class: 'actions' },
    toggle,
    h('button', { type: 'button', class: 'danger', id: 'device-rotate', onclick: act(async () => {
      if (!await confirmAction('Rotate the secret of ' + dk + '? The old secret stops working and its tokens are revoked.', 'Rotate')) return;
      const r = await api('POST', base + '/rotate-secret');
      fill(secret, secretBox('New device secret:', r.deviceSecret));
      d = await api('GET', base);
      renderIdent();
    }) }, 'Rotate secret'),
    h('button', { type: 'button', class: 'danger', id: 'device-revoke', onclick: act(async () => {
      if (!await confirmAction('Revoke every token of ' + dk + '? It must authenticate again.', 'Revoke')) return;
      await api('POST', base + '/revoke-tokens');
      toast('Tokens revoked');
      d = await api('GET', base);
      renderIdent();
    }) }, 'Revoke tokens'),
    h('button', { type: 'button', class: 'danger', id: 'device-delete', onclick: act(async () => {
      if (!await confirmAction('Delete device ' + dk + ' and its registration? This cannot be undone.', 'Delete')) return;
      await api('DELETE', base);
      toast('Device deleted');
      location.hash = '#/devices';
    }) }, 'Delete')));
  function renderIdent() {
    fill(dl,
      h('dt', {}, 'product'), h('dd', { class: 'mono' }, d.productKey),
      h('dt', {}, 'device'), h('dd', { class: 'mono', id: 'device-key' }, d.deviceKey),
      h('dt', {}, 'state'), h('dd', { id: 'device-state' }, badge(d.online ? 'online' : 'offline'), ' ', d.enabled ? 'enabled' : badge('disabled', 'failed')),
      h('dt', {}, 'last seen'), h('dd', {}, fmtTime(d.lastSeenAt)),
      h('dt', {}, 'address'), h('dd', { class: 'mono' }, d.lastAddress || '—'),
      h('dt', {}, 'transport'), h('dd', {}, d.transport || '—'),
      h('dt', {}, 'asset id'), h('dd', {}, d.assetId || '—'),
      h('dt', {}, 'token generation'), h('dd', {}, d.tokenGeneration),
      h('dt', {}, 'online lifetime'), h('dd', {}, d.lifetimeSeconds + ' s'),
      h('dt', {}, 'created'), h('dd', {}, fmtTime(d.createdAt)));
    toggle.textContent = d.enabled ? 'Disable' : 'Enable';
  }
  renderIdent();

  // --- latest points and chart
  async function loadPoints() {
    let res;
    try {
      res = await api('GET', base + '/measurepoints', undefined, { signal });
    } catch (e) {
      fill(pointsEl, h('p', { class: 'muted' }, e.message));
      return;
    }
    fill(pointsEl, table(['point', 'value', 'time'], res.items.map((p) => h('tr', {},
      h('td', { class: 'mono' }, p.name),
      h('td', { class: 'mono' }, typeof p.value === 'object' ? JSON.stringify(p.value) : String(p.value)),
      h('td', {}, fmtTime(p.time)))), 'No values reported yet.'));
    const numeric = res.items.filter((p) => typeof p.value === 'number').map((p) => p.name);
    const cur = pointSel.value;
    const have = [...pointSel.options].map((o) => o.value);
    if (numeric.join() !== have.join()) {
      fill(pointSel, numeric.map((n) => h('option', { value: n, selected: n === cur }, n)));
      if (!cur && numeric.length) await loadChart();
    }
  }

  async function loadChart() {
    const name = pointSel.value;
    if (!name) { chartNote.textContent = 'Pick a numeric point.'; return; }
    const secs = Number(rangeSel.value);
    const to = new Date(Date.now() + 5000);
    const from = new Date(to - secs * 1000);
    const path = base + '/measurepoints/' + enc(name) + '/history';
    chart.range(from / 1000, to / 1000);
    if (secs <= 3600) {
      const r = await api('GET', path + q({ from: from.toISOString(), to: to.toISOString(), limit: 10000 }), undefined, { signal });
      const pts = r.items.filter((x) => typeof x.value === 'number');
      chartData = { xs: pts.map((x) => Date.parse(x.time) / 1000), ys: pts.map((x) => x.value) };
      chartNote.textContent = pts.length + (pts.length === 1 ? ' sample' : ' samples') + (r.nextCursor ? ' (the first 10000)' : '');
    } else {
      const iv = Math.max(1, Math.ceil(secs / 500));
      const r = await api('GET', path + q({ from: from.toISOString(), to: to.toISOString(), interval: iv + 's', agg: 'avg,count' }), undefined, { signal });
      const b = r.items.filter((x) => typeof x.avg === 'number');
      chartData = { xs: b.map((x) => Date.parse(x.start) / 1000), ys: b.map((x) => x.avg) };
      chartNote.textContent = 'average per ' + iv + ' s bucket, ' + b.length + ' buckets';
    }
    chart.set(chartData.xs, chartData.ys);
  }
  pointSel.addEventListener('change', act(loadChart));
  rangeSel.addEventListener('change', act(loadChart));

  // A live uplink that reports the charted point is drawn at once (the
  // point store is updated from the log shortly after).
  function liveValue(m) {
    let params = m.payload && typeof m.payload === 'object' ? m.payload.params : null;
    if (!params || typeof params !== 'object') return false;
    if (params.measurepoints && typeof params.measurepoints === 'object') params = params.measurepoints; // dialect E
    const num = (x) => (x && typeof x === 'object' && 'value' in x ? x.value : x);
    let name = pointSel.value;
    if (!name) { // the first numeric value a device reports
      name = Object.keys(params).find((k) => typeof num(params[k]) === 'number');
      if (!name) return false;
      pointSel.append(h('option', { value: name, selected: true }, name));
      chartData = { xs: [], ys: [] };
    }
    const v = num(params[name]);
    if (typeof v !== 'number') return false;
    const x = Date.parse(m.receivedAt) / 1000;
    const to = Math.max(Date.now() / 1000, x) + 5;
    chart.range(to - Number(rangeSel.value), to);
    chartData.xs.push(x);
    chartData.ys.push(v);
    chart.set(chartData.xs, chartData.ys);
    return true;
  }

  // --- message log
  function payloadCell(m) {
    if (m.payload !== undefined) return h('pre', {}, pretty(m.payload));
    let text = '';
    try { text = atob(m.payloadBase64 || ''); } catch { text = ''; }
    const printable = /^[\x20-\x7e\t\r\n]*$/.test(text);
    return h('pre', { class: 'mono' }, printable ? text : '(binary, base64) ' + m.payloadBase64);
  }
  function logRow(m) {
    return h('tr', { dataset: { id: m.id } },
      h('td', {}, fmtTime(m.receivedAt)),
      h('td', { class: 'mono' }, m.topic),
      h('td', {}, payloadCell(m)),
      h('td', {}, m.transport));
  }
  let olderCursor = '';
  let keepAll = false; // older pages loaded: live updates stop trimming the log
  async function loadOlder() {
    const r = await api('GET', base + '/messages' + q({ order: 'desc', limit: 20, after: olderCursor }), undefined, { signal });
    logEl.append(...r.items.map(logRow));
    olderCursor = r.nextCursor || '';
    olderBtn.disabled = !olderCursor;
  }
  const olderBtn = h('button', { type: 'button', class: 'secondary', id: 'log-older', onclick: act(async () => { keepAll = true; await loadOlder(); }) }, 'Older messages');
  logEl.closest('section').append(h('div', { class: 'pager' }, olderBtn));
  await loadOlder();

  // --- events (oldest first, paged)
  const evPager = pager();
  async function loadEvents() {
    const r = await api('GET', base + '/events' + q({ limit: 20, after: evPager.cursor }), undefined, { signal });
    fill(eventsEl, table(['event', 'at', 'transport', 'peer'], r.items.map((e) => h('tr', {},
      h('td', {}, badge(e.type)), h('td', {}, fmtTime(e.at)), h('td', {}, e.transport), h('td', { class: 'mono' }, e.peer))), 'No online/offline events yet.'),
    h('div', { class: 'pager' },
      h('button', { type: 'button', class: 'secondary', disabled: evPager.page === 1, onclick: act(async () => { evPager.prev(); await loadEvents(); }) }, 'Earlier'),
      h('span', { class: 'muted' }, 'Oldest first, page ' + evPager.page),
      h('button', { type: 'button', class: 'secondary', disabled: !r.nextCursor, onclick: act(async () => { evPager.next(r.nextCursor); await loadEvents(); }) }, 'Later')));
  }

  // --- commands
  function commandForm() {
    const type = h('select', { id: 'cmd-type' },
      h('option', { value: 'setProperties' }, 'setProperties'),
      h('option', { value: 'setMeasurepoints' }, 'setMeasurepoints'),
      h('option', { value: 'invokeService' }, 'invokeService'),
      h('option', { value: 'rawDown' }, 'raw (rawDown)'));
    const service = h('input', { id: 'cmd-service', placeholder: 'service id' });
    const params = h('textarea', { id: 'cmd-params', 'aria-describedby': 'cmd-valid', spellcheck: 'false' }, '{\n  "switch": 1\n}');
    const raw = h('input', { id: 'cmd-raw', placeholder: 'base64, e.g. AQID' });
    const ttl = h('input', { id: 'cmd-ttl', value: '60s', size: 6 });
    const valid = h('p', { id: 'cmd-valid', class: 'muted', 'aria-live': 'polite' });
    const err = h('p', { class: 'error', role: 'alert', id: 'cmd-error' });
    const send = h('button', { type: 'submit', id: 'cmd-send' }, 'Send command');
    const svcField = field('Service', service);
    const paramsField = field('Params (JSON object)', params);
    const rawField = field('Raw payload', raw);
    function check() {
      const t = type.value;
      svcField.hidden = t !== 'invokeService';
      paramsField.hidden = t === 'rawDown';
      rawField.hidden = t !== 'rawDown';
      let problem = '';
      if (t === 'rawDown') {
        try { atob(raw.value); } catch { problem = 'Raw payload is not valid base64.'; }
        if (!raw.value) problem = 'Raw payload is empty.';
      } else {
        try {
          const v = JSON.parse(params.value || '{}');
          if (!v || typeof v !== 'object' || Array.isArray(v)) problem = 'Params must be a JSON object.';
        } catch (e) { problem = 'Params are not valid JSON: ' + e.message; }
        if (t === 'invokeService' && !service.value.trim()) problem = problem || 'Give the service id.';
      }
      valid.textContent = problem || 'Valid.';
      valid.className = problem ? 'error' : 'muted';
      send.disabled = !!problem;
      return !problem;
    }
    for (const el of [type, service, params, raw]) el.addEventListener('input', check);
    type.addEventListener('change', check);
    queueMicrotask(check);
    return h('form', { class: 'bar', 'aria-label': 'Send a command', onsubmit: act(async (e) => {
      e.preventDefault();
      err.textContent = '';
      if (!check()) return;
      const body = { type: type.value, ttl: ttl.value };
      if (type.value === 'rawDown') body.raw = raw.value;
      else body.params = JSON.parse(params.value || '{}');
      if (type.value === 'invokeService') body.service = service.value.trim();
      try {
        const c = await api('POST', base + '/commands', body);
        toast('Command ' + c.id + ' queued');
        await loadCommands();
      } catch (ex) { err.textContent = ex.message; }
    }) }, field('Type', type), svcField, h('div', { class: 'grow' }, paramsField), rawField, field('TTL', ttl), send, valid, err);
  }

  const cmdPager = pager();
  async function loadCommands() {
    const r = await api('GET', base + '/commands' + q({ limit: 20, cursor: cmdPager.cursor }), undefined, { signal });
    fill(cmdList, table(['id', 'method / topic', 'params', 'state', 'reply', 'created', ''], r.items.map((c) => h('tr', { dataset: { command: c.id } },
      h('td', { class: 'mono' }, c.id),
      h('td', { class: 'mono' }, c.method || c.topic),
      h('td', {}, h('pre', {}, c.raw ? '(base64) ' + c.raw : pretty(c.params ?? {}))),
      h('td', { class: 'cmd-state' }, badge(c.state)),
      h('td', {}, c.reply ? h('pre', {}, 'code ' + c.reply.code + (c.reply.data ? ' ' + pretty(c.reply.data) : '')) : '—'),
      h('td', {}, fmtTime(c.createdAt)),
      h('td', {}, c.state === 'pending' ? h('button', { type: 'button', class: 'danger', onclick: act(async () => {
        if (!await confirmAction('Cancel command ' + c.id + '?', 'Cancel command')) return;
        await api('DELETE', base + '/commands/' + enc(c.id));
        await loadCommands();
      }) }, 'Cancel') : ''))), 'No commands sent yet.'),
    h('div', { class: 'pager' },
      h('button', { type: 'button', class: 'secondary', disabled: cmdPager.page === 1, onclick: act(async () => { cmdPager.prev(); await loadCommands(); }) }, 'Newer'),
      h('span', { class: 'muted' }, 'Newest first, page ' + cmdPager.page),
      h('button', { type: 'button', class: 'secondary', disabled: !r.nextCursor, onclick: act(async () => { cmdPager.next(r.nextCursor); await loadCommands(); }) }, 'Older')));
  }

  await Promise.all([loadPoints(), loadEvents(), loadCommands()]);
  if (pointSel.value) await loadChart();

  // --- live: new uplinks, online/offline and command state changes
  let pointsTimer = 0;
  signal.addEventListener('abort', () => clearTimeout(pointsTimer));
  stream('/stream' + q({ productKey: pk, deviceKey: dk, topic: ['#', '$events/#'] }), (ev) => {
    const m = ev.data;
    if (ev.event === 'event') {
      if (m.topic.endsWith('/command')) loadCommands().catch(() => {});
      else {
        loadEvents().catch(() => {});
        api('GET', base, undefined, { signal }).then((x) => { d = x; renderIdent(); }).catch(() => {});
      }
      return;
    }
    logEl.prepend(logRow(m));
    if (!keepAll && logEl.children.length > MAX_LOG) {
      while (logEl.children.length > MAX_LOG) logEl.lastElementChild.remove();
      olderCursor = logEl.lastElementChild.dataset.id; // "Older" resumes below the last row kept
      olderBtn.disabled = false;
    }
    liveValue(m);
    clearTimeout(pointsTimer);
    pointsTimer = setTimeout(() => {
      loadPoints().catch(() => {});
      api('GET', base, undefined, { signal }).then((x) => { d = x; renderIdent(); }).catch(() => {});
    }, 1000);
  }, signal, (on) => liveDot.classList.toggle('on', on));
}
