/** Small helpers for human-readable CLI output: aligned columns and byte sizes. */

export function formatBytes(n: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let v = n;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u += 1;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[u]}`;
}

export function formatCount(n: number): string {
  return n.toLocaleString('en-US');
}

/** Renders rows as aligned columns; columns whose cells are all numbers are right-aligned. */
export function table(rows: readonly (readonly string[])[], indent = '  '): string {
  if (rows.length === 0) return '';
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  const numeric = (s: string) => /^[-+]?[\d,.]+( [KMGT]?B)?%?$/.test(s);
  const rightAligned = widths.map((_, i) => i > 0 && rows.every((r) => r[i] === undefined || numeric(r[i])));
  const line = (row: readonly string[]) =>
    indent + row.map((cell, i) => (rightAligned[i] ? cell.padStart(widths[i]) : cell.padEnd(widths[i]))).join('  ').trimEnd();
  return rows.map(line).join('\n') + '\n';
}

export function plural(n: number, noun: string): string {
  return `${formatCount(n)} ${noun}${n === 1 ? '' : 's'}`;
}
