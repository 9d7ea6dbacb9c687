/**
 * Text encoders exported from the golden Diffusers folders and run by onnxruntime-node (CPU)
 * against transformers' float32 outputs (forward goldens).
 */
import { readFileSync } from 'node:fs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { writeOnnxModel } from '../../src/onnx/encode.js';
import { buildTextEncoderGraph, type ClipTextConfig } from '../../src/onnx/text-encoder.js';
import { openComponentWeights } from '../../src/onnx/weights.js';
import { sharedFixture } from '../helpers/paths.js';
import { compare, readGolden, runModel } from './helpers.js';

/** fp16 graphs on the CPU EP, measured: max abs error ≤ 0.0102 (sd2, 23 layers); asserted with margin. */
const FP16_ATOL = 0.03;
const FP16_RTOL = 0.02;

const CASES: [string, string][] = [
  ['sd1', 'text_encoder'],
  ['sd2', 'text_encoder'],
  ['sdxl-base', 'text_encoder'],
  ['sdxl-base', 'text_encoder_2'],
];

const tmp = mkdtempSync(join(tmpdir(), 'onnx-te-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe.each(CASES)('%s %s', (c, te) => {
  for (const floatType of ['float32', 'float16'] as const) {
    it(`matches the golden outputs in ${floatType}`, async () => {
      const dir = sharedFixture(`golden/${c}/diffusers/${te}`);
      const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as ClipTextConfig;
      const w = await openComponentWeights(dir);
      let modelPath: string;
      try {
        const g = buildTextEncoderGraph(config, w, { hiddenStates: true, floatType });
        modelPath = (await writeOnnxModel(g, { dir: join(tmp, `${c}-${te}-${floatType}`) })).modelPath;
      } finally {
        await w.close();
      }
      const gold = readGolden(`golden/${c}/forward/${te}.safetensors`);
      const ids = gold['input.input_ids'];
      const out = await runModel(modelPath, { input_ids: { type: 'int64', data: ids.data as BigInt64Array, dims: ids.shape } });
      const n = config.num_hidden_layers;
      const pairs: [string, string][] = [
        ['last_hidden_state', 'output.last_hidden_state'],
        [`hidden_states.${n - 1}`, 'output.penultimate_hidden_state'],
        te === 'text_encoder_2' ? ['text_embeds', 'output.text_embeds'] : ['pooler_output', 'output.pooler_output'],
      ];
      for (const [name, golden] of pairs) {
        expect(out[name].dims).toEqual(gold[golden].shape);
        const s = floatType === 'float32'
          ? compare(out[name].data as Float32Array, gold[golden].data as Float32Array, 1e-4, 1e-3)
          : compare(out[name].data as Float32Array, gold[golden].data as Float32Array, FP16_ATOL, FP16_RTOL);
        expect(s.violations, `${name}: ${JSON.stringify(s)}`).toBe(0);
      }
    });
  }
});
