/**
 * The end-to-end check a user runs after converting: a shared case converted, then verified with a
 * test generation. The call is the one Diffusers made for the sd1-pipe goldens (64x64, 4 PNDM steps,
 * guidance 7.5, seed 42), so the verdict is judged on a run whose numbers are known to be Diffusers'.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memoryIO } from '../../src/cli/io.js';
import { main } from '../../src/cli/main.js';
import { decodePng } from '../../src/generate/png.js';
import { readFile } from 'node:fs/promises';
import { sharedFixture } from '../helpers/paths.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'c2d-clean-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('convert, then verify with a test generation', () => {
  it('writes a PNG and gives a clean verdict on the converted sd1-pipe case', async () => {
    const out = join(dir, 'pipe');
    const input = sharedFixture('cases/sd1-pipe/model-fp16.ckpt');
    const io = memoryIO();
    expect(await main([input, out, '-q'], io), io.err).toBe(0);
    const png = join(dir, 'cat.png');
    const v = memoryIO();
    const argv = ['verify', out, '--source', input, '--prompt', 'a photo of a cat', '--steps', '4', '--guidance', '7.5'];
    const status = await main([...argv, '--seed', '42', '--width', '64', '--height', '64', '--save', png, '--json', '-q'], v);
    expect(status, v.err).toBe(0);
    const report = JSON.parse(v.out);
    expect(report.verdict).toBe('clean');
    expect(report.generation.checks.map((c: { name: string; status: string }) => `${c.name}:${c.status}`)).toEqual(['finite:pass', 'not-flat:pass', 'latents:pass', 'prediction-type:pass']);
    expect(existsSync(png)).toBe(true);
    const image = decodePng(await readFile(png));
    expect([image.width, image.height]).toEqual([64, 64]);
  }, 120_000);
});
