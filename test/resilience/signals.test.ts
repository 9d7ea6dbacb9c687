/**
 * Interrupting a conversion: the CLI runs in a child process on a mid-size synthetic checkpoint
 * (~120 MB in, ~240 MB out: a second or two of writing) and gets a real signal while the weights
 * are being written.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { batch, COMPLETION_RECORD } from '../../src/batch.js';
import { OWNER_FILE } from '../../src/diffusers/output-folder.js';
import { SD15_LAYOUT, type CheckpointLayout } from '../../src/testing/ldm-layout.js';
import { writeSyntheticCkpt } from '../../src/testing/synthetic.js';
import { repoRoot } from '../helpers/paths.js';

/** SD 1.x's key layout with narrower blocks: every real key, about 120 MB in float16. */
const MID_LAYOUT: CheckpointLayout = {
  ...SD15_LAYOUT,
  unet: { ...SD15_LAYOUT.unet, modelChannels: 64 },
  vae: { ...SD15_LAYOUT.vae, ch: 32 },
  textEncoder: { kind: 'clip-l', width: 256, layers: 4, vocab: 49408, positions: 77, positionIds: true },
};

let root: string;
let input: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'signals-'));
  input = join(root, 'mid.ckpt');
  await writeSyntheticCkpt(input, MID_LAYOUT, 'F16');
}, 120_000);
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

function startCli(...args: string[]): { child: ChildProcess; exit: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> } {
  const child = spawn(process.execPath, ['--import', 'tsx', join('test', 'helpers', 'cli-child.ts'), ...args], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout?.resume();
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal, stderr })),
  );
  return { child, exit };
}

/** Waits until a temp folder of `outDir` holds a UNet weights file with some bytes in it. */
async function waitForWriting(outDir: string, exited: () => boolean): Promise<string> {
  const deadline = Date.now() + 60_000;
  const parent = join(outDir, '..');
  const prefix = `${outDir.split('/').pop()}.partial-`;
  while (Date.now() < deadline && !exited()) {
    const temp = (await readdir(parent).catch(() => [] as string[])).find((n) => n.startsWith(prefix));
    if (temp) {
      const weights = join(parent, temp, 'unet', 'diffusion_pytorch_model.safetensors');
      const st = await stat(weights).catch(() => undefined);
      if (st && st.size > 1_000_000) return join(parent, temp);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error('the conversion never started writing the UNet (or finished before it could be interrupted)');
}

async function leftovers(dir: string): Promise<string[]> {
  return (await readdir(dir).catch(() => [] as string[])).filter((n) => n.includes('.partial-'));
}

describe('signals while writing', () => {
  it.each([
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const)('%s removes the temporary folder, leaves no output and exits %i', async (signal, status) => {
    const outDir = join(root, `out-${signal}`);
    let done = false;
    const { child, exit } = startCli('batch', input, '--out-dir', outDir);
    void exit.then(() => (done = true));
    const temp = await waitForWriting(join(outDir, 'mid'), () => done);
    child.kill(signal);
    const result = await exit;
    expect(result.code, result.stderr).toBe(status);
    expect(result.stderr).toMatch(new RegExp(`error\\[E_INTERRUPTED\\]: stopped by ${signal}; removed 1 unfinished output folder`));
    expect(existsSync(temp)).toBe(false);
    expect(existsSync(join(outDir, 'mid'))).toBe(false);
    expect(await leftovers(outDir)).toEqual([]);
  });

  it('after SIGKILL the next run removes the leftover and converts', async () => {
    const outDir = join(root, 'out-kill');
    let done = false;
    const { child, exit } = startCli('convert', input, join(outDir, 'mid'));
    void exit.then(() => (done = true));
    const temp = await waitForWriting(join(outDir, 'mid'), () => done);
    child.kill('SIGKILL');
    expect((await exit).signal).toBe('SIGKILL');
    // What a SIGKILL leaves: the temp folder, with its owner record, and no output.
    expect(existsSync(join(temp, OWNER_FILE))).toBe(true);
    expect(existsSync(join(outDir, 'mid'))).toBe(false);

    const report = await batch([input], { outDir });
    expect(report.results[0]).toMatchObject({ status: 'converted', cleaned: [temp] });
    expect(existsSync(temp)).toBe(false);
    expect(await leftovers(outDir)).toEqual([]);
    expect(existsSync(join(outDir, 'mid', COMPLETION_RECORD))).toBe(true);
    expect(existsSync(join(outDir, 'mid', OWNER_FILE))).toBe(false);
  });
});
