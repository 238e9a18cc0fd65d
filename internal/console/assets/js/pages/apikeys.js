import { h, fill, field, table, fmtTime, confirmAction, secretBox, toast } from '../dom.js';
import { api, enc } from '../api.js';
import { act } from './util.js';

export async function apikeys(main, _p, signal) {
  const name = h('input', { id: 'apikey-name', required: true, maxlength: 64 });
  const err = h('p', { class: 'error', role: 'alert' });
  const shown = h('div', { id: 'apikey-secret' });
  const list = h('div', { id: 'apikey-list' });
  const form = h('form', { class: 'inline card', 'aria-label': 'Create API key', onsubmit: act(async (e) => {
    e.preventDefault();
    err.textContent = '';
    try {
      const k = await api('POST', '/apikeys', { name: name.value });
      fill(shown, secretBox('API key ' + k.name + ' created:', k.key));
      name.value = '';
      await load();
    } catch (ex) { err.textContent = ex.message; }
  }) }, field('Name', name), h('button', { type: 'submit', id: 'apikey-create' }, 'Create key'));
  fill(main, h('h1', {}, 'API keys'),
    h('p', { class: 'muted' }, 'Every key has full access to the API. Only a hash is stored: a key is shown once, when it is created.'),
    form, err, shown, list);
  async function load() {
    const r = await api('GET', '/apikeys', undefined, { signal });
    fill(list, table(['id', 'name', 'created', ''], r.items.map((k) => h('tr', {},
      h('td', { class: 'mono' }, k.id), h('td', {}, k.name), h('td', {}, fmtTime(k.createdAt)),
      h('td', {}, h('button', { type: 'button', class: 'danger', onclick: act(async () => {
        if (!await confirmAction('Delete API key ' + k.name + ' (' + k.id + ')? Clients using it are refused. If it is the key of this session, you are signed out.', 'Delete')) return;
        await api('DELETE', '/apikeys/' + enc(k.id));
        toast('Key deleted');
        await load();
      }) }, 'Delete')))), 'No keys.'));
  }
  await load();
}
