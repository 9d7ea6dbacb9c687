import { describe, expect, it } from 'vitest';
import { isCkptError } from '../../src/errors.js';
import { TorchGenerator, torchRand, torchRandn } from '../../src/generate/torch-random.js';
import { sharedFixture } from '../helpers/paths.js';
import { goldenIndex, readAllTensors, readGoldenRun } from './golden-run.js';

describe('torch.randn / torch.rand vs PyTorch (noise/torch-randn.safetensors)', async () => {
  const tensors = await readAllTensors(sharedFixture('noise/torch-randn.safetensors'));

  it('has both kinds of entries, small and vectorised sizes', () => {
    const names = [...tensors.keys()];
    expect(names.some((n) => n.startsWith('rand/'))).toBe(true);
    expect(names.some((n) => n.startsWith('randn/'))).toBe(true);
    expect(names.length).toBeGreaterThanOrEqual(9);
  });

  for (const [name, t] of tensors) {
    it(`${name} is bit-identical`, () => {
      const m = /^(randn|rand)\/seed=(\d+)\/shape=([\dx]+)$/.exec(name);
      expect(m).not.toBeNull();
      const [, kind, seed, dims] = m as RegExpExecArray;
      const shape = dims.split('x').map(Number);
      expect(shape).toEqual(t.shape);
      const got = kind === 'randn' ? torchRandn(BigInt(seed), shape) : torchRand(BigInt(seed), shape);
      expect(got).toBeInstanceOf(Float32Array);
      const want = t.data as Float32Array;
      let mismatches = 0;
      for (let i = 0; i < want.length; i++) if (got[i] !== want[i]) mismatches++;
      expect(mismatches).toBe(0);
    });
  }
});

describe('TorchGenerator', () => {
  it('continues one stream across draws like a torch CPU generator (Euler ancestral golden draws)', async () => {
    const run = goldenIndex().runs.find((r) => r.run === 'txt2img-euler_a-cfg7.5-prompt1');
    expect(run).toBeDefined();
    const g = await readGoldenRun(run as NonNullable<typeof run>);
    const gen = new TorchGenerator(run?.args.seed as number);
    for (let k = 0; g.has(`randn.${k}`); k++) {
      const want = g.get(`randn.${k}`);
      expect(Array.from(gen.randn(want?.shape as number[]))).toEqual(Array.from(want?.data as Float32Array));
    }
    expect(g.has('randn.4')).toBe(true);
  });

  it('keeps the cached Box-Muller sample of the small-tensor path between draws', () => {
    const whole = torchRandn(7, [5]);
    const gen = new TorchGenerator(7);
    const parts = [...gen.randn([3]), ...gen.randn([2])];
    // 3 + 2 draws = the same three Box-Muller pairs as one draw of 5 (the 4th value was cached).
    expect(parts).toEqual(Array.from(whole));
    expect(gen.clone().randn([4])).toEqual(gen.randn([4]));
  });

  it('uses the low 32 bits of seeds up to 2^64 - 1, negative seeds wrapping', () => {
    const max = (1n << 64n) - 1n;
    expect(torchRandn(max, [20])).toEqual(torchRandn(0xffffffff, [20]));
    expect(torchRandn(-1, [20])).toEqual(torchRandn(max, [20]));
    expect(torchRand(1n << 32n, [4])).toEqual(torchRand(0, [4]));
    expect(new TorchGenerator(-1).initialSeed()).toBe(max);
    const gen = new TorchGenerator(1);
    gen.randn([3]);
    expect(gen.manualSeed(42).randn([16])).toEqual(torchRandn(42, [16]));
  });

  it('refuses seeds out of range and unsafe numbers', () => {
    for (const seed of [1n << 64n, -(1n << 63n) - 1n, 2 ** 60, 0.5]) {
      let code: string | undefined;
      try {
        torchRandn(seed, [1]);
      } catch (e) {
        code = isCkptError(e) ? e.code : 'other';
      }
      expect(code).toBe('E_USAGE');
    }
  });
});
