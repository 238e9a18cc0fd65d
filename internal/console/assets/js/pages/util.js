import { toast } from '../dom.js';

// act runs an async UI action, reporting a failure as a toast.
export function act(fn) {
  return async (e) => {
    try {
      await fn(e);
    } catch (ex) {
      toast(ex.message || String(ex), true);
    }
  };
}

// pager keeps the cursors of a paged listing: next(cursor) / prev().
export function pager() {
  const stack = [''];
  return {
    get cursor() { return stack[stack.length - 1]; },
    get page() { return stack.length; },
    next(c) { stack.push(c); },
    prev() { if (stack.length > 1) stack.pop(); },
    reset() { stack.length = 1; },
  };
}

// every runs fn now and then every ms until signal aborts.
export function every(ms, signal, fn) {
  const tick = () => Promise.resolve(fn()).catch((e) => { if (!signal.aborted) toast(e.message, true); });
  tick();
  const t = setInterval(tick, ms);
  signal.addEventListener('abort', () => clearInterval(t));
}

// The data each element was last rendered from: periodic refreshes skip
// rendering when nothing changed, so that keyboard focus and text
// selection survive them.
const rendered = new WeakMap();

// changed reports whether data differs from what el was last rendered
// from, and remembers it.
export function changed(el, data) {
  const sig = JSON.stringify(data);
  if (rendered.get(el) === sig) return false;
  rendered.set(el, sig);
  return true;
}
