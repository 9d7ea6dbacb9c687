/**
 * Full and read-only output filesystems, for real: a 1 MiB tmpfs (disk full) and a tmpfs remounted
 * read-only, both mounted by the test (we run as root). Where mounting is refused the tests skip and
 * say why; injected-error.test.ts covers ENOSPC without a mount, and always runs.
 *
 * Why not chmod 555: root bypasses permission bits, so a mode-555 folder is writable for root and
 * would test nothing. A read-only mount fails for everyone (EROFS). For other users the chmod
 * test below runs instead.
 */
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { batch } from '../../src/batch.js';
import { convert } from '../../src/convert.js';
import { sharedFixture } from '../helpers/paths.js';
import { mountTmpfs, remountReadOnly, tmpfsUnavailable, unmount } from '../helpers/tmpfs.js';

const probeRoot = await mkdtemp(join(tmpdir(), 'tmpfs-probe-'));
const noTmpfs = await tmpfsUnavailable(join(probeRoot, 'probe'));
await rm(probeRoot, { recursive: true, force: true });
if (noTmpfs) console.warn(`filesystem tests skipped: ${noTmpfs}`);
const isRoot = process.getuid?.() === 0;

let root: string;
const mounts: string[] = [];
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'fs-'));
});
afterEach(async () => {
  for (const m of mounts.splice(0)) unmount(m);
  await rm(root, { recursive: true, force: true });
});

async function mounted(size: string): Promise<string> {
  const dir = join(root, 'mnt');
  const reason = await mountTmpfs(dir, size);
  if (reason) throw new Error(reason);
  mounts.push(dir);
  return dir;
}

describe('disk full (real ENOSPC on a 1 MiB tmpfs)', () => {
  it.skipIf(noTmpfs !== undefined)(`fails with E_DISK_FULL and leaves the filesystem empty${noTmpfs ? ` (skipped: ${noTmpfs})` : ''}`, async () => {
    const mnt = await mounted('1m');
    const input = sharedFixture('cases/sd1/model.ckpt'); // ~2.6 MB of float32 weights: does not fit
    const err = await convert(input, join(mnt, 'out')).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'E_DISK_FULL', message: expect.stringContaining('ENOSPC') });
    expect(await readdir(mnt)).toEqual([]);

    const report = await batch([input, sharedFixture('cases/vae/vae-fp16.ckpt')], { outDir: mnt, jobs: 1 });
    // The first does not fit; the second (~0.5 MB as float16) fits in the space the first gave back.
    expect(report.results.map((r) => [r.status, r.code])).toEqual([
      ['failed', 'E_DISK_FULL'],
      ['converted', undefined],
    ]);
  });
});

describe('read-only output', () => {
  it.skipIf(noTmpfs !== undefined)(`a read-only filesystem fails with E_OUTPUT_NOT_WRITABLE${noTmpfs ? ` (skipped: ${noTmpfs})` : ''}`, async () => {
    const mnt = await mounted('4m');
    await mkdir(join(mnt, 'models'));
    remountReadOnly(mnt);
    const input = sharedFixture('cases/vae/vae.safetensors');
    for (const outDir of [join(mnt, 'models', 'vae'), join(mnt, 'new', 'vae')]) {
      const err = await convert(input, outDir).catch((e: unknown) => e);
      expect(err, outDir).toMatchObject({ code: 'E_OUTPUT_NOT_WRITABLE', message: expect.stringContaining('EROFS') });
    }
    const report = await batch([input], { outDir: join(mnt, 'models') });
    expect(report.results[0]).toMatchObject({ status: 'failed', code: 'E_OUTPUT_NOT_WRITABLE' });
    expect(await readdir(join(mnt, 'models'))).toEqual([]);
  });

  it.skipIf(isRoot)('a mode-555 folder fails with E_OUTPUT_NOT_WRITABLE (non-root only: root ignores modes)', async () => {
    const dir = join(root, 'locked');
    await mkdir(dir);
    await chmod(dir, 0o555);
    try {
      const err = await convert(sharedFixture('cases/vae/vae.safetensors'), join(dir, 'vae')).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'E_OUTPUT_NOT_WRITABLE' });
    } finally {
      await chmod(dir, 0o755);
    }
  });

  it('an output path under a file fails with E_OUTPUT_NOT_WRITABLE; a missing output folder is created', async () => {
    await writeFile(join(root, 'file'), 'x');
    const input = sharedFixture('cases/vae/vae.safetensors');
    await expect(convert(input, join(root, 'file', 'sub', 'vae'))).rejects.toMatchObject({ code: 'E_OUTPUT_NOT_WRITABLE' });
    const report = await batch([input], { outDir: join(root, 'not', 'yet', 'there') });
    expect(report.results[0].status).toBe('converted');
    expect(existsSync(join(root, 'not', 'yet', 'there', 'vae', 'config.json'))).toBe(true);
  });
});

afterAll(() => {
  for (const m of mounts.splice(0)) unmount(m);
});
