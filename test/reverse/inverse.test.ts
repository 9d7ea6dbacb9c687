/**
 * The reverse plan is the inverse of the compiled forward rows: every forward target maps back to
 * a source that maps forward to it again (the canonical source itself, or for a legacy alias row
 * the canonical spelling), inverse ops undo the forward ops, broken folders fail with codes, and
 * writing streams in chunks no larger than asked.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convert } from '../../src/convert.js';
import { ErrorCode } from '../../src/errors.js';
import { openCheckpoint } from '../../src/formats/open.js';
import type { TensorInfo } from '../../src/formats/tensor-source.js';
import { compileForStructures, compileForTensors, type CompiledFamily } from '../../src/mapping/compile.js';
import type { FamilyId } from '../../src/mapping/plan-types.js';
import { buildInverseIndex, forwardProduces, lookupInverse, planReverse } from '../../src/reverse/inverse.js';
import { toSingleFile } from '../../src/reverse/to-single-file.js';
import { repoRoot, sharedFixture } from '../helpers/paths.js';

const INPUTS: [string, FamilyId][] = [
  ['cases/sd1/model.ckpt', 'sd1'],
  ['cases/sd2/model-fp16.safetensors', 'sd2'],
  ['cases/sdxl-base/model-fp16.safetensors', 'sdxl-base'],
  ['cases/vae/vae.safetensors', 'vae'],
];

/** Legacy spellings that map onto a target a canonical row also produces (CLIP without `text_model.`). */
const ALIAS_SUFFIXES = ['transformer.embeddings.', 'transformer.encoder.', 'transformer.final_layer_norm.', 'transformer.embeddings.position_ids'];

async function tensorsOf(rel: string): Promise<TensorInfo[]> {
  const s = await openCheckpoint(sharedFixture(rel));
  try {
    return [...s.tensors];
  } finally {
    await s.close();
  }
}

/** Checks every target of every forward map row of `compiled`; returns the alias rows met. */
function checkEveryRowInverts(compiled: CompiledFamily): string[] {
  const index = buildInverseIndex(compiled);
  const aliases: string[] = [];
  let checked = 0;
  for (const rule of compiled.rules.values()) {
    if (rule.kind !== 'map') continue;
    const prefix = rule.source.endsWith('.');
    for (const t of rule.targets) {
      const key = prefix ? `${t.target}weight` : t.target;
      const source = prefix ? `${rule.source}weight` : rule.source;
      const back = lookupInverse(index, rule.component, key, compiled.rules);
      expect(back, `${rule.component}/${key}`).toBeDefined();
      expect(forwardProduces(compiled.rules, back!.source, rule.component, key), `${back!.source} -> ${key}`).toBe(true);
      if (back!.source !== source) aliases.push(rule.source);
      else expect(back!.op).toEqual(t.op);
      checked++;
    }
  }
  expect(checked).toBeGreaterThan(0);
  return [...new Set(aliases)];
}

describe('every forward row inverts', () => {
  it.each(INPUTS)('%s (%s)', async (rel, family) => {
    const compiled = compileForTensors(await tensorsOf(rel), family);
    const aliases = checkEveryRowInverts(compiled);
    expect(aliases.every((a) => ALIAS_SUFFIXES.some((s) => a.endsWith(s))), aliases.join(', ')).toBe(true);
  });

  it.each(['sd1-real', 'sd2-real'])('the real-size structures of mappings/generated/%s.json', async (name) => {
    const dump = JSON.parse(await readFile(join(repoRoot, 'mappings', 'generated', `${name}.json`), 'utf8')) as { family: FamilyId; structures: never };
    checkEveryRowInverts(compileForStructures(dump.family, dump.structures));
  });
});

describe('inverse ops', () => {
  const info = (name: string, shape: number[]): TensorInfo => ({ name, dtype: 'F32', shape, byteLength: shape.reduce((a, b) => a * b, 4) });

  it('split q/k/v -> one in_proj in order; transpose back; squeeze -> [C, C, 1, 1]', async () => {
    const compiled = compileForTensors(await tensorsOf('cases/sdxl-base/model-fp16.safetensors'), 'sdxl-base');
    const te2 = [
      info('text_model.encoder.layers.0.self_attn.v_proj.weight', [32, 32]),
      info('text_model.encoder.layers.0.self_attn.q_proj.weight', [32, 32]),
      info('text_model.encoder.layers.0.self_attn.k_proj.weight', [32, 32]),
      info('text_projection.weight', [16, 32]),
    ];
    const vae = [info('encoder.mid_block.attentions.0.to_q.weight', [8, 8])];
    const plan = planReverse(compiled, [
      { component: 'text_encoder_2', tensors: te2 },
      { component: 'vae', tensors: vae },
    ]);
    const byName = new Map(plan.tensors.map((t) => [t.name, t]));
    const inProj = byName.get('conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight');
    expect(inProj?.shape).toEqual([96, 32]);
    expect(inProj?.parts.map((p) => p.key)).toEqual(['q_proj', 'k_proj', 'v_proj'].map((n) => `text_model.encoder.layers.0.self_attn.${n}.weight`));
    const proj = byName.get('conditioner.embedders.1.model.text_projection');
    expect(proj?.shape).toEqual([32, 16]);
    expect(proj?.parts[0].op).toBe('transpose');
    const q = byName.get('first_stage_model.encoder.mid.attn_1.q.weight');
    expect(q?.shape).toEqual([8, 8, 1, 1]);
    expect(q?.parts[0].op).toBe('unsqueeze');
  });

  it('a split with a missing part, an unknown key and a doubled source fail with codes', async () => {
    const compiled = compileForTensors(await tensorsOf('cases/sdxl-base/model-fp16.safetensors'), 'sdxl-base');
    const q = info('text_model.encoder.layers.0.self_attn.q_proj.weight', [4, 4]);
    expect(() => planReverse(compiled, [{ component: 'text_encoder_2', tensors: [q] }])).toThrow(expect.objectContaining({ code: ErrorCode.E_MISSING_TENSOR }));
    expect(() => planReverse(compiled, [{ component: 'unet', tensors: [info('bogus.weight', [1])] }])).toThrow(expect.objectContaining({ code: ErrorCode.E_UNMATCHED_KEYS }));
  });
});

describe('streaming', () => {
  let work: string;
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'ckpt2diffusers-reverse-stream-'));
  });
  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it('a chunk-size-limited write hands the writer no chunk above the limit and writes the same bytes', async () => {
    const folder = join(work, 'sd2');
    await convert(sharedFixture('cases/sd2/model-fp16.safetensors'), folder);
    const small = await toSingleFile(folder, join(work, 'small.safetensors'), { chunkBytes: 256, placeholders: false });
    const large = await toSingleFile(folder, join(work, 'large.safetensors'), { placeholders: false });
    // Transposes (text_projection) hold one 2-D tensor, but still hand it over in limited chunks.
    expect(small.largestChunkBytes).toBeLessThanOrEqual(256);
    expect(large.largestChunkBytes).toBeGreaterThan(256);
    const a = await readFile(join(work, 'small.safetensors'));
    const b = await readFile(join(work, 'large.safetensors'));
    expect(a.equals(b)).toBe(true);
  });
});
