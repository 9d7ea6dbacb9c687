import { copyFile, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { sharedFixture, torchFixture } from '../helpers/paths.js';
import { cleanTemps, goldenCopy, hfCache, runInspect, runInspectHuman, shardComponent, tempDir, toPickle } from './helpers.js';

afterAll(cleanTemps);

async function editJson(file: string, edit: (j: Record<string, unknown>) => void): Promise<void> {
  const json = JSON.parse(await readFile(file, 'utf8'));
  edit(json);
  await writeFile(file, JSON.stringify(json, null, 2));
}

const GOLDEN_PIPELINES = [
  ['sd1', 'StableDiffusionPipeline'],
  ['sd1-pipe', 'StableDiffusionPipeline'],
  ['sd2', 'StableDiffusionPipeline'],
  ['sdxl-base', 'StableDiffusionXLPipeline'],
] as const;

describe('inspect on the golden Diffusers folders', () => {
  it.each(GOLDEN_PIPELINES)('%s is loadable as %s (exit 0)', async (name, pipeline) => {
    const dir = await goldenCopy(name);
    const { status, report } = await runInspect(dir);
    expect(report.kind).toBe('pipeline');
    expect(report.problems.filter((p: { severity: string }) => p.severity === 'error')).toEqual([]);
    expect(report.verdict).toMatchObject({ status: 'loadable', exitCode: 0 });
    expect(report.verdict.summary).toBe(`loadable as ${pipeline}`);
    expect(status).toBe(0);
    const unet = report.components.find((c: { name: string }) => c.name === 'unet');
    expect(unet).toMatchObject({ className: 'UNet2DConditionModel', present: true, status: expect.stringMatching(/ok|warning/), loads: { format: 'safetensors', variant: null } });
    expect(unet.tensors).toBeGreaterThan(100);
  });

  it('recognises the golden VAE folder as a single AutoencoderKL model', async () => {
    const { status, report } = await runInspect(sharedFixture('golden/vae/diffusers'));
    expect(status).toBe(0);
    expect(report.kind).toBe('model');
    expect(report.className).toBe('AutoencoderKL');
    expect(report.verdict.summary).toMatch(/^loadable as AutoencoderKL/);
    expect(report.components[0]).toMatchObject({ name: '.', tensors: 120, dtypes: { F32: expect.any(Number) } });
  });

  it('reports the golden folders as they are stored (tokenizer BPE files left out) as missing the tokenizer', async () => {
    const { status, report } = await runInspect(sharedFixture('golden/sd1/diffusers'));
    expect(status).toBe(1);
    expect(report.problems.map((p: { code: string }) => p.code)).toEqual(['tokenizer-missing']);
  });

  it('warns that the tiny SDXL golden UNet does not fit its text encoders, without failing the load', async () => {
    const { report } = await runInspect(await goldenCopy('sdxl-base'));
    expect(report.problems).toContainEqual(expect.objectContaining({ code: 'pipeline-mismatch', severity: 'warning', component: 'unet' }));
  });

  it('names the fp16 variant when every component has it', async () => {
    const dir = await goldenCopy('sdxl-base');
    for (const [c, base] of [['unet', 'diffusion_pytorch_model'], ['vae', 'diffusion_pytorch_model'], ['text_encoder', 'model'], ['text_encoder_2', 'model']]) {
      await copyFile(join(dir, c, `${base}.safetensors`), join(dir, c, `${base}.fp16.safetensors`));
    }
    const { status, report } = await runInspect(dir);
    expect(status).toBe(0);
    expect(report.verdict.summary).toBe('loadable as StableDiffusionXLPipeline (fp16 variant available)');
    expect(report.variants).toEqual([{ name: 'fp16', components: ['text_encoder', 'text_encoder_2', 'unet', 'vae'], complete: true }]);
  });

  it('prints a table per component and the verdict', async () => {
    const { status, out } = await runInspectHuman(await goldenCopy('sd1'));
    expect(status).toBe(0);
    expect(out).toMatch(/unet\s+UNet2DConditionModel\s+safetensors\s+\d+\s+[\d,]+\s+F32\s+ok/);
    expect(out).toMatch(/verdict: loadable as StableDiffusionPipeline/);
  });
});

interface Broken {
  name: string;
  golden: string;
  mutate: (dir: string) => Promise<void>;
  code: string;
  component: string | null;
  exit: number;
}

const BROKEN: Broken[] = [
  { name: 'missing model_index.json', golden: 'sd1', mutate: (d) => rm(join(d, 'model_index.json')), code: 'model-index-missing', component: null, exit: 1 },
  { name: 'model_index.json not JSON', golden: 'sd1', mutate: (d) => writeFile(join(d, 'model_index.json'), '{"_class_name": '), code: 'model-index-invalid', component: null, exit: 1 },
  { name: 'unknown pipeline class', golden: 'sd1', mutate: (d) => editJson(join(d, 'model_index.json'), (j) => (j._class_name = 'StableDiffusionTurboPlusPipeline')), code: 'unknown-pipeline', component: null, exit: 1 },
  { name: 'unknown component class', golden: 'sd1', mutate: (d) => editJson(join(d, 'model_index.json'), (j) => (j.unet = ['diffusers', 'UNet9DModel'])), code: 'unknown-component-class', component: 'unet', exit: 1 },
  { name: 'component class not taken by the pipeline', golden: 'sd1', mutate: (d) => editJson(join(d, 'model_index.json'), (j) => (j.text_encoder = ['transformers', 'CLIPTextModelWithProjection'])), code: 'component-class-not-allowed', component: 'text_encoder', exit: 1 },
  { name: 'required component set to null', golden: 'sd1', mutate: (d) => editJson(join(d, 'model_index.json'), (j) => (j.vae = [null, null])), code: 'component-null', component: 'vae', exit: 1 },
  { name: 'required component not listed', golden: 'sd1', mutate: (d) => editJson(join(d, 'model_index.json'), (j) => delete j.scheduler), code: 'component-not-listed', component: 'scheduler', exit: 1 },
  { name: 'missing component folder', golden: 'sd1', mutate: (d) => rm(join(d, 'vae'), { recursive: true }), code: 'component-missing', component: 'vae', exit: 1 },
  { name: 'missing config.json', golden: 'sd2', mutate: (d) => rm(join(d, 'unet', 'config.json')), code: 'config-missing', component: 'unet', exit: 1 },
  { name: 'config.json not JSON', golden: 'sd2', mutate: (d) => writeFile(join(d, 'text_encoder', 'config.json'), 'nope'), code: 'config-invalid', component: 'text_encoder', exit: 1 },
  { name: 'missing scheduler_config.json', golden: 'sd2', mutate: (d) => rm(join(d, 'scheduler', 'scheduler_config.json')), code: 'config-missing', component: 'scheduler', exit: 1 },
  { name: 'missing tokenizer merges.txt', golden: 'sd1', mutate: (d) => rm(join(d, 'tokenizer', 'merges.txt')), code: 'tokenizer-missing', component: 'tokenizer', exit: 1 },
  { name: 'vocab.json not JSON', golden: 'sd1', mutate: (d) => writeFile(join(d, 'tokenizer', 'vocab.json'), '{'), code: 'tokenizer-invalid', component: 'tokenizer', exit: 1 },
  { name: 'no weights', golden: 'sd1', mutate: (d) => rm(join(d, 'vae', 'diffusion_pytorch_model.safetensors')), code: 'weights-missing', component: 'vae', exit: 1 },
  { name: 'corrupt weights header', golden: 'sd1', mutate: (d) => writeFile(join(d, 'vae', 'diffusion_pytorch_model.safetensors'), Buffer.from('\x10\x00\x00\x00\x00\x00\x00\x00{"a":           ')), code: 'weights-unreadable', component: 'vae', exit: 1 },
  {
    name: 'missing shard',
    golden: 'sd1',
    mutate: async (d) => {
      const { shards } = await shardComponent(d, 'unet');
      await rm(join(d, 'unet', shards[1]));
    },
    code: 'shard-missing',
    component: 'unet',
    exit: 1,
  },
  {
    name: 'index not matching the shard headers',
    golden: 'sd1',
    mutate: async (d) => {
      const { shards, index } = await shardComponent(d, 'unet');
      await editJson(join(d, 'unet', index), (j) => {
        const map = j.weight_map as Record<string, string>;
        const moved = Object.keys(map).find((k) => map[k] === shards[0]) as string;
        map[moved] = shards[1];
      });
    },
    code: 'shard-index-mismatch',
    component: 'unet',
    exit: 1,
  },
  {
    name: 'index naming a tensor no shard holds',
    golden: 'sd1',
    mutate: async (d) => {
      const { shards, index } = await shardComponent(d, 'text_encoder', 'model');
      await editJson(join(d, 'text_encoder', index), (j) => ((j.weight_map as Record<string, string>)['text_model.extra.weight'] = shards[0]));
    },
    code: 'shard-index-mismatch',
    component: 'text_encoder',
    exit: 1,
  },
  {
    name: 'shard index unreadable',
    golden: 'sd1',
    mutate: async (d) => {
      const { index } = await shardComponent(d, 'unet');
      await writeFile(join(d, 'unet', index), '{"metadata": {}}');
    },
    code: 'shard-index-invalid',
    component: 'unet',
    exit: 1,
  },
  {
    name: 'total_size not matching the shards',
    golden: 'sd1',
    mutate: async (d) => {
      const { index } = await shardComponent(d, 'unet');
      await editJson(join(d, 'unet', index), (j) => ((j.metadata as Record<string, number>).total_size = 12345));
    },
    code: 'shard-total-size',
    component: 'unet',
    exit: 0,
  },
  { name: 'UNet config in_channels not matching conv_in', golden: 'sd1', mutate: (d) => editJson(join(d, 'unet', 'config.json'), (j) => (j.in_channels = 9)), code: 'config-weights-mismatch', component: 'unet', exit: 1 },
  { name: 'UNet config cross_attention_dim not matching attn2.to_k', golden: 'sd2', mutate: (d) => editJson(join(d, 'unet', 'config.json'), (j) => (j.cross_attention_dim = 1024)), code: 'config-weights-mismatch', component: 'unet', exit: 1 },
  { name: 'text encoder layer count not matching the weights', golden: 'sd1', mutate: (d) => editJson(join(d, 'text_encoder', 'config.json'), (j) => (j.num_hidden_layers = 12)), code: 'config-weights-mismatch', component: 'text_encoder', exit: 1 },
  { name: 'text encoder width not matching the weights', golden: 'sdxl-base', mutate: (d) => editJson(join(d, 'text_encoder_2', 'config.json'), (j) => (j.hidden_size = 1280)), code: 'config-weights-mismatch', component: 'text_encoder_2', exit: 1 },
  { name: 'VAE latent channels not matching the weights', golden: 'sd1', mutate: (d) => editJson(join(d, 'vae', 'config.json'), (j) => (j.latent_channels = 16)), code: 'config-weights-mismatch', component: 'vae', exit: 1 },
  { name: '.bin weights only', golden: 'sd1', mutate: (d) => toPickle(d, 'unet'), code: 'pickle-weights', component: 'unet', exit: 0 },
  { name: 'transformers pytorch_model.bin only', golden: 'sd1', mutate: (d) => toPickle(d, 'text_encoder', 'model', 'pytorch_model'), code: 'pickle-weights', component: 'text_encoder', exit: 0 },
  {
    name: 'fp16 variant only',
    golden: 'sd1',
    mutate: (d) => rename(join(d, 'vae', 'diffusion_pytorch_model.safetensors'), join(d, 'vae', 'diffusion_pytorch_model.fp16.safetensors')),
    code: 'variant-only',
    component: 'vae',
    exit: 0,
  },
  { name: 'inpainting class on a text-to-image UNet', golden: 'sd1', mutate: (d) => editJson(join(d, 'model_index.json'), (j) => (j._class_name = 'StableDiffusionInstructPix2PixPipeline')), code: 'pipeline-mismatch', component: 'unet', exit: 0 },
  { name: 'config class differing from model_index', golden: 'sd1', mutate: (d) => editJson(join(d, 'scheduler', 'scheduler_config.json'), (j) => (j._class_name = 'DDIMScheduler')), code: 'class-mismatch', component: 'scheduler', exit: 0 },
  {
    name: 'a .ckpt only',
    golden: 'sd1',
    mutate: async (d) => {
      await rm(d, { recursive: true });
      await mkdir(d);
      await copyFile(sharedFixture('cases/sd1/model.ckpt'), join(d, 'model.ckpt'));
    },
    code: 'not-diffusers-folder',
    component: null,
    exit: 0,
  },
  {
    name: 'an empty folder',
    golden: 'sd1',
    mutate: async (d) => {
      await rm(d, { recursive: true });
      await mkdir(d);
    },
    code: 'nothing-found',
    component: null,
    exit: 1,
  },
];

describe('inspect on broken copies of the golden folders', () => {
  it.each(BROKEN.map((b) => [b.name, b] as const))('%s', async (_name, b) => {
    const dir = await goldenCopy(b.golden);
    await b.mutate(dir);
    const { status, report } = await runInspect(dir);
    expect(report.problems).toContainEqual(expect.objectContaining({ code: b.code, component: b.component }));
    const found = report.problems.find((p: { code: string }) => p.code === b.code);
    expect(found.message.length).toBeGreaterThan(10);
    if (b.exit === 1) expect(found.severity).toBe('error');
    expect(report.verdict.exitCode).toBe(b.exit);
    expect(status).toBe(b.exit);
  });

  it('names the missing shard and the index that maps to it', async () => {
    const dir = await goldenCopy('sd1');
    const { shards } = await shardComponent(dir, 'unet');
    await rm(join(dir, 'unet', shards[1]));
    const { report } = await runInspect(dir);
    const p = report.problems.find((x: { code: string }) => x.code === 'shard-missing');
    expect(p.message).toContain(`unet/${shards[1]}`);
    expect(p.message).toContain('diffusion_pytorch_model.safetensors.index.json');
  });

  it('reads a sharded component whole when nothing is wrong', async () => {
    const dir = await goldenCopy('sd1');
    const { shards } = await shardComponent(dir, 'unet');
    const { status, report } = await runInspect(dir);
    expect(status).toBe(0);
    const unet = report.components.find((c: { name: string }) => c.name === 'unet');
    expect(unet.loads).toEqual({ format: 'safetensors', variant: null, files: shards });
    expect(unet.tensors).toBeGreaterThan(100);
    expect(unet.weights[0].complete).toBe(true);
  });

  it('gives the config values the weights call for', async () => {
    const dir = await goldenCopy('sd1');
    await editJson(join(dir, 'unet', 'config.json'), (j) => (j.in_channels = 9));
    const { report } = await runInspect(dir);
    const p = report.problems.find((x: { code: string }) => x.code === 'config-weights-mismatch');
    expect(p.message).toMatch(/in_channels = 9 but the weights say 4 \(conv_in\.weight \[\d+, 4, 3, 3\] dim 1 = 4\)/);
    expect(p.fix).toContain('"in_channels" to 4');
  });

  it('suggests a model_index.json for component folders without one', async () => {
    const dir = await goldenCopy('sdxl-base');
    await rm(join(dir, 'model_index.json'));
    const { report } = await runInspect(dir);
    const p = report.problems.find((x: { code: string }) => x.code === 'model-index-missing');
    const suggested = JSON.parse(p.fix.replace(/^create model_index.json with /, ''));
    expect(suggested._class_name).toBe('StableDiffusionXLPipeline');
    expect(suggested.text_encoder_2).toEqual(['transformers', 'CLIPTextModelWithProjection']);
  });

  it('gives the convert command for a folder holding only a checkpoint', async () => {
    const dir = await tempDir();
    await copyFile(sharedFixture('cases/sd1/model.ckpt'), join(dir, 'model.ckpt'));
    const { report } = await runInspect(dir);
    expect(report.kind).toBe('collection');
    expect(report.problems[0].fix).toBe(`ckpt2diffusers ${join(dir, 'model.ckpt')} ${join(dir, 'model-diffusers')}`);
  });
});

describe('inspect on a Hugging Face cache folder', () => {
  it('follows refs/main from the models-- root and the links into blobs/', async () => {
    const { root, snapshot } = await hfCache(await goldenCopy('sd2'), 'stabilityai/tiny-sd2');
    for (const path of [root, snapshot]) {
      const { status, report } = await runInspect(path);
      expect(status).toBe(0);
      expect(report.hfCache).toMatchObject({ repo: 'stabilityai/tiny-sd2', ref: 'main', snapshot: 'a'.repeat(40) });
      expect(report.resolvedPath).toBe(snapshot);
      expect(report.verdict.summary).toBe('loadable as StableDiffusionPipeline');
    }
  });

  it('reports a link whose blob is gone', async () => {
    const { root, blobs } = await hfCache(await goldenCopy('sd2'), 'org/name');
    await rm(blobs.get(join('unet', 'diffusion_pytorch_model.safetensors')) as string);
    const { status, report } = await runInspect(root);
    expect(status).toBe(1);
    expect(report.problems).toContainEqual(expect.objectContaining({ code: 'broken-link', component: 'unet' }));
  });
});

describe('inspect on a folder of mixed things', () => {
  it('gives one entry per checkpoint and Diffusers folder, each with its own verdict', async () => {
    const dir = await tempDir();
    await goldenCopy('sd1', join(dir, 'sd15-diffusers'));
    await copyFile(sharedFixture('cases/sd1/model-fp16-ema.ckpt'), join(dir, 'model-fp16-ema.ckpt'));
    await copyFile(torchFixture('hostile-system.pt'), join(dir, 'hostile-system.pt'));
    await writeFile(join(dir, 'corrupt.safetensors'), Buffer.from('not a checkpoint at all'));
    await writeFile(join(dir, 'notes.txt'), 'ignored');
    const { status, report } = await runInspect(dir);
    expect(report.kind).toBe('collection');
    const byName = Object.fromEntries(report.entries.map((e: { path: string }) => [e.path.slice(dir.length + 1), e]));
    expect(Object.keys(byName).sort()).toEqual(['corrupt.safetensors', 'hostile-system.pt', 'model-fp16-ema.ckpt', 'sd15-diffusers']);
    expect(byName['sd15-diffusers'].verdict).toMatchObject({ status: 'loadable', exitCode: 0 });
    expect(byName['model-fp16-ema.ckpt'].verdict).toMatchObject({ status: 'convertible', exitCode: 0 });
    expect(byName['model-fp16-ema.ckpt'].convert.argv).toContain('--extract-ema');
    expect(byName['hostile-system.pt'].verdict).toMatchObject({ status: 'not-convertible', exitCode: 1 });
    expect(byName['hostile-system.pt'].problems.map((p: { code: string }) => p.code)).toContain('unsafe-pickle');
    expect(byName['corrupt.safetensors']).toMatchObject({ kind: 'unreadable', verdict: { status: 'unreadable', exitCode: 2 } });
    expect(report.verdict).toMatchObject({ status: 'mixed', exitCode: 1 });
    expect(status).toBe(1);
  });
});

describe('inspect exit status 2', () => {
  it('exits 2 for a path that does not exist', async () => {
    const { status, err } = await runInspect(join(await tempDir(), 'absent'));
    expect(status).toBe(2);
    expect(err).toMatch(/^error\[E_IO\]/);
  });
});
