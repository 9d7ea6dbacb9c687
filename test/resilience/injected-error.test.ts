/**
 * Write errors injected below the library (node:fs/promises file handles fail with ENOSPC or
 * EROFS for files under a chosen folder): runs everywhere, unlike the tmpfs tests.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

const inject = vi.hoisted(() => ({ under: '', code: 'ENOSPC', afterBytes: 0 }));

vi.mock('node:fs/promises', async (importOriginal) => {
  const actual = await importOriginal<typeof import('node:fs/promises')>();
  const failing = (written: { n: number }) => async (...args: unknown[]) => {
    const buf = args[0] as Uint8Array;
    const length = (args[2] as number | undefined) ?? buf.length;
    if (written.n + length > inject.afterBytes) {
      throw Object.assign(new Error(`${inject.code}: injected write failure, write`), { code: inject.code, syscall: 'write' });
    }
    written.n += length;
    return undefined;
  };
  const open = async (...args: Parameters<typeof actual.open>) => {
    const handle = await actual.open(...args);
    if (!inject.under || !String(args[0]).startsWith(inject.under) || args[1] !== 'w') return handle;
    const written = { n: 0 };
    const write = failing(written);
    return new Proxy(handle, {
      get(target, prop) {
        if (prop === 'write') {
          return async (...a: unknown[]) => {
            await write(...a);
            return (target.write as (...x: unknown[]) => Promise<unknown>)(...a);
          };
        }
        const value = Reflect.get(target, prop);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
  };
  return { ...actual, default: { ...actual, open }, open };
});

const { batch } = await import('../../src/batch.js');
const { convert } = await import('../../src/convert.js');
const { sharedFixture } = await import('../helpers/paths.js');

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'inject-'));
});
afterEach(async () => {
  inject.under = '';
  await rm(root, { recursive: true, force: true });
});

describe('injected write errors', () => {
  it('ENOSPC in the middle of a weights file: E_DISK_FULL, no output, no temp folder', async () => {
    Object.assign(inject, { under: root, code: 'ENOSPC', afterBytes: 200_000 });
    const outDir = join(root, 'out');
    const err = await convert(sharedFixture('cases/sd1/model.ckpt'), outDir).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'E_DISK_FULL', hint: expect.stringContaining('Free some space') });
    expect(existsSync(outDir)).toBe(false);
    expect(await readdir(root)).toEqual([]);
  });

  it('EROFS when the first byte is written: E_OUTPUT_NOT_WRITABLE, reported by batch', async () => {
    Object.assign(inject, { under: root, code: 'EROFS', afterBytes: 0 });
    const report = await batch([sharedFixture('cases/vae/vae.safetensors')], { outDir: join(root, 'out') });
    expect(report.results[0]).toMatchObject({ status: 'failed', code: 'E_OUTPUT_NOT_WRITABLE' });
    expect(await readdir(join(root, 'out'))).toEqual([]);
  });
});
