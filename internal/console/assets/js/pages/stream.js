import { h, fill, field, fmtTime, pretty } from '../dom.js';
import { q, stream } from '../api.js';
import { act } from './util.js';

const MAX_ROWS = 200;

export async function live(main, _p, signal, query) {
  const topic = h('input', { id: 'stream-topic', value: query.get('topic') || '#', size: 30 });
  const pk = h('input', { id: 'stream-product', value: query.get('product') || '' });
  const dk = h('input', { id: 'stream-device', value: query.get('device') || '' });
  const events = h('input', { id: 'stream-events', type: 'checkbox', checked: true });
  const pause = h('button', { type: 'button', class: 'secondary', id: 'stream-pause', 'aria-pressed': 'false' }, 'Pause');
  const dot = h('span', { class: 'live', id: 'stream-dot' });
  const count = h('span', { class: 'muted', id: 'stream-count' });
  const rows = h('tbody', { id: 'stream-rows' });
  const err = h('p', { class: 'error', role: 'alert', id: 'stream-error' });
  let paused = false;
  let held = 0;
  let sub = null;
  pause.addEventListener('click', () => {
    paused = !paused;
    pause.textContent = paused ? 'Resume' : 'Pause';
    pause.setAttribute('aria-pressed', String(paused));
    if (!paused) held = 0;
    count.textContent = paused ? 'paused' : '';
  });
  const form = h('form', { class: 'bar', 'aria-label': 'Stream filter', onsubmit: act(async (e) => { e.preventDefault(); start(); }) },
    field('Topic filter (MQTT syntax)', topic), field('Product key', pk), field('Device key', dk),
    h('label', { class: 'check' }, events, 'Lifecycle events ($events/#)'),
    h('button', { type: 'submit', id: 'stream-apply' }, 'Apply'), pause);
  fill(main, h('h1', {}, dot, 'Live stream'), form, err, count,
    h('div', { class: 'scroll' }, h('table', {}, h('thead', {}, h('tr', {}, ['received', 'device', 'topic', 'payload'].map((t) => h('th', { scope: 'col' }, t)))), rows)));

  function start() {
    if (sub) sub.abort();
    sub = new AbortController();
    signal.addEventListener('abort', () => sub.abort());
    rows.replaceChildren();
    err.textContent = '';
    const topics = [topic.value.trim() || '#'];
    if (events.checked) topics.push('$events/#');
    stream('/stream' + q({ topic: topics, productKey: pk.value.trim(), deviceKey: dk.value.trim() }), (ev) => {
      if (paused) { held++; count.textContent = 'paused, ' + held + (held === 1 ? ' entry' : ' entries') + ' not shown'; return; }
      const m = ev.data;
      rows.prepend(h('tr', {},
        h('td', {}, fmtTime(m.receivedAt)),
        h('td', { class: 'mono' }, h('a', { href: '#/devices/' + encodeURIComponent(m.productKey) + '/' + encodeURIComponent(m.deviceKey) }, m.productKey + '/' + m.deviceKey)),
        h('td', { class: 'mono' }, m.topic),
        h('td', {}, h('pre', {}, m.payload !== undefined ? pretty(m.payload) : '(base64) ' + m.payloadBase64))));
      while (rows.children.length > MAX_ROWS) rows.lastElementChild.remove();
    }, sub.signal, (on) => dot.classList.toggle('on', on), (msg) => { err.textContent = msg; });
  }
  start();
}
