/**
 * The input changes while it is being converted: truncated, rewritten in place, deleted. The
 * change is made from the progress callback, after the first tensor was written, so it happens
 * for certain in the middle of the run. Every case ends with a coded error and no output.
 */
import { existsSync } from 'node:fs';
import { copyFile, mkdtemp, open, readdir, rm, truncate, unlink, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { batch } from '../../src/batch.js';
import { convert } from '../../src/convert.js';
import type { ProgressEvent } from '../../src/progress.js';
import { sharedFixture } from '../helpers/paths.js';

let root: string;
let input: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'input-change-'));
  input = join(root, 'model.ckpt');
  await copyFile(sharedFixture('cases/sd1/model.ckpt'), input);
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

/** A progress callback that runs `change` once, at the first tensor written. */
function onFirstTensor(change: () => Promise<void>): { onProgress: (e: ProgressEvent) => void; done: () => Promise<void> } {
  let pending: Promise<void> | undefined;
  return {
    onProgress: (e) => {
      if (e.type === 'tensor' && pending === undefined) pending = change();
    },
    done: () => pending ?? Promise.resolve(),
  };
}

async function convertWhile(change: () => Promise<void>): Promise<unknown> {
  const hook = onFirstTensor(change);
  // The change is synchronous enough: it runs before the next read of the input.
  const err = await convert(input, join(root, 'out'), { onProgress: hook.onProgress }).catch((e: unknown) => e);
  await hook.done();
  return err;
}

function expectNoOutput(): Promise<void> {
  expect(existsSync(join(root, 'out'))).toBe(false);
  return readdir(root).then((names) => expect(names.filter((n) => n.startsWith('out'))).toEqual([]));
}

describe('input changed mid-run', () => {
  it('truncated: E_TRUNCATED, no output', async () => {
    const err = await convertWhile(() => truncate(input, 100_000));
    expect(err).toMatchObject({ code: 'E_TRUNCATED', message: expect.stringContaining('shrank') });
    await expectNoOutput();
  });

  it('rewritten in place (same size, new mtime): E_INPUT_CHANGED, no output', async () => {
    const err = await convertWhile(async () => {
      const fh = await open(input, 'r+');
      await fh.write(new Uint8Array(16), 0, 16, 200_000);
      await fh.close();
      const later = new Date(Date.now() + 5_000);
      await utimes(input, later, later);
    });
    expect(err).toMatchObject({ code: 'E_INPUT_CHANGED', message: expect.stringContaining('was modified') });
    await expectNoOutput();
  });

  it('grown: E_INPUT_CHANGED', async () => {
    const err = await convertWhile(async () => {
      const fh = await open(input, 'a');
      await fh.write(new Uint8Array(10));
      await fh.close();
    });
    expect(err).toMatchObject({ code: 'E_INPUT_CHANGED', message: expect.stringContaining('grew') });
    await expectNoOutput();
  });

  it('deleted: E_INPUT_CHANGED, no output', async () => {
    const err = await convertWhile(() => unlink(input));
    expect(err).toMatchObject({ code: 'E_INPUT_CHANGED', message: expect.stringContaining('deleted') });
    await expectNoOutput();
  });

  it('batch reports the truncated input and converts the others', async () => {
    const other = join(root, 'vae.safetensors');
    await copyFile(sharedFixture('cases/vae/vae.safetensors'), other);
    let truncated = false;
    const report = await batch([input, other], {
      outDir: join(root, 'out'),
      jobs: 1,
      onProgress: (e) => {
        if (e.type === 'file-progress' && e.event.type === 'tensor' && e.input === input && !truncated) {
          truncated = true;
          void truncate(input, 100_000);
        }
      },
    });
    expect(report.results.map((r) => [r.status, r.code])).toEqual([
      ['failed', 'E_TRUNCATED'],
      ['converted', undefined],
    ]);
    expect(await readdir(join(root, 'out'))).toEqual(['vae']);
  });
});
