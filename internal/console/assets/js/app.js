// Entry point: sign-in, navigation and the page router (location.hash).
import { h, fill, toast } from './dom.js';
import { api, session, setUnauthorizedHandler, ApiError } from './api.js';
import { overview } from './pages/overview.js';
import { products } from './pages/products.js';
import { devices } from './pages/devices.js';
import { device } from './pages/device.js';
import { rules, ruleEdit } from './pages/rules.js';
import { live } from './pages/stream.js';
import { apikeys } from './pages/apikeys.js';

const main = document.getElementById('main');
const top = document.getElementById('top');

// routes: [pattern, page, nav link]; a page is render(main, params, signal).
const routes = [
  [/^\/?$/, overview, '#/'],
  [/^\/products$/, products, '#/products'],
  [/^\/devices$/, devices, '#/devices'],
  [/^\/devices\/([^/]+)\/([^/]+)$/, device, '#/devices'],
  [/^\/rules$/, rules, '#/rules'],
  [/^\/rules\/(new|[^/]+)$/, ruleEdit, '#/rules'],
  [/^\/stream$/, live, '#/stream'],
  [/^\/apikeys$/, apikeys, '#/apikeys'],
];

let current = null; // AbortController of the page on screen

function signIn(message) {
  if (current) current.abort();
  current = null;
  top.hidden = true;
  const key = h('input', { id: 'apikey', type: 'password', autocomplete: 'off', required: true, spellcheck: 'false' });
  const err = h('p', { class: 'error', role: 'alert', id: 'signin-error' }, message || '');
  const form = h('form', { class: 'card signin', onsubmit: async (e) => {
    e.preventDefault();
    session.set(key.value.trim());
    try {
      await api('GET', '/apikeys', undefined, { signIn: true });
      route();
    } catch (ex) {
      session.clear();
      err.textContent = ex instanceof ApiError && ex.status === 401 ? 'This API key is not valid.' : 'Cannot reach the gateway: ' + ex.message;
    }
  } },
  h('h1', {}, 'Sign in to coapgate'),
  h('label', { for: 'apikey' }, 'API key'), key,
  h('p', { class: 'muted' }, 'The key printed by "coapgate serve" on its first start, or one created under API keys. It is kept in this browser tab only.'),
  err,
  h('button', { type: 'submit', id: 'signin' }, 'Sign in'));
  fill(main, form);
  key.focus();
}

function route() {
  if (!session.key) return signIn();
  top.hidden = false;
  if (current) current.abort();
  current = new AbortController();
  const [rawPath, qs] = location.hash.replace(/^#/, '').split('?');
  const path = rawPath || '/';
  const query = new URLSearchParams(qs || '');
  for (const [re, page, nav] of routes) {
    const m = path.match(re);
    if (!m) continue;
    for (const a of document.querySelectorAll('#nav a')) {
      if (a.getAttribute('href') === nav) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    main.replaceChildren();
    const signal = current.signal;
    Promise.resolve(page(main, m.slice(1).map(decodeURIComponent), signal, query)).catch((e) => {
      if (signal.aborted) return;
      fill(main, h('p', { class: 'error', role: 'alert' }, 'Could not load this page: ' + e.message));
    });
    main.focus({ preventScroll: true });
    return;
  }
  fill(main, h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '#/' }, 'Back to the overview')));
}

setUnauthorizedHandler(() => {
  session.clear();
  signIn('The API key was refused (deleted?). Sign in again.');
});
document.getElementById('signout').addEventListener('click', () => {
  session.clear();
  toast('Signed out');
  signIn();
});
window.addEventListener('hashchange', route);
window.addEventListener('unhandledrejection', (e) => {
  if (e.reason instanceof ApiError) {
    e.preventDefault();
    toast(e.reason.message, true);
  }
});
route();
