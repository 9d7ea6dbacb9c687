/**
 * Code point order for strings: how Rust compares `String`s (UTF-8 bytes) and Python compares
 * `str`. JS `<` compares UTF-16 code units, which differs when a surrogate pair (U+10000 and
 * above) meets a character in U+E000..U+FFFF.
 */

/** Negative, zero or positive as `a` sorts before, with, or after `b` by code point. */
export function compareCodePoints(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return x >= 0xd800 && y >= 0xd800 ? codePointRankOfUnit(x) - codePointRankOfUnit(y) : x - y;
  }
  return a.length - b.length;
}

/** Moves surrogates above U+E000..U+FFFF, keeping the order inside each group. */
function codePointRankOfUnit(unit: number): number {
  if (unit <= 0xdfff) return unit + 0x2000;
  return unit - 0x800;
}
