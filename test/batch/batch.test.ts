import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { batch, COMPLETION_RECORD, expandInputs, globToRegExp, parseShard, readCompletionRecord, shardOf } from '../../src/batch.js';
import { memoryIO } from '../../src/cli/io.js';
import { main } from '../../src/cli/main.js';
import { sharedFixture } from '../helpers/paths.js';
import { BAD, writeMixedInputs } from '../helpers/mixed-inputs.js';

let root: string;
let inDir: string;
let outDir: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'batch-'));
  inDir = join(root, 'in');
  outDir = join(root, 'out');
  await mkdir(inDir);
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

async function cli(...argv: string[]) {
  const io = memoryIO();
  const status = await main(argv, io);
  return { status, out: io.out, err: io.err };
}

async function mtimes(dir: string): Promise<Map<string, number>> {
  const result = new Map<string, number>();
  for (const name of await readdir(dir, { recursive: true })) result.set(name, (await stat(join(dir, name))).mtimeMs);
  return result;
}

const PWNED = '/tmp/ckpt2diffusers-pwned';

describe('batch over a mixed folder', () => {
  it('converts every good file, reports every other one with its code, executes nothing, exits 1', async () => {
    await writeMixedInputs(inDir);
    await rm(PWNED, { force: true });
    const report = join(root, 'report.jsonl');
    const { status, out, err } = await cli('batch', inDir, '--out-dir', outDir, '--report', report, '--jobs', '2');
    expect(status).toBe(1);
    expect(out).toMatch(/^2 converted, 0 skipped, 4 failed of 6/);
    expect(err).toMatch(/\[\d\/6\] ok +.*vae\.safetensors/);
    expect(err).toMatch(/FAILED +.*hostile-system\.pt: error\[E_UNSAFE_PICKLE\]/);

    // Good ones: complete folders with their completion record; nothing else in the output folder.
    expect((await readdir(outDir)).sort()).toEqual(['model', 'vae']);
    expect(existsSync(join(outDir, 'model', 'unet', 'diffusion_pytorch_model.safetensors'))).toBe(true);
    expect(existsSync(join(outDir, 'vae', 'diffusion_pytorch_model.safetensors'))).toBe(true);
    const rec = await readCompletionRecord(join(outDir, 'model'));
    expect(rec?.source).toMatchObject({ path: join(inDir, 'nested', 'model.ckpt'), size: (await stat(join(inDir, 'nested', 'model.ckpt'))).size });
    expect(rec?.source.headerSha256).toMatch(/^[0-9a-f]{64}$/);

    // The report: one JSON line per input, then the summary.
    const lines = (await readFile(report, 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    expect(lines).toHaveLength(7);
    expect(lines[6]).toMatchObject({ type: 'summary', ok: false, total: 6, converted: 2, failed: 4 });
    const byName = new Map(lines.slice(0, 6).map((l) => [l.input.split('/').pop(), l]));
    expect(byName.get('vae.safetensors')).toMatchObject({ status: 'converted', family: 'vae' });
    expect(byName.get('model.ckpt')).toMatchObject({ status: 'converted', family: 'sd1' });
    for (const [name, code] of Object.entries(BAD)) expect(byName.get(name), name).toMatchObject({ status: 'failed', code, message: expect.any(String) });
    expect(existsSync(PWNED)).toBe(false);
  });

  it('the library call reports the same, in input order, with progress callbacks', async () => {
    await writeMixedInputs(inDir);
    const events: string[] = [];
    const report = await batch([inDir], { outDir, jobs: 3, onProgress: (e) => events.push(e.type) });
    expect(report.ok).toBe(false);
    expect(report.results.map((r) => r.input.split('/').pop())).toEqual(['hostile-system.pt', 'complex.pt', 'model.ckpt', 'notes.bin', 'truncated.ckpt', 'vae.safetensors']);
    expect(report.results.map((r) => r.status)).toEqual(['failed', 'failed', 'converted', 'failed', 'failed', 'converted']);
    expect(events[0]).toBe('batch-start');
    expect(events.filter((t) => t === 'file-done')).toHaveLength(6);
    expect(events).toContain('file-progress');
  });

  it('an AbortSignal stops starting new inputs; the rest are reported as cancelled', async () => {
    for (const n of ['a', 'b', 'c']) await copyFile(sharedFixture('cases/vae/vae.safetensors'), join(inDir, `${n}.safetensors`));
    const stop = new AbortController();
    const report = await batch([inDir], { outDir, jobs: 1, signal: stop.signal, onProgress: (e) => e.type === 'file-done' && stop.abort() });
    expect(report.results.map((r) => [r.status, r.code])).toEqual([
      ['converted', undefined],
      ['cancelled', 'E_INTERRUPTED'],
      ['cancelled', 'E_INTERRUPTED'],
    ]);
    expect(report.ok).toBe(false);
    expect(await readdir(outDir)).toEqual(['a']);
  });

  it('exits 0 when every input converts', async () => {
    await copyFile(sharedFixture('cases/vae/vae.safetensors'), join(inDir, 'a.safetensors'));
    const { status, out } = await cli('batch', join(inDir, 'a.safetensors'), '-o', outDir, '--json');
    expect(status).toBe(0);
    const lines = out.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.at(-1)).toMatchObject({ type: 'summary', ok: true, converted: 1 });
  });
});

describe('resume', () => {
  it('skips complete outputs untouched and redoes one whose completion record is missing', async () => {
    await copyFile(sharedFixture('cases/vae/vae.safetensors'), join(inDir, 'vae.safetensors'));
    await copyFile(sharedFixture('cases/sd1/model.ckpt'), join(inDir, 'model.ckpt'));
    const first = await batch([inDir], { outDir, jobs: 2 });
    expect(first.ok).toBe(true);
    const before = await mtimes(join(outDir, 'vae'));

    const second = await batch([inDir], { outDir, resume: true });
    expect(second.results.map((r) => r.status)).toEqual(['skipped', 'skipped']);
    expect(await mtimes(join(outDir, 'vae'))).toEqual(before);

    // An output without its record is what an interrupted run leaves: redone.
    await unlink(join(outDir, 'model', COMPLETION_RECORD));
    const third = await batch([inDir], { outDir, resume: true });
    const model = third.results.find((r) => r.input.endsWith('model.ckpt'));
    expect(model).toMatchObject({ status: 'converted', redone: 'incomplete' });
    expect(third.results.find((r) => r.input.endsWith('vae.safetensors'))?.status).toBe('skipped');
    expect(existsSync(join(outDir, 'model', COMPLETION_RECORD))).toBe(true);
    expect(await mtimes(join(outDir, 'vae'))).toEqual(before);
  });

  it('redoes an output whose source or options changed', async () => {
    await copyFile(sharedFixture('cases/vae/vae.safetensors'), join(inDir, 'vae.safetensors'));
    await batch([inDir], { outDir });
    const changedOptions = await batch([inDir], { outDir, resume: true, dtype: 'fp16' });
    expect(changedOptions.results[0]).toMatchObject({ status: 'converted', redone: 'outdated' });
    await copyFile(sharedFixture('cases/vae/vae.safetensors'), join(inDir, 'vae.safetensors')); // new mtime
    const changedSource = await batch([inDir], { outDir, resume: true, dtype: 'fp16' });
    expect(changedSource.results[0]).toMatchObject({ status: 'converted', redone: 'outdated' });
    const same = await batch([inDir], { outDir, resume: true, dtype: 'fp16' });
    expect(same.results[0].status).toBe('skipped');
  });

  it('without --resume an existing output is a reported E_OUTPUT_EXISTS failure', async () => {
    await copyFile(sharedFixture('cases/vae/vae.safetensors'), join(inDir, 'vae.safetensors'));
    await batch([inDir], { outDir });
    const again = await cli('batch', inDir, '--out-dir', outDir);
    expect(again.status).toBe(1);
    expect(again.err).toMatch(/error\[E_OUTPUT_EXISTS\]/);
  });
});

describe('shards', () => {
  it('1/2 and 2/2 partition the inputs exactly, the same way every time', async () => {
    const names = Array.from({ length: 12 }, (_, i) => `m${i}.safetensors`);
    for (const n of names) await writeFile(join(inDir, n), 'x');
    const all = await expandInputs([inDir], { outDir });
    const a = all.filter((it) => shardOf(it.input, 2) === 1).map((it) => it.input);
    const b = all.filter((it) => shardOf(it.input, 2) === 2).map((it) => it.input);
    expect([...a, ...b].sort()).toEqual(all.map((it) => it.input).sort());
    expect(a.filter((x) => b.includes(x))).toEqual([]);
    expect(a.length).toBeGreaterThan(0);
    expect(b.length).toBeGreaterThan(0);

    // Through batch(): the two shards' results together cover every input once.
    const r1 = await batch([inDir], { outDir, shard: '1/2' });
    const r2 = await batch([inDir], { outDir, shard: { index: 2, count: 2 } });
    expect(r1.results.map((r) => r.input)).toEqual(a);
    expect(r2.results.map((r) => r.input)).toEqual(b);
    expect(r1.shard).toBe('1/2');
  });

  it('rejects malformed shards', () => {
    expect(parseShard('3/4')).toEqual({ index: 3, count: 4 });
    for (const bad of ['0/2', '3/2', '1', 'a/b', '1/0']) expect(() => parseShard(bad), bad).toThrow(expect.objectContaining({ code: 'E_USAGE' }));
  });
});

describe('inputs and names', () => {
  it('names outputs by stem and disambiguates equal stems with a hash of the full path', async () => {
    await mkdir(join(inDir, 'a'));
    await mkdir(join(inDir, 'b'));
    await writeFile(join(inDir, 'a', 'model.ckpt'), 'x');
    await writeFile(join(inDir, 'b', 'model.safetensors'), 'x');
    await writeFile(join(inDir, 'other.pth'), 'x');
    const items = await expandInputs([inDir], { outDir });
    const names = items.map((it) => it.output.slice(outDir.length + 1));
    expect(names[0]).toMatch(/^model-[0-9a-f]{8}$/);
    expect(names[1]).toMatch(/^model-[0-9a-f]{8}$/);
    expect(names[0]).not.toBe(names[1]);
    expect(names[2]).toBe('other');
    // Stable across runs.
    expect((await expandInputs([inDir], { outDir })).map((it) => it.output)).toEqual(items.map((it) => it.output));
  });

  it('expands globs, skips the output folder and reports arguments that match nothing', async () => {
    await mkdir(join(inDir, 'deep', 'er'), { recursive: true });
    await writeFile(join(inDir, 'x.ckpt'), 'x');
    await writeFile(join(inDir, 'deep', 'er', 'y.ckpt'), 'x');
    await writeFile(join(inDir, 'deep', 'z.safetensors'), 'x');
    const inside = join(inDir, 'out');
    await mkdir(join(inside, 'old'), { recursive: true });
    await writeFile(join(inside, 'old', 'w.safetensors'), 'x');
    const top = await expandInputs([join(inDir, '*.ckpt')], { outDir: inside });
    expect(top.map((it) => it.input)).toEqual([join(inDir, 'x.ckpt')]);
    const deep = await expandInputs([join(inDir, '**', '*.ckpt')], { outDir: inside });
    expect(deep.map((it) => it.input)).toEqual([join(inDir, 'deep', 'er', 'y.ckpt'), join(inDir, 'x.ckpt')]);
    const folder = await expandInputs([inDir], { outDir: inside });
    expect(folder.map((it) => it.input)).not.toContain(join(inside, 'old', 'w.safetensors'));
    const none = await expandInputs([join(inDir, '*.nothing'), join(inDir, 'missing.ckpt')], { outDir });
    expect(none.map((it) => it.error?.code)).toEqual(['E_IO', 'E_IO']);
  });

  it('matches globs like a shell', () => {
    expect(globToRegExp('*.ckpt').test('a.ckpt')).toBe(true);
    expect(globToRegExp('*.ckpt').test('d/a.ckpt')).toBe(false);
    expect(globToRegExp('**/*.ckpt').test('a.ckpt')).toBe(true);
    expect(globToRegExp('**/*.ckpt').test('d/e/a.ckpt')).toBe(true);
    expect(globToRegExp('m?[0-9].pt').test('mx7.pt')).toBe(true);
    expect(globToRegExp('m[!0-9].pt').test('m7.pt')).toBe(false);
    expect(globToRegExp('a+b(1).pt').test('a+b(1).pt')).toBe(true);
  });
});

describe('manifest', () => {
  it('applies per-file output names and options', async () => {
    await copyFile(sharedFixture('cases/vae/vae.safetensors'), join(inDir, 'vae.safetensors'));
    await copyFile(sharedFixture('cases/sd1/model.ckpt'), join(inDir, 'model.ckpt'));
    await copyFile(sharedFixture('cases/sd1/original_config.yaml'), join(inDir, 'v1.yaml'));
    const manifest = join(inDir, 'list.jsonl');
    await writeFile(
      manifest,
      [
        '# converted by the nightly job',
        JSON.stringify({ input: 'vae.safetensors', output: 'vae-half', dtype: 'fp16' }),
        JSON.stringify({ input: 'model.ckpt', 'original-config': 'v1.yaml', '--scheduler': 'ddim', extract_ema: false }),
        '',
      ].join('\n'),
    );
    const report = await batch([manifest], { outDir });
    expect(report.results.map((r) => [r.status, r.output])).toEqual([
      ['converted', join(outDir, 'vae-half')],
      ['converted', join(outDir, 'model')],
    ]);
    const vaeHeader = await readFile(join(outDir, 'vae-half', 'diffusion_pytorch_model.safetensors'));
    const headerLen = Number(vaeHeader.readBigUInt64LE(0));
    expect(vaeHeader.subarray(8, 8 + headerLen).toString()).toContain('"F16"');
    const scheduler = JSON.parse(await readFile(join(outDir, 'model', 'scheduler', 'scheduler_config.json'), 'utf8'));
    expect(scheduler._class_name).toBe('DDIMScheduler');
    const rec = await readCompletionRecord(join(outDir, 'model'));
    expect(rec?.options).toMatchObject({ originalConfig: join(inDir, 'v1.yaml'), scheduler: 'ddim' });
  });

  it('refuses a malformed manifest before converting anything', async () => {
    const manifest = join(inDir, 'bad.jsonl');
    await writeFile(manifest, `${JSON.stringify({ input: 'a.ckpt' })}\n${JSON.stringify({ input: 'b.ckpt', dtpye: 'fp16' })}\n`);
    await expect(batch([manifest], { outDir })).rejects.toMatchObject({ code: 'E_USAGE', message: expect.stringContaining('line 2: unknown field "dtpye"') });
    const { status, err } = await cli('batch', manifest, '--out-dir', outDir);
    expect(status).toBe(2);
    expect(err).toMatch(/^error\[E_USAGE\]/);
    expect(existsSync(outDir)).toBe(false);
  });

  it('reports two inputs that want the same output folder', async () => {
    await copyFile(sharedFixture('cases/vae/vae.safetensors'), join(inDir, 'vae.safetensors'));
    const manifest = join(inDir, 'dup.jsonl');
    await writeFile(manifest, `${JSON.stringify({ input: 'vae.safetensors', output: 'v' })}\n${JSON.stringify({ input: 'vae.safetensors', output: 'v', dtype: 'fp16' })}\n`);
    const report = await batch([manifest], { outDir });
    expect(report.results.map((r) => r.status)).toEqual(['converted', 'failed']);
    expect(report.results[1].code).toBe('E_USAGE');
  });
});
