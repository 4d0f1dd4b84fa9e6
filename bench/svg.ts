// The benchmark's picture: latency distributions on a log scale, one panel per page size, one row
// per series (dots = reps, bar = median).
export interface Series {
  label: string;
  ns: number[];
}
export interface Panel {
  title: string;
  series: Series[];
}

export function fmt(ns: number): string {
  if (!Number.isFinite(ns)) return '-';
  if (ns >= 1e6) return `${(ns / 1e6).toFixed(1)} ms`;
  return `${(ns / 1e3).toFixed(0)} us`;
}

export function quantile(a: number[], q: number): number {
  if (a.length === 0) return NaN;
  const s = [...a].sort((x, y) => x - y);
  const i = (s.length - 1) * q;
  const lo = Math.floor(i);
  return s[lo] + (s[Math.ceil(i)] - s[lo]) * (i - lo);
}
export const median = (a: number[]): number => quantile(a, 0.5);

export function svg(panels: Panel[]): string {
  const W = 960;
  const rowH = 30;
  const x0 = 390;
  const x1 = W - 30;
  const colors = ['#888', '#aaa', '#1f77b4', '#6baed6', '#ff7f0e', '#2ca02c', '#98df8a', '#9467bd', '#d62728'];
  const heights = panels.map((p) => p.series.length * rowH + 50);
  const H = heights.reduce((a, b) => a + b, 0) + 20;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="100%" height="100%" fill="white"/>`);
  let top = 20;
  panels.forEach((p, pi) => {
    const n = p.series.length;
    const all = p.series.flatMap((s) => s.ns).filter((v) => v > 0);
    const lo = Math.log10(Math.min(...all)) - 0.1;
    const hi = Math.log10(Math.max(...all)) + 0.1;
    const X = (ns: number) => x0 + ((Math.log10(ns) - lo) / (hi - lo)) * (x1 - x0);
    parts.push(`<text x="10" y="${top + 12}" font-weight="bold">${p.title}</text>`);
    for (let d = Math.floor(lo); d <= Math.ceil(hi); d++) {
      for (const m of [1, 2, 5]) {
        const v = m * 10 ** d;
        if (Math.log10(v) < lo || Math.log10(v) > hi) continue;
        const x = X(v);
        parts.push(`<line x1="${x}" y1="${top + 20}" x2="${x}" y2="${top + 20 + n * rowH}" stroke="${m === 1 ? '#ccc' : '#eee'}"/>`);
        parts.push(`<text x="${x}" y="${top + 35 + n * rowH}" text-anchor="middle" fill="#555">${fmt(v * 1)}</text>`);
      }
    }
    p.series.forEach((s, i) => {
      const y = top + 20 + i * rowH + rowH / 2;
      parts.push(`<text x="10" y="${y + 4}">${s.label}</text>`);
      for (const v of s.ns) if (v > 0) parts.push(`<circle cx="${X(v).toFixed(1)}" cy="${y}" r="3" fill="${colors[i % colors.length]}" fill-opacity="0.6"/>`);
      const m = median(s.ns);
      if (m > 0) parts.push(`<line x1="${X(m)}" y1="${y - 10}" x2="${X(m)}" y2="${y + 10}" stroke="black" stroke-width="2"/>`);
    });
    top += heights[pi];
  });
  parts.push('</svg>');
  return parts.join('\n');
}
