import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { memoryIO } from '../../src/cli/io.js';
import { sharedFixture, torchFixture } from '../helpers/paths.js';

async function run(...argv: string[]) {
  const io = memoryIO();
  const status = await main(argv, io);
  return { status, out: io.out, err: io.err };
}

const SHARED_INPUTS = [
  'cases/sd1/model.ckpt',
  'cases/sd1/model-fp16-ema.ckpt',
  'cases/sd1/model-legacy-fp16.ckpt',
  'cases/sd1-pipe/model-fp16.ckpt',
  'cases/sd2/model-fp16.ckpt',
  'cases/sd2/model-fp16.safetensors',
  'cases/sdxl-base/model-fp16.safetensors',
  'cases/vae/vae.ckpt',
  'cases/vae/vae-fp16.ckpt',
  'cases/vae/vae-legacy.ckpt',
  'cases/vae/vae.safetensors',
];

describe('ckpt2diffusers inspect', () => {
  it.each(SHARED_INPUTS)('describes %s with the tensor count its case.json lists', async (rel) => {
    const { status, out } = await run('inspect', sharedFixture(rel), '--json');
    const report = JSON.parse(out);
    // 0 when convertible; the SDXL file depends on the families the converter has (test/inspect/).
    expect(status).toBe(report.verdict.exitCode);
    if (!rel.includes('sdxl')) expect(status).toBe(0);
    const caseJson = JSON.parse(readFileSync(sharedFixture(rel.replace(/[^/]+$/, 'case.json')), 'utf8'));
    const keys = Object.keys(caseJson.state_dict_keys);
    // The EMA copies are only in the file saved with them.
    const expected = rel.includes('ema') ? keys.length : keys.filter((k: string) => !k.startsWith('model_ema.')).length;
    expect(report.tensorCount).toBe(expected);
    expect(report.schema).toBe(1);
    expect(report.safety.dangerous).toBe(false);
  });

  it('prints aligned human output with the wrapper, prefixes and Lightning values', async () => {
    const { status, out } = await run('inspect', sharedFixture('cases/sd1/model.ckpt'));
    expect(status).toBe(0);
    expect(out).toMatch(/wrapper\s+\["state_dict"\]/);
    expect(out).toMatch(/model\.diffusion_model\.\s+206/);
    expect(out).toMatch(/global_step\s+470000/);
  });

  it('exits 2 with a coded error for a file it cannot read', async () => {
    const { status, err } = await run('inspect', sharedFixture('cases/sd1/case.json'));
    expect(status).toBe(2);
    expect(err).toMatch(/^error\[E_UNKNOWN_FORMAT\]: .*case\.json/);
  });

  it('describes a hostile file without executing it, listing the dangerous global (exit 1: not convertible)', async () => {
    const { status, out } = await run('inspect', torchFixture('hostile-system.pt'), '--json');
    expect(status).toBe(1);
    const report = JSON.parse(out);
    expect(report.safety.dangerous).toBe(true);
    expect(report.safety.globals.map((g: { module: string; name: string }) => `${g.module}.${g.name}`)).toContain('posix.system');
  });
});

describe('ckpt2diffusers scan', () => {
  it.each(SHARED_INPUTS)('finds %s clean (exit 0)', async (rel) => {
    const { status, out } = await run('scan', sharedFixture(rel), '--json');
    expect(status).toBe(0);
    expect(JSON.parse(out).safety.dangerous).toBe(false);
  });

  it.each([
    ['hostile-system.pt', 'posix.system'],
    ['hostile-eval-proto4.pt', 'builtins.eval'],
    ['hostile-legacy.pt', '__builtin__.exec'],
    ['hostile-runpy.pt', 'runpy._run_code'],
    ['hostile-inst.pt', 'os.system'],
  ])('reports %s as dangerous (exit 1), naming %s', async (name, global) => {
    const { status, out } = await run('scan', torchFixture(name), '--json');
    expect(status).toBe(1);
    const found = JSON.parse(out).safety.globals.filter((g: { safety: string }) => g.safety === 'dangerous');
    expect(found.map((g: { module: string; name: string }) => `${g.module}.${g.name}`)).toContain(global);
  });

  it('says so in the human report', async () => {
    const { status, out } = await run('scan', torchFixture('hostile-system.pt'));
    expect(status).toBe(1);
    expect(out).toMatch(/DANGEROUS\s+posix\.system/);
  });

  it('finds no pickle in a safetensors file', async () => {
    const { status, out } = await run('scan', sharedFixture('cases/vae/vae.safetensors'));
    expect(status).toBe(0);
    expect(out).toMatch(/no pickle - clean/);
  });

  it('exits 2 on a truncated file', async () => {
    const { status, err } = await run('scan', torchFixture('hostile-inst.pkl'));
    expect(status).toBe(2);
    expect(err).toMatch(/^error\[E_[A-Z_]+\]/);
  });
});

describe('CLI usage', () => {
  it('exits 2 on an unknown flag', async () => {
    const { status, err } = await run('inspect', 'x.ckpt', '--bogus');
    expect(status).toBe(2);
    expect(err).toMatch(/E_USAGE/);
  });
});
