import { h, fill, field, table, fmtTime, confirmAction, secretBox, toast } from '../dom.js';
import { api, enc, q } from '../api.js';
import { act, pager } from './util.js';

const PAGE = 50;

export async function products(main, _p, signal) {
  const shown = h('div', { id: 'product-secret' });
  const err = h('p', { class: 'error', role: 'alert', id: 'product-error' });
  const name = h('input', { id: 'product-name', required: true, maxlength: 64 });
  const fmt = h('select', { id: 'product-format' }, h('option', { value: 'json' }, 'JSON'), h('option', { value: 'cbor' }, 'CBOR'));
  const life = h('input', { id: 'product-lifetime', type: 'number', min: 0, value: '0' });
  const dyn = h('input', { id: 'product-dynreg', type: 'checkbox' });
  const form = h('form', { class: 'inline card', 'aria-label': 'Create product', onsubmit: act(async (e) => {
    e.preventDefault();
    err.textContent = '';
    try {
      const p = await api('POST', '/products', {
        name: name.value, dataFormat: fmt.value, dynamicRegistration: dyn.checked,
        onlineLifetimeSeconds: Number(life.value) || 0,
      });
      fill(shown, secretBox('Product ' + p.productKey + ' created. Product secret:', p.productSecret));
      name.value = '';
      pg.reset();
      await load();
    } catch (ex) { err.textContent = ex.message; }
  }) },
  field('Name', name), field('Data format', fmt), field('Online lifetime (s, 0 = default)', life),
  h('label', { class: 'check' }, dyn, 'Dynamic registration'),
  h('button', { type: 'submit', id: 'product-create' }, 'Create product'));

  const list = h('div', { id: 'product-list' });
  const pg = pager();
  const nav = h('div', { class: 'pager' });
  fill(main, h('h1', {}, 'Products'), form, err, shown, list, nav);

  async function load() {
    const res = await api('GET', '/products' + q({ limit: PAGE, after: pg.cursor }), undefined, { signal });
    const rows = res.items.map((p) => h('tr', {},
      h('td', { class: 'mono' }, p.productKey),
      h('td', {}, p.name),
      h('td', {}, p.dataFormat),
      h('td', { class: 'hide-narrow' }, p.dynamicRegistration ? 'yes' : 'no'),
      h('td', { class: 'hide-narrow' }, p.onlineLifetimeSeconds || 'default'),
      h('td', { class: 'hide-narrow' }, fmtTime(p.createdAt)),
      h('td', {}, h('div', { class: 'actions' },
        h('a', { href: '#/devices?product=' + enc(p.productKey) }, 'Devices'),
        h('button', { type: 'button', class: 'secondary product-edit', onclick: () => edit(p), 'aria-label': 'Edit ' + p.productKey }, 'Edit'),
        h('button', { type: 'button', class: 'danger product-delete', 'aria-label': 'Delete ' + p.productKey, onclick: act(async () => {
          if (!await confirmAction('Delete product ' + p.productKey + ' (' + p.name + ')? A product with devices cannot be deleted.', 'Delete')) return;
          await api('DELETE', '/products/' + enc(p.productKey));
          toast('Product deleted');
          await load();
        }) }, 'Delete')))));
    fill(list, table(['product key', 'name', 'format', 'dynamic reg.', 'lifetime', 'created', ''], rows, 'No products yet.'));
    fill(nav,
      h('button', { type: 'button', class: 'secondary', disabled: pg.page === 1, onclick: act(async () => { pg.prev(); await load(); }) }, 'Previous'),
      h('span', { class: 'muted' }, 'Page ' + pg.page),
      h('button', { type: 'button', class: 'secondary', disabled: !res.nextCursor, onclick: act(async () => { pg.next(res.nextCursor); await load(); }) }, 'Next'));
  }

  function edit(p) {
    const n = h('input', { id: 'edit-product-name', value: p.name, required: true });
    const f = h('select', {}, ['json', 'cbor'].map((x) => h('option', { value: x, selected: x === p.dataFormat }, x)));
    const l = h('input', { type: 'number', min: 0, value: String(p.onlineLifetimeSeconds || 0) });
    const d = h('input', { type: 'checkbox', checked: p.dynamicRegistration });
    const e = h('p', { class: 'error', role: 'alert' });
    const dlg = h('dialog', { 'aria-label': 'Edit product' }, h('form', { method: 'dialog', onsubmit: act(async (ev) => {
      ev.preventDefault();
      try {
        await api('PATCH', '/products/' + enc(p.productKey), { name: n.value, dataFormat: f.value, onlineLifetimeSeconds: Number(l.value) || 0, dynamicRegistration: d.checked });
        dlg.close(); dlg.remove();
        toast('Product saved');
        await load();
      } catch (ex) { e.textContent = ex.message; }
    }) },
    h('h2', {}, 'Edit ' + p.productKey),
    field('Name', n), field('Data format', f), field('Online lifetime (s, 0 = default)', l),
    h('label', { class: 'check' }, d, 'Dynamic registration'), e,
    h('div', { class: 'actions' }, h('button', { type: 'submit', id: 'edit-product-save' }, 'Save'),
      h('button', { type: 'button', class: 'secondary', onclick: () => { dlg.close(); dlg.remove(); } }, 'Cancel'))));
    dlg.addEventListener('close', () => dlg.remove()); // Esc too
    document.body.append(dlg);
    dlg.showModal();
  }

  await load();
}
