import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memoryIO } from '../../src/cli/io.js';
import { main } from '../../src/cli/main.js';
import { openSafetensors } from '../../src/formats/safetensors.js';
import { FileSource } from '../../src/io/file-source.js';
import { sharedFixture } from '../helpers/paths.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'c2d-extras-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function run(...argv: string[]) {
  const io = memoryIO();
  const status = await main(argv, io);
  return { status, out: io.out, err: io.err };
}

async function tensors(path: string): Promise<Map<string, Uint8Array>> {
  const source = await openSafetensors(await FileSource.open(path));
  try {
    const out = new Map<string, Uint8Array>();
    for (const t of source.tensors) out.set(t.name, await source.readTensor(t.name));
    return out;
  } finally {
    await source.close();
  }
}

describe('convert --vae FILE', () => {
  it("writes the standalone VAE in place of the checkpoint's own, and accounts for the replaced keys", async () => {
    const out = join(dir, 'with-vae');
    const report = join(dir, 'with-vae.json');
    const vaeFile = sharedFixture('cases/vae/vae.safetensors');
    const r = await run(sharedFixture('cases/sd1/model.ckpt'), out, '--vae', vaeFile, '--report', report, '-q');
    expect(r.status, r.err).toBe(0);
    // The VAE case's own conversion is Diffusers' output for that VAE file: the bytes must be those.
    const want = await tensors(sharedFixture('golden/vae/diffusers/diffusion_pytorch_model.safetensors'));
    const got = await tensors(join(out, 'vae', 'diffusion_pytorch_model.safetensors'));
    expect([...got.keys()].sort()).toEqual([...want.keys()].sort());
    for (const [name, bytes] of want) expect(Buffer.compare(Buffer.from(got.get(name)!), Buffer.from(bytes)), name).toBe(0);
    // ... while the UNet still comes from the checkpoint.
    const unet = await tensors(join(out, 'unet', 'diffusion_pytorch_model.safetensors'));
    const goldenUnet = await tensors(sharedFixture('golden/sd1/diffusers/unet/diffusion_pytorch_model.safetensors'));
    expect(Buffer.compare(Buffer.from(unet.get('conv_in.weight')!), Buffer.from(goldenUnet.get('conv_in.weight')!))).toBe(0);
    const account = JSON.parse(await readFile(report, 'utf8')).account;
    const replaced = account.dropped.filter((d: { reason: string }) => d.reason.includes('--vae'));
    expect(replaced.length).toBe(120);
    expect(replaced.every((d: { source: string }) => d.source.startsWith('first_stage_model.'))).toBe(true);
    expect(account.mapped.some((m: { component: string }) => m.component === 'vae')).toBe(false);
  });

  it('refuses a --vae file that is not a standalone VAE (usage error, exit 2, nothing written)', async () => {
    const out = join(dir, 'bad-vae');
    const r = await run(sharedFixture('cases/sd1/model.ckpt'), out, '--vae', sharedFixture('cases/sd2/model-fp16.safetensors'), '-q');
    expect(r.status).toBe(2);
    expect(r.err).toMatch(/^error\[E_USAGE\]: .*standalone VAE/);
    expect(existsSync(out)).toBe(false);
  });
});

describe('convert --onnx DIR', () => {
  it('converts, then exports the folder to ONNX in one go', async () => {
    const out = join(dir, 'onnx-src');
    const onnx = join(dir, 'onnx-out');
    const r = await run(sharedFixture('cases/sd1/model.ckpt'), out, '--onnx', onnx, '--json', '-q');
    expect(r.status, r.err).toBe(0);
    const summary = JSON.parse(r.out);
    expect(summary.onnx.layout).toBe('optimum');
    for (const c of ['text_encoder', 'unet', 'vae_encoder', 'vae_decoder']) expect(existsSync(join(onnx, c, 'model.onnx')), c).toBe(true);
    expect(existsSync(join(out, 'model_index.json'))).toBe(true);
  });
});
