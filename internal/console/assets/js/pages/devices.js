import { h, fill, field, table, fmtTime, badge, secretBox } from '../dom.js';
import { api, enc, q } from '../api.js';
import { act, pager } from './util.js';

const PAGE = 50;

export async function devices(main, _p, signal, query) {
  const prods = await api('GET', '/products?limit=1000', undefined, { signal });
  const product = h('select', { id: 'device-product-filter' },
    h('option', { value: '' }, 'All products'),
    prods.items.map((p) => h('option', { value: p.productKey, selected: p.productKey === query.get('product') }, p.productKey + ' — ' + p.name)));
  const search = h('input', { id: 'device-search', type: 'search', placeholder: 'device key or asset id', value: query.get('q') || '' });
  const state = h('select', { id: 'device-state-filter' },
    h('option', { value: '' }, 'Any state'), h('option', { value: 'online' }, 'Online'), h('option', { value: 'offline' }, 'Offline'));
  const list = h('div', { id: 'device-list' });
  const nav = h('div', { class: 'pager' });
  const pg = pager();

  const cprod = h('select', { id: 'device-create-product', required: true },
    prods.items.map((p) => h('option', { value: p.productKey, selected: p.productKey === query.get('product') }, p.productKey + ' — ' + p.name)));
  const ckey = h('input', { id: 'device-create-key', placeholder: 'generated when empty', maxlength: 64 });
  const casset = h('input', { id: 'device-create-asset', maxlength: 64 });
  const cerr = h('p', { class: 'error', role: 'alert', id: 'device-error' });
  const shown = h('div', { id: 'device-secret' });
  const form = h('form', { class: 'inline card', 'aria-label': 'Create device', onsubmit: act(async (e) => {
    e.preventDefault();
    cerr.textContent = '';
    try {
      const d = await api('POST', '/devices', { productKey: cprod.value, deviceKey: ckey.value, assetId: casset.value });
      fill(shown, secretBox('Device ' + d.productKey + '/' + d.deviceKey + ' created. Device secret:', d.deviceSecret),
        h('p', {}, h('a', { href: '#/devices/' + enc(d.productKey) + '/' + enc(d.deviceKey), id: 'device-created-link' }, 'Open the device')));
      ckey.value = ''; casset.value = '';
      await load();
    } catch (ex) { cerr.textContent = ex.message; }
  }) }, field('Product', cprod), field('Device key', ckey), field('Asset id', casset),
  h('button', { type: 'submit', id: 'device-create' }, 'Create device'));

  const filters = h('form', { class: 'bar', role: 'search', 'aria-label': 'Filter devices', onsubmit: act(async (e) => { e.preventDefault(); pg.reset(); await load(); }) },
    field('Product', product), field('Search (device key or asset id)', search), field('State', state),
    h('button', { type: 'submit', class: 'secondary', id: 'device-filter-apply' }, 'Search'));
  const refilter = act(async () => { pg.reset(); await load(); });
  product.addEventListener('change', refilter);
  state.addEventListener('change', refilter);

  fill(main, h('h1', {}, 'Devices'),
    prods.items.length ? form : h('p', { class: 'muted' }, 'Create a product first.'), cerr, shown,
    filters, list, nav);

  // The API filters (online, q) and pages; a filtered page may be short,
  // or empty, and still have a next page.
  let res = null;
  async function load() {
    const filtered = !!(search.value.trim() || state.value);
    res = await api('GET', '/devices' + q({
      productKey: product.value, limit: PAGE, after: pg.cursor,
      q: search.value.trim(), online: state.value && String(state.value === 'online'),
    }), undefined, { signal });
    const rows = res.items.map((d) => h('tr', {},
      h('td', {}, h('a', { href: '#/devices/' + enc(d.productKey) + '/' + enc(d.deviceKey) }, d.deviceKey)),
      h('td', { class: 'mono' }, d.productKey),
      h('td', {}, badge(d.online ? 'online' : 'offline')),
      h('td', {}, d.enabled ? 'enabled' : badge('disabled', 'failed')),
      h('td', { class: 'hide-narrow' }, d.assetId),
      h('td', { class: 'hide-narrow' }, fmtTime(d.lastSeenAt))));
    fill(list, table(['device', 'product', 'state', 'enabled', 'asset id', 'last seen'], rows,
      !filtered ? 'No devices.' : res.nextCursor ? 'No match among these devices: try the next page.' : 'No device matches.'));
    fill(nav,
      h('button', { type: 'button', class: 'secondary', id: 'devices-prev', disabled: pg.page === 1, onclick: act(async () => { pg.prev(); await load(); }) }, 'Previous'),
      h('span', { class: 'muted' }, 'Page ' + pg.page + ' (up to ' + PAGE + ' devices)'),
      h('button', { type: 'button', class: 'secondary', id: 'devices-next', disabled: !res.nextCursor, onclick: act(async () => { pg.next(res.nextCursor); await load(); }) }, 'Next'));
  }
  await load();
}
