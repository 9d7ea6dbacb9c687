import { copyFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { sharedFixture, torchFixture } from '../helpers/paths.js';
import { cleanTemps, runInspect, runInspectHuman, tempDir } from './helpers.js';

afterAll(cleanTemps);

/** Every shared case input, its family, and whether it carries EMA weights. */
const CASES = [
  ['cases/sd1/model.ckpt', 'sd1', false],
  ['cases/sd1/model-fp16-ema.ckpt', 'sd1', true],
  ['cases/sd1/model-legacy-fp16.ckpt', 'sd1', false],
  ['cases/sd1-pipe/model-fp16.ckpt', 'sd1', false],
  ['cases/sd2/model-fp16.ckpt', 'sd2', false],
  ['cases/sd2/model-fp16.safetensors', 'sd2', false],
  ['cases/vae/vae.ckpt', 'vae', false],
  ['cases/vae/vae-fp16.ckpt', 'vae', false],
  ['cases/vae/vae-legacy.ckpt', 'vae', false],
  ['cases/vae/vae.safetensors', 'vae', false],
] as const;

describe('inspect on every shared checkpoint', () => {
  it.each(CASES)('%s: family %s, EMA %s, a convert command (exit 0)', async (rel, family, ema) => {
    const path = sharedFixture(rel);
    const { status, report } = await runInspect(path);
    expect(status).toBe(0);
    expect(report).toMatchObject({ schema: 1, kind: 'file', verdict: { status: 'convertible', exitCode: 0 } });
    expect(report.family.id).toBe(family);
    expect(report.family.evidence.length).toBeGreaterThan(0);
    expect(['high', 'medium', 'low']).toContain(report.family.confidence);
    expect(report.ema.present).toBe(ema);
    expect(report.keys.unknown).toEqual([]);
    expect(report.convert.argv.slice(0, 3)).toEqual(['ckpt2diffusers', path, path.replace(/\.[^.]+$/, '-diffusers')]);
    expect(report.convert.argv.includes('--extract-ema')).toBe(ema);
    const params = report.components.reduce((s: number, c: { parameters: number }) => s + c.parameters, 0);
    expect(params).toBeGreaterThan(0);
    expect(params).toBeLessThanOrEqual(report.parameters);
  });

  it('suggests --extract-ema for the file saved with EMA weights, and says why', async () => {
    const { report } = await runInspect(sharedFixture('cases/sd1/model-fp16-ema.ckpt'));
    expect(report.ema.count).toBeGreaterThan(100);
    expect(report.problems).toContainEqual(expect.objectContaining({ code: 'ema-present', severity: 'info' }));
    expect(report.convert.flags).toContainEqual(expect.objectContaining({ flag: '--extract-ema' }));
    expect(report.convert.command).toMatch(/ --extract-ema$/);
  });

  it('gives the SD 2 prediction type with its evidence and warns that it is a default', async () => {
    const { report } = await runInspect(sharedFixture('cases/sd2/model-fp16.ckpt'));
    expect(report.prediction.predictionType).toMatchObject({ value: 'v_prediction', confidence: 'low' });
    expect(report.prediction.predictionType.evidence[0]).toMatchObject({ what: 'family', found: 'sd2' });
    expect(report.problems).toContainEqual(expect.objectContaining({ code: 'prediction-guessed', severity: 'warning' }));
    expect(report.problems.find((p: { code: string }) => p.code === 'prediction-guessed').fix).toContain('--prediction-type epsilon');
  });

  it('gives SD 1 epsilon, parameters per component and the dtype mix', async () => {
    const { report } = await runInspect(sharedFixture('cases/sd1-pipe/model-fp16.ckpt'));
    expect(report.prediction.predictionType.value).toBe('epsilon');
    expect(report.components.map((c: { folder: string }) => c.folder).sort()).toEqual(['text_encoder', 'unet', 'vae']);
    for (const c of report.components) expect(Object.keys(c.dtypes)).toContain('F16');
  });

  it('gives the standalone VAE command (one AutoencoderKL folder, no pipeline flags)', async () => {
    const path = sharedFixture('cases/vae/vae.safetensors');
    const { report } = await runInspect(path);
    expect(report.convert).toMatchObject({ writes: 'model', flags: [] });
    expect(report.convert.command).toBe(`ckpt2diffusers ${path} ${path.replace(/\.safetensors$/, '-diffusers')}`);
    expect(report.components).toEqual([expect.objectContaining({ folder: 'vae', className: 'AutoencoderKL' })]);
    expect(report.prediction).toBeNull();
    expect(report.verdict.summary).toMatch(/single AutoencoderKL folder/);
  });

  it('names SDXL either as its family or as recognised but not convertible yet', async () => {
    const { status, report } = await runInspect(sharedFixture('cases/sdxl-base/model-fp16.safetensors'));
    expect(status).toBe(report.verdict.exitCode);
    if (report.family) expect(report.family.id).toMatch(/^sdxl/);
    else expect(report.problems).toContainEqual(expect.objectContaining({ code: 'unsupported-family', message: expect.stringContaining('SDXL') }));
  });

  it('passes the YAML saved next to the checkpoint under the same name', async () => {
    const dir = await tempDir();
    await copyFile(sharedFixture('cases/sd2/model-fp16.safetensors'), join(dir, 'my model.safetensors'));
    await copyFile(sharedFixture('cases/sd2/original_config.yaml'), join(dir, 'my model.yaml'));
    const { report } = await runInspect(join(dir, 'my model.safetensors'));
    expect(report.convert.argv.slice(-2)).toEqual(['--original-config', join(dir, 'my model.yaml')]);
    expect(report.convert.command).toContain(`'${join(dir, 'my model.yaml')}'`);
  });

  it('refuses a hostile pickle (exit 1) and names the dangerous global', async () => {
    const { status, report } = await runInspect(torchFixture('hostile-system.pt'));
    expect(status).toBe(1);
    expect(report.safety.dangerous).toBe(true);
    expect(report.convert).toBeNull();
    expect(report.problems[0]).toMatchObject({ code: 'unsafe-pickle', severity: 'error' });
    expect(report.problems[0].message).toContain('posix.system');
  });

  it('says a file of other tensors is no known family (exit 1)', async () => {
    const { status, report } = await runInspect(torchFixture('views.pt'));
    expect(status).toBe(1);
    expect(report.problems.map((p: { code: string }) => p.code)).toContain('unknown-family');
  });

  it('exits 2 for a file it cannot read', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'corrupt.ckpt'), 'PK\x03\x04 not really');
    const { status, err } = await runInspect(join(dir, 'corrupt.ckpt'));
    expect(status).toBe(2);
    expect(err).toMatch(/^error\[E_[A-Z_]+\]/);
  });

  it('prints family evidence, settings, components and the command for humans', async () => {
    const { status, out } = await runInspectHuman(sharedFixture('cases/sd1/model-fp16-ema.ckpt'));
    expect(status).toBe(0);
    expect(out).toMatch(/family sd1 \((high|medium|low) confidence\)/);
    expect(out).toMatch(/prediction type\s+epsilon/);
    expect(out).toMatch(/unet\s+UNet2DConditionModel/);
    expect(out).toMatch(/convert\n {2}ckpt2diffusers .*--extract-ema\n/);
    expect(out).toMatch(/verdict: convertible/);
  });
});
