// Line charts with uPlot (vendored: assets/vendor, MIT licence).

// lineChart draws series over time into el and returns {set(xs, ...ys),
// range(min, max), destroy()}.
// xs are unix seconds. el gets data-points with the number of x values, so
// that tests and assistive text can tell what is drawn.
export function lineChart(el, labels, opts = {}) {
  const width = () => Math.max(280, el.clientWidth || 600);
  const colors = ['#1f6feb', '#c62828', '#2e7d32', '#b26a00'];
  let xr = null; // [min, max] of the x axis, unix seconds; null: the data's
  const series = [{}].concat(labels.map((l, i) => ({ label: l, stroke: colors[i % colors.length], width: 2, points: { show: true, size: 4 } })));
  const u = new window.uPlot({
    width: width(), height: opts.height || 240,
    series,
    axes: [{}, { size: 60 }],
    scales: { x: { time: true, range: (u, min, max) => xr || [min, max] } },
    legend: { show: true },
  }, [[], ...labels.map(() => [])], el);
  const ro = new ResizeObserver(() => u.setSize({ width: width(), height: opts.height || 240 }));
  ro.observe(el);
  el.dataset.points = '0';
  return {
    // range fixes the x axis to [min, max] (unix seconds) from the next set.
    range(min, max) { xr = [min, max]; },
    set(xs, ...ys) {
      u.setData([xs, ...ys]);
      el.dataset.points = String(xs.length);
      el.setAttribute('aria-label', (opts.title || 'chart') + ': ' + xs.length + ' values');
    },
    destroy() { ro.disconnect(); u.destroy(); },
  };
}
