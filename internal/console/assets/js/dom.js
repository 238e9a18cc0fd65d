// Small DOM helpers. Every string given to h() becomes a text node or an
// attribute value: untrusted data (device names, topics, payloads) is never
// parsed as HTML.

// h builds an element: h('a', {href: '#/x', class: 'c', onclick: fn}, 'text', child...).
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value') el.value = v;
    else if (k === 'checked') el.checked = !!v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

// clear empties el and appends children.
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// field is a labelled form control.
export function field(label, control, hint) {
  return h('label', {}, label, control, hint ? h('span', { class: 'muted' }, hint) : null);
}

export function badge(text, cls) {
  return h('span', { class: 'badge ' + (cls || text) }, text);
}

export function fmtTime(t) {
  if (!t) return '—';
  const d = new Date(t);
  if (isNaN(d)) return String(t);
  return d.toLocaleString();
}

export function table(headers, rows, empty) {
  if (!rows.length) return h('p', { class: 'muted' }, empty || 'Nothing here yet.');
  return h('div', { class: 'scroll' }, h('table', {},
    h('thead', {}, h('tr', {}, headers.map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, rows)));
}

let toastTimer = 0;
// toast shows a short status message (announced by screen readers).
export function toast(msg, isError) {
  const box = document.getElementById('toast');
  const el = h('div', { class: isError ? 'err' : '' }, msg);
  box.append(el);
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => box.replaceChildren(), 5000);
}

// confirmAction asks in a modal dialog; resolves true when confirmed.
export function confirmAction(question, action) {
  return new Promise((resolve) => {
    const dlg = h('dialog', { 'aria-labelledby': 'confirm-q' },
      h('p', { id: 'confirm-q' }, question),
      h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'danger', id: 'confirm-yes', onclick: () => done(true) }, action || 'Confirm'),
        h('button', { type: 'button', class: 'secondary', onclick: () => done(false) }, 'Cancel')));
    const done = (v) => { dlg.close(); dlg.remove(); resolve(v); };
    dlg.addEventListener('cancel', () => done(false));
    document.body.append(dlg);
    dlg.showModal();
  });
}

// secretBox shows a secret once, with a copy button.
export function secretBox(title, value, note) {
  const val = h('div', { class: 'value', id: 'secret-value', tabindex: '0' }, value);
  const copy = h('button', { type: 'button', class: 'secondary', onclick: async () => {
    try {
      await navigator.clipboard.writeText(value);
      toast('Copied to the clipboard');
    } catch {
      const r = document.createRange();
      r.selectNodeContents(val);
      getSelection().removeAllRanges();
      getSelection().addRange(r);
      toast('Selected: press Ctrl+C to copy');
    }
  } }, 'Copy');
  return h('div', { class: 'card secret', role: 'alert' },
    h('strong', {}, title), val,
    h('p', { class: 'muted' }, note || 'Shown once: it cannot be displayed again. Store it now.'),
    copy);
}

// pretty renders a JSON value for a <pre>.
export function pretty(v) {
  try { return JSON.stringify(v, null, 2); } catch { return String(v); }
}
