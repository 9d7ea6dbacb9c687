import { describe, expect, it } from 'vitest';
import { isCkptError } from '../../src/errors.js';
import { torchLinspaceF32 } from '../../src/generate/schedulers/common.js';
import { createScheduler, resolveSchedulerName } from '../../src/generate/schedulers/index.js';
import type { Scheduler, SchedulerConfigJson } from '../../src/generate/schedulers/common.js';
import { torchRandn } from '../../src/generate/torch-random.js';

/** The SD 1.x scheduler_config.json (PNDM, as the sd1-pipe golden folder has it). */
const SD_CONFIG: SchedulerConfigJson = {
  _class_name: 'PNDMScheduler',
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  beta_start: 0.00085,
  clip_sample: false,
  num_train_timesteps: 1000,
  prediction_type: 'epsilon',
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
  timestep_spacing: 'leading',
  trained_betas: null,
};

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return isCkptError(e) ? e.code : 'other';
  }
  return undefined;
}

describe('timestep spacings (values Diffusers 0.31 gives)', () => {
  const cases: [string, string, number, number[]][] = [
    ['DDIMScheduler', 'leading', 4, [751, 501, 251, 1]],
    ['DDIMScheduler', 'trailing', 4, [999, 749, 499, 249]],
    ['DDIMScheduler', 'linspace', 4, [999, 666, 333, 0]],
    ['DDIMScheduler', 'trailing', 3, [999, 666, 332]],
    ['PNDMScheduler', 'leading', 4, [751, 501, 501, 251, 1]],
    ['PNDMScheduler', 'trailing', 4, [999, 749, 749, 499, 249]],
    ['EulerDiscreteScheduler', 'leading', 4, [751, 501, 251, 1]],
    ['EulerDiscreteScheduler', 'trailing', 4, [999, 749, 499, 249]],
    ['EulerAncestralDiscreteScheduler', 'linspace', 4, [999, 666, 333, 0]],
    ['EulerDiscreteScheduler', 'linspace', 3, [999, 499.5, 0]],
  ];
  for (const [cls, spacing, n, want] of cases) {
    it(`${cls} ${spacing} x${n}`, () => {
      const s = createScheduler({ ...SD_CONFIG, timestep_spacing: spacing }, cls);
      expect(s.setTimesteps(n)).toEqual(want);
      expect(s.timesteps).toEqual(want);
    });
  }

  it('img2img strength keeps the last int(n * strength) steps', () => {
    const ddim = createScheduler(SD_CONFIG, 'DDIMScheduler');
    expect(ddim.setTimesteps(10, 0.6)).toEqual([501, 401, 301, 201, 101, 1]);
    expect(ddim.timesteps).toHaveLength(10);
    const pndm = createScheduler(SD_CONFIG);
    expect(pndm.setTimesteps(4, 0.6)).toEqual([501, 251, 1]);
    expect(createScheduler(SD_CONFIG, 'euler').setTimesteps(4, 1)).toEqual([751, 501, 251, 1]);
  });

  it('PNDM with Runge-Kutta warm-up (skip_prk_steps false) runs 12 PRK steps then PLMS', () => {
    const s = createScheduler({ ...SD_CONFIG, skip_prk_steps: false });
    const ts = s.setTimesteps(10);
    expect(ts).toHaveLength(12 + 7);
    expect(ts.slice(0, 5)).toEqual([901, 851, 851, 801, 801]);
    expect(ts.slice(12)).toEqual([601, 501, 401, 301, 201, 101, 1]);
    const x = torchRandn(1, [1, 4, 2, 2]);
    let sample = x;
    for (const t of ts) sample = s.step(torchRandn(t, [1, 4, 2, 2]).map((v) => v * 0.1), t, sample, { shape: [1, 4, 2, 2] });
    expect(sample.every(Number.isFinite)).toBe(true);
  });

  it('Euler init_noise_sigma: max sigma for linspace/trailing, sqrt(max^2 + 1) for leading', () => {
    const lin = createScheduler({ ...SD_CONFIG, timestep_spacing: 'linspace' }, 'euler');
    lin.setTimesteps(30);
    expect(lin.initNoiseSigma).toBeCloseTo(14.6146, 3);
    const lead = createScheduler(SD_CONFIG, 'euler');
    lead.setTimesteps(4);
    expect(lead.initNoiseSigma).toBeCloseTo(Math.sqrt(4.116697788238525 ** 2 + 1), 5);
    expect(createScheduler(SD_CONFIG, 'ddim').initNoiseSigma).toBe(1);
  });
});

