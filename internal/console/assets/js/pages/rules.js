import { h, fill, field, table, fmtTime, badge, confirmAction, toast, pretty } from '../dom.js';
import { api, enc, q } from '../api.js';
import { act, every, changed } from './util.js';

export async function rules(main, _p, signal) {
  const list = h('div', { id: 'rule-list' });
  fill(main, h('h1', {}, 'Forwarding rules'),
    h('p', {}, h('a', { href: '#/rules/new', id: 'rule-new' }, 'New rule')), list);
  const refresh = async () => {
    const r = await api('GET', '/rules', undefined, { signal });
    const stats = [];
    for (const x of r.items) {
      try { stats.push(await api('GET', '/rules/' + enc(x.id) + '/status', undefined, { signal })); } catch { stats.push(null); }
    }
    if (!changed(list, [r.items, stats])) return;
    const rows = [];
    for (const [i, x] of r.items.entries()) {
      const st = stats[i];
      const acts = st ? st.actions : [];
      rows.push(h('tr', {},
        h('td', {}, h('a', { href: '#/rules/' + enc(x.id) }, x.name || x.id)),
        h('td', { class: 'mono' }, x.topicFilter),
        h('td', {}, x.actions.map((a) => a.type).join(', ')),
        h('td', {}, h('button', { type: 'button', class: 'secondary rule-toggle', onclick: act(async () => {
          await api('PATCH', '/rules/' + enc(x.id), { enabled: !x.enabled });
          toast('Rule ' + (x.enabled ? 'disabled' : 'enabled'));
          await refresh();
        }), 'aria-label': (x.enabled ? 'Disable ' : 'Enable ') + x.name }, x.enabled ? 'Disable' : 'Enable'), ' ', x.enabled ? badge('enabled', 'running') : badge('disabled', 'failed')),
        h('td', { class: 'mono' }, acts.map((a) => a.type + ' lag ' + a.lag).join(', ') || '—'),
        h('td', {}, acts.reduce((n, a) => n + a.deadLetters, 0))));
    }
    fill(list, table(['name', 'topic filter', 'actions', 'state', 'lag', 'dead letters'], rows, 'No forwarding rules.'));
  };
  every(10000, signal, refresh);
}

const TEMPLATE = [{ type: 'webhook', url: 'https://example.com/hook', secret: '', timeout: '5s' }];

