// The console's only way to the gateway: the management API with the API
// key of this browser tab (sessionStorage: gone when the tab closes).

const KEY = 'coapgate.apiKey';

export const session = {
  get key() { return sessionStorage.getItem(KEY); },
  set(k) { sessionStorage.setItem(KEY, k); },
  clear() { sessionStorage.removeItem(KEY); },
};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// onUnauthorized is called when the API refuses the key.
export let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

// q builds a query string from an object, skipping empty values; arrays
// repeat the parameter.
export function q(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v === undefined || v === null || v === '') continue;
    for (const x of Array.isArray(v) ? v : [v]) u.append(k, x);
  }
  const s = u.toString();
  return s ? '?' + s : '';
}

export function enc(s) { return encodeURIComponent(s); }

// api calls the API and returns the decoded JSON body (null for 204). A
// 401 signs out (opts.signIn: the sign-in check itself, which reports it).
export async function api(method, path, body, opts = {}) {
  const headers = { Authorization: 'Bearer ' + (session.key || '') };
  const init = { method, headers, signal: opts.signal, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const resp = await fetch('/api/v1' + path, init);
  if (resp.status === 204) return null;
  let data = null;
  const text = await resp.text();
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!resp.ok) {
    if (resp.status === 401 && !opts.signIn) onUnauthorized();
    throw new ApiError(resp.status, data?.code || 'http_' + resp.status, data?.message || resp.statusText);
  }
  return data;
}

// stream reads the Server-Sent Events of GET path (fetch, so that the key
// goes in the Authorization header rather than the URL) and calls
// onEvent({id, event, data}) for each, reconnecting with Last-Event-ID
// until signal aborts. onState(true|false) reports the connection; a
// request the API refuses (4xx, e.g. a bad topic filter) ends the stream
// with onError(message).
export async function stream(path, onEvent, signal, onState = () => {}, onError = () => {}) {
  let lastId = '';
  while (!signal.aborted) {
    try {
      const headers = { Authorization: 'Bearer ' + (session.key || ''), Accept: 'text/event-stream' };
      if (lastId) headers['Last-Event-ID'] = lastId;
      const resp = await fetch('/api/v1' + path, { headers, signal, cache: 'no-store' });
      if (resp.status === 401) { onUnauthorized(); return; }
      if (resp.status >= 400 && resp.status < 500) {
        let msg = resp.statusText;
        try { msg = (await resp.json()).message || msg; } catch { /* not JSON */ }
        onState(false);
        onError(msg);
        return;
      }
      if (!resp.ok) throw new ApiError(resp.status, 'stream', resp.statusText);
      onState(true);
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const ev = { id: '', event: 'message', data: '' };
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) continue;
            const c = line.indexOf(':');
            const f = c < 0 ? line : line.slice(0, c);
            const v = c < 0 ? '' : line.slice(c + 1).replace(/^ /, '');
            if (f === 'id') ev.id = v;
            else if (f === 'event') ev.event = v;
            else if (f === 'data') ev.data += (ev.data ? '\n' : '') + v;
          }
          if (ev.id) lastId = ev.id;
          if (ev.data) {
            try { onEvent({ ...ev, data: JSON.parse(ev.data) }); } catch (e) { console.warn('stream entry', e); }
          }
        }
      }
    } catch (e) {
      if (signal.aborted) return;
    }
    onState(false);
    if (signal.aborted) return;
    await new Promise((r) => setTimeout(r, 2000)); // then resume after lastId
  }
}