describe('v-prediction gives the same step as epsilon for the same noise', () => {
  const shape = [1, 4, 4, 4];
  const x0 = torchRandn(3, shape);
  const eps = torchRandn(4, shape);

  function stepBoth(cls: string): { a: Float32Array; b: Float32Array } {
    const e = createScheduler(SD_CONFIG, cls);
    const v = createScheduler({ ...SD_CONFIG, prediction_type: 'v_prediction' }, cls);
    const [t] = e.setTimesteps(10);
    v.setTimesteps(10);
    let sample: Float32Array;
    let vOut: Float32Array;
    if (cls.startsWith('Euler')) {
      const sigma = (e as Scheduler & { sigmas: number[] }).sigmas[0];
      sample = x0.map((x, i) => x + sigma * eps[i]);
      vOut = eps.map((n, i) => (n - sigma * x0[i]) / Math.sqrt(sigma * sigma + 1));
    } else {
      const a = e.alphasCumprod[t];
      sample = x0.map((x, i) => Math.sqrt(a) * x + Math.sqrt(1 - a) * eps[i]);
      vOut = eps.map((n, i) => Math.sqrt(a) * n - Math.sqrt(1 - a) * x0[i]);
    }
    return { a: e.step(eps, t, sample, { shape }), b: v.step(vOut, t, sample, { shape }) };
  }

  for (const cls of ['PNDMScheduler', 'DDIMScheduler', 'EulerDiscreteScheduler']) {
    it(cls, () => {
      const { a, b } = stepBoth(cls);
      for (let i = 0; i < a.length; i++) expect(Math.abs(a[i] - b[i])).toBeLessThan(2e-5 * (1 + Math.abs(a[i])));
    });
  }
});

describe('scheduler configs', () => {
  it('resolves class names and short names', () => {
    expect(resolveSchedulerName('euler_a')).toBe('EulerAncestralDiscreteScheduler');
    expect(resolveSchedulerName('DDIMScheduler')).toBe('DDIMScheduler');
    expect(code(() => resolveSchedulerName('LMSDiscreteScheduler'))).toBe('E_SCHEDULER');
  });

  it('refuses unsupported options with E_SCHEDULER', () => {
    expect(code(() => createScheduler({ ...SD_CONFIG, use_karras_sigmas: true }, 'euler'))).toBe('E_SCHEDULER');
    expect(code(() => createScheduler({ ...SD_CONFIG, beta_schedule: 'sigmoid' }))).toBe('E_SCHEDULER');
    expect(code(() => createScheduler({ ...SD_CONFIG, timestep_spacing: 'karras' }))).toBe('E_SCHEDULER');
    expect(code(() => createScheduler({ ...SD_CONFIG, _class_name: undefined }))).toBe('E_SCHEDULER');
    expect(code(() => createScheduler(SD_CONFIG).setTimesteps(0))).toBe('E_USAGE');
    expect(code(() => createScheduler(SD_CONFIG).setTimesteps(4, 1.5))).toBe('E_USAGE');
  });

  it('DDIM eta > 0 draws variance noise and needs a generator', () => {
    const s = createScheduler(SD_CONFIG, 'ddim') as Scheduler & { eta: number };
    s.eta = 1;
    const [t] = s.setTimesteps(4);
    const x = torchRandn(5, [16]);
    expect(code(() => s.step(x, t, x, { shape: [16] }))).toBe('E_SCHEDULER');
    let draws = 0;
    const out = s.step(x, t, x, { shape: [16], generator: { randn: (sh) => (draws++, torchRandn(9, sh)) } });
    expect(draws).toBe(1);
    expect(out.every(Number.isFinite)).toBe(true);
  });

  it('torch.linspace float32 keeps both ends exact', () => {
    const l = torchLinspaceF32(Math.sqrt(0.00085), Math.sqrt(0.012), 1000);
    expect(l[0]).toBe(Math.fround(Math.sqrt(0.00085)));
    expect(l[999]).toBe(Math.fround(Math.sqrt(0.012)));
    expect(torchLinspaceF32(0, 1, 5)).toEqual(Float32Array.from([0, 0.25, 0.5, 0.75, 1]));
  });
});
