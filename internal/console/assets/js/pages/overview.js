import { h, fill, table } from '../dom.js';
import { api, enc } from '../api.js';
import { lineChart } from '../chart.js';
import { every, changed } from './util.js';

export async function overview(main, _p, signal) {
  const tiles = h('div', { class: 'tiles', id: 'tiles' });
  const chartEl = h('div', { class: 'chart card', id: 'overview-chart', role: 'img' });
  const lag = h('div', { id: 'lag' });
  fill(main, h('h1', {}, 'Overview'), tiles,
    h('h2', {}, 'Uplinks per second and errors, last hour'), chartEl,
    h('h2', {}, 'Forwarding lag per rule'), lag);
  const chart = lineChart(chartEl, ['uplinks/s', 'errors/s'], { title: 'uplinks and errors' });
  signal.addEventListener('abort', () => chart.destroy());
  const tile = (k, v, id) => h('div', { class: 'tile', id }, h('div', { class: 'v' }, v), h('div', { class: 'k' }, k));

  every(10000, signal, async () => {
    const [st, rl] = await Promise.all([
      api('GET', '/stats', undefined, { signal }).catch((e) => ({ error: e })),
      api('GET', '/rules', undefined, { signal }),
    ]);
    if (st.error) {
      fill(tiles, h('p', { class: 'muted' }, 'Statistics unavailable: ' + st.error.message));
    } else {
      const s = st.samples;
      const iv = st.intervalSeconds || 10;
      const last = s[s.length - 1];
      const errs = s.reduce((a, x) => a + x.errors, 0);
      const ups = s.reduce((a, x) => a + x.uplinks, 0);
      fill(tiles,
        tile('devices online', last ? last.devicesOnline : '—', 'tile-online'),
        tile('devices offline', last && last.devicesRegistered >= 0 ? Math.max(0, last.devicesRegistered - last.devicesOnline) : '—', 'tile-offline'),
        tile('devices registered', last && last.devicesRegistered >= 0 ? last.devicesRegistered : '—', 'tile-registered'),
        tile('uplinks/s (last ' + iv + ' s)', last ? (last.uplinks / iv).toFixed(2) : '—', 'tile-rate'),
        tile('uplinks, last hour', ups, 'tile-uplinks'),
        tile('errors, last hour', errs, 'tile-errors'));
      const now = Date.now() / 1000;
      chart.range(now - 3600, now);
      chart.set(s.map((x) => Date.parse(x.time) / 1000), s.map((x) => x.uplinks / iv), s.map((x) => x.errors / iv));
    }
    const shown = rl.items.slice(0, 50);
    const stats = [];
    for (const r of shown) {
      try { stats.push(await api('GET', '/rules/' + enc(r.id) + '/status', undefined, { signal })); } catch { stats.push(null); }
    }
    if (!changed(lag, [shown, stats])) return;
    const rows = [];
    for (const [i, r] of shown.entries()) {
      const acts = stats[i] ? stats[i].actions : [];
      rows.push(h('tr', {},
        h('td', {}, h('a', { href: '#/rules/' + enc(r.id) }, r.name || r.id)),
        h('td', {}, r.enabled ? 'enabled' : 'disabled'),
        h('td', { class: 'mono' }, acts.map((a) => a.type + ': ' + a.lag).join(', ') || '—'),
        h('td', {}, acts.reduce((x, a) => x + a.deadLetters, 0))));
    }
    fill(lag, table(['rule', 'state', 'lag (entries) per action', 'dead letters'], rows, 'No forwarding rules.'));
  });
}
