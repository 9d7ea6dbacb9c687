/**
 * Sanity checks of the fixture set itself (no Python needed): every generated torch fixture has
 * its expected files, the expected safetensors parse and agree with the expected JSON, and the
 * shared cases the tests use are present.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ErrorCode } from '../src/errors.js';
import { sharedFixture, torchFixture } from './helpers/paths.js';

const ITEMSIZE: Record<string, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

interface ExpectedTensor {
  name: string;
  dtype: string;
  shape: number[];
  byte_length: number;
  stride: number[];
  storage_offset: number;
  contiguous: boolean;
  storage: { key: string; type: string; numel: number; location: string };
  shares_storage_with: string | null;
}

interface Expected {
  file: string;
  covers: string;
  bytes: number;
  error: string | null;
  format: 'torch-zip' | 'torch-legacy' | 'pickle';
  pickle_protocol: number;
  zip_prefix?: string;
  wrapper_path: string[] | null;
  extras?: Record<string, unknown>;
  names?: string[];
  tensors?: ExpectedTensor[];
  globals: { module: string; name: string; opcode: string; count: number }[];
  dangerous_globals?: { module: string; name: string; opcode: string }[];
}

interface SafetensorsEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

function readExpected(name: string): Expected {
  return JSON.parse(readFileSync(torchFixture(`${name}.expected.json`), 'utf8')) as Expected;
}

function parseSafetensors(path: string): { header: Record<string, unknown>; headerLen: number; size: number } {
  const buf = readFileSync(path);
  expect(buf.length).toBeGreaterThanOrEqual(8);
  const n = Number(buf.readBigUInt64LE(0));
  expect(8 + n).toBeLessThanOrEqual(buf.length);
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, unknown>;
  return { header, headerLen: n, size: buf.length };
}

const index = JSON.parse(readFileSync(torchFixture('index.json'), 'utf8')) as {
  torch: string;
  files: string[];
};
const torchDir = torchFixture('');
const dataFiles = readdirSync(torchDir).filter(
  (f) => !f.includes('.expected.') && f !== 'index.json' && /\.(pt|ckpt|pkl)$/.test(f),
);

describe('fixtures/torch', () => {
  it('index.json lists existing files, made by torch 1.13', () => {
    expect(index.torch).toMatch(/^1\.13/);
    expect(index.files.length).toBeGreaterThan(10);
    for (const f of index.files) expect(existsSync(torchFixture(f)), f).toBe(true);
  });

  it('every .pt / .pkl file (and every indexed file) has its .expected.json', () => {
    const required = new Set([...index.files, ...dataFiles.filter((f) => !f.endsWith('.ckpt'))]);
    for (const f of required) expect(existsSync(torchFixture(`${f}.expected.json`)), f).toBe(true);
  });

  for (const name of index.files) {
    describe(name, () => {
      const exp = readExpected(name);
      const raw = readFileSync(torchFixture(name));

      it('expected.json describes the file', () => {
        expect(exp.file).toBe(name);
        expect(exp.bytes).toBe(raw.length);
        expect(exp.covers.length).toBeGreaterThan(0);
        expect(Array.isArray(exp.globals)).toBe(true);
        if (exp.format === 'torch-zip') {
          expect(raw.subarray(0, 4).toString('hex')).toBe('504b0304');
          expect(exp.zip_prefix).toMatch(/^[^/]+\/$/);
        } else if (exp.format === 'torch-legacy') {
          expect(raw.subarray(0, 15).toString('hex')).toBe('80028a0a6cfc9c46f9206aa850192e');
        }
      });

      if (exp.error !== null) {
        it(`is refused with ${exp.error}`, () => {
          expect(Object.values(ErrorCode)).toContain(exp.error);
          expect(existsSync(torchFixture(`${name}.expected.safetensors`))).toBe(false);
          if (exp.error === 'E_UNSAFE_PICKLE') {
            expect(exp.dangerous_globals?.length ?? 0).toBeGreaterThan(0);
            for (const d of exp.dangerous_globals ?? []) {
              expect(exp.globals.some((g) => g.module === d.module && g.name === d.name)).toBe(true);
            }
          }
        });
        return;
      }

      it('expected.safetensors parses and matches expected.json', () => {
        const st = parseSafetensors(torchFixture(`${name}.expected.safetensors`));
        const names = Object.keys(st.header).filter((k) => k !== '__metadata__');
        expect(names).toEqual(exp.names);
        expect(exp.tensors?.map((t) => t.name)).toEqual(exp.names);
        expect(Array.isArray(exp.wrapper_path)).toBe(true);
        let pos = 0;
        for (const t of exp.tensors ?? []) {
          const e = st.header[t.name] as SafetensorsEntry;
          expect(e.dtype).toBe(t.dtype);
          expect(e.shape).toEqual(t.shape);
          const numel = t.shape.reduce((a, b) => a * b, 1);
          expect(t.byte_length).toBe(numel * ITEMSIZE[t.dtype]);
          expect(e.data_offsets).toEqual([pos, pos + t.byte_length]);
          expect(t.stride.length).toBe(t.shape.length);
          if (t.shares_storage_with !== null) expect(exp.names).toContain(t.shares_storage_with);
          pos += t.byte_length;
        }
        expect(8 + st.headerLen + pos).toBe(st.size);
      });
    });
  }
});

describe('fixtures/shared', () => {
  const cases = ['sd1', 'sd1-pipe', 'sd2', 'sdxl-base', 'vae'];
  for (const c of cases) {
    it(`${c}: case.json inputs and golden.json are present`, () => {
      const caseJson = JSON.parse(readFileSync(sharedFixture(`cases/${c}/case.json`), 'utf8')) as {
        inputs: { file: string; bytes?: number }[];
      };
      for (const input of caseJson.inputs) {
        const p = sharedFixture(`cases/${c}/${input.file}`);
        expect(existsSync(p), p).toBe(true);
        if (input.bytes !== undefined) expect(statSync(p).size).toBe(input.bytes);
      }
      expect(existsSync(sharedFixture(`golden/${c}/golden.json`))).toBe(true);
      expect(existsSync(sharedFixture(`golden/${c}/diffusers`))).toBe(true);
    });
  }

  it('tokenizer and noise goldens are present', () => {
    expect(existsSync(sharedFixture('tokenizer/clip-tokenizer.json'))).toBe(true);
    const st = parseSafetensors(sharedFixture('noise/torch-randn.safetensors'));
    expect(Object.keys(st.header).some((k) => k.startsWith('randn/'))).toBe(true);
  });
});
