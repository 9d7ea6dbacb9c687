/**
 * Where the tests find their fixtures. Paths are resolved from this file's location, so the
 * repository can live anywhere.
 */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root (this file is <repo>/test/helpers/paths.ts). */
export const repoRoot: string = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * A file of the shared fixture set, e.g. `cases/sd1/model.ckpt` or `golden/sd1/golden.json`:
 * the copy under <repo>/fixtures/shared/ when it exists, else the shared set next to the
 * repository (<repo>/../shared/fixtures/), which also holds the larger goldens not copied here.
 */
export function sharedFixture(rel: string): string {
  const local = join(repoRoot, 'fixtures', 'shared', rel);
  if (existsSync(local)) return local;
  return join(repoRoot, '..', 'shared', 'fixtures', rel);
}

/** A file written by fixtures/generate.py, e.g. `views.pt` or `views.pt.expected.json`. */
export function torchFixture(name: string): string {
  return join(repoRoot, 'fixtures', 'torch', name);
}