export async function ruleEdit(main, [id], signal) {
  const isNew = id === 'new';
  const rule = isNew ? { name: '', enabled: true, topicFilter: '#', productKey: '', deviceKey: '', condition: '', maxAttempts: 5, actions: TEMPLATE }
    : await api('GET', '/rules/' + enc(id), undefined, { signal });
  const errs = {};
  const ctl = (name, el, label, hint) => {
    errs[name] = h('span', { class: 'error', id: 'err-' + name, role: 'alert' });
    el.setAttribute('aria-describedby', 'err-' + name);
    return h('label', {}, label, el, hint ? h('span', { class: 'muted' }, hint) : null, errs[name]);
  };
  const name = h('input', { id: 'rule-name', value: rule.name, required: true });
  const topic = h('input', { id: 'rule-topic', value: rule.topicFilter, required: true });
  const pk = h('input', { id: 'rule-product', value: rule.productKey || '' });
  const dk = h('input', { id: 'rule-device', value: rule.deviceKey || '' });
  const cond = h('input', { id: 'rule-condition', value: rule.condition || '', size: 40 });
  const maxA = h('input', { id: 'rule-attempts', type: 'number', min: 1, max: 100, value: String(rule.maxAttempts || 5) });
  const enabled = h('input', { id: 'rule-enabled', type: 'checkbox', checked: rule.enabled });
  const actions = h('textarea', { id: 'rule-actions', spellcheck: 'false' }, pretty(rule.actions));
  const general = h('p', { class: 'error', role: 'alert', id: 'rule-error' });
  const statusEl = h('div', { id: 'rule-status' });
  const dlEl = h('div', { id: 'deadletters' });

  const form = h('form', { class: 'card', 'aria-label': isNew ? 'New rule' : 'Edit rule', onsubmit: act(async (e) => {
    e.preventDefault();
    for (const k in errs) errs[k].textContent = '';
    general.textContent = '';
    let acts;
    try { acts = JSON.parse(actions.value); } catch (ex) { errs.actions.textContent = 'Not valid JSON: ' + ex.message; return; }
    const body = { name: name.value, enabled: enabled.checked, topicFilter: topic.value, productKey: pk.value, deviceKey: dk.value,
      condition: cond.value, maxAttempts: Number(maxA.value) || 5, actions: acts };
    try {
      const saved = isNew ? await api('POST', '/rules', body) : await api('PATCH', '/rules/' + enc(id), body);
      toast('Rule saved');
      if (isNew) location.hash = '#/rules/' + enc(saved.id);
      else await loadStatus();
    } catch (ex) {
      // Show the API's message next to the field it names.
      const m = ex.message;
      const which = /condition/i.test(m) ? 'condition' : /topic ?filter/i.test(m) ? 'topicFilter'
        : /action|url|webhook|mqtt|nats|postgres/i.test(m) ? 'actions' : /name/i.test(m) ? 'name' : null;
      (which ? errs[which] : general).textContent = m;
    }
  }) },
  h('div', { class: 'grid2' },
    ctl('name', name, 'Name'), ctl('topicFilter', topic, 'Topic filter', 'MQTT syntax; $events/# for lifecycle entries'),
    ctl('productKey', pk, 'Product key (optional)'), ctl('deviceKey', dk, 'Device key (optional)'),
    ctl('condition', cond, 'Condition (optional)', 'e.g. params.temp > 30'), ctl('maxAttempts', maxA, 'Max attempts')),
  h('label', { class: 'check' }, enabled, 'Enabled'),
  ctl('actions', actions, 'Actions (JSON array: webhook, mqtt, nats, postgres)'),
  general,
  h('div', { class: 'actions' },
    h('button', { type: 'submit', id: 'rule-save' }, isNew ? 'Create rule' : 'Save'),
    isNew ? null : h('button', { type: 'button', class: 'danger', id: 'rule-delete', onclick: act(async () => {
      if (!await confirmAction('Delete rule ' + rule.name + '? Its cursors and dead letters are dropped.', 'Delete')) return;
      await api('DELETE', '/rules/' + enc(id));
      toast('Rule deleted');
      location.hash = '#/rules';
    }) }, 'Delete')));

  fill(main, h('p', {}, h('a', { href: '#/rules' }, '← Rules')),
    h('h1', {}, isNew ? 'New forwarding rule' : 'Rule ' + rule.name), form,
    isNew ? null : h('section', { class: 'card', 'aria-labelledby': 'h-st' }, h('h2', { id: 'h-st' }, 'Status'), statusEl),
    isNew ? null : h('section', { class: 'card', 'aria-labelledby': 'h-dl' }, h('h2', { id: 'h-dl' }, 'Dead letters'), dlEl));

  async function loadStatus() {
    const st = await api('GET', '/rules/' + enc(id) + '/status', undefined, { signal });
    if (!changed(statusEl, st)) return;
    fill(statusEl, h('p', { id: 'rule-state' }, st.enabled ? badge('enabled', 'running') : badge('disabled', 'failed')),
      table(['action', 'type', 'running', 'cursor', 'lag', 'delivered', 'failures', 'dead letters', 'last error'], st.actions.map((a) => h('tr', {},
        h('td', {}, a.action), h('td', {}, a.type), h('td', {}, a.running ? 'yes' : 'no'), h('td', {}, a.cursor),
        h('td', { class: 'lag' }, a.lag), h('td', {}, a.delivered), h('td', {}, a.failures), h('td', {}, a.deadLetters),
        h('td', { class: 'mono' }, a.lastError ? a.lastError + ' (' + fmtTime(a.lastErrorAt) + ')' : '—'))), 'No actions.'));
  }
  async function loadDead() {
    const r = await api('GET', '/rules/' + enc(id) + '/deadletters' + q({ limit: 50 }), undefined, { signal });
    const items = r.items || [];
    if (!changed(dlEl, items)) return;
    fill(dlEl,
      items.length ? h('p', {}, h('button', { type: 'button', id: 'dl-replay', onclick: act(async () => {
        const res = await api('POST', '/rules/' + enc(id) + '/deadletters/replay');
        toast('Replayed: ' + res.delivered + ' delivered, ' + res.failed + ' failed');
        await Promise.all([loadDead(), loadStatus()]);
      }) }, 'Replay all')) : null,
      table(['id', 'entry', 'error', 'at', ''], items.map((x) => h('tr', {},
        h('td', {}, x.id), h('td', { class: 'mono' }, x.logId + ' ' + x.topic), h('td', { class: 'mono' }, x.lastError + ' (' + x.attempts + ' attempts)'),
        h('td', {}, fmtTime(x.updatedAt)),
        h('td', {}, h('div', { class: 'actions' },
          h('button', { type: 'button', class: 'secondary', onclick: act(async () => {
            const res = await api('POST', '/rules/' + enc(id) + '/deadletters/replay', { ids: [x.id] });
            toast(res.delivered ? 'Delivered' : 'Failed again');
            await Promise.all([loadDead(), loadStatus()]);
          }) }, 'Replay'),
          h('button', { type: 'button', class: 'danger', onclick: act(async () => {
            if (!await confirmAction('Drop dead letter ' + x.id + ' without delivering it?', 'Drop')) return;
            await api('DELETE', '/rules/' + enc(id) + '/deadletters/' + enc(x.id));
            await loadDead();
          }) }, 'Drop'))))), 'No dead letters.'));
  }
  if (!isNew) {
    every(5000, signal, () => Promise.all([loadStatus(), loadDead()]));
  }
}
