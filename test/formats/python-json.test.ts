/**
 * pythonJsonDumps reproduces Python's json.dumps byte for byte: checked against explicit
 * expectations (values Python prints, verified by the rules of float_repr and json.encoder) and
 * against every config file Diffusers and transformers wrote into the golden folders.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { ErrorCode } from '../../src/errors.js';
import { PyFloat, parsePythonJson, pyFloat, pythonFloatRepr, pythonJsonDumps } from '../../src/formats/python-json.js';
import { sharedFixture } from '../helpers/paths.js';

describe('pythonFloatRepr (Python repr(float))', () => {
  test.each([
    [0.00085, '0.00085'],
    [0.012, '0.012'],
    [0.18215, '0.18215'],
    [0.13025, '0.13025'],
    [0.00001, '1e-05'],
    [0.000025, '2.5e-05'],
    [1.5e-7, '1.5e-07'],
    [0.0001, '0.0001'],
    [0.00012, '0.00012'],
    [0.5, '0.5'],
    [1, '1.0'],
    [100, '100.0'],
    [12345.678, '12345.678'],
    [1e15, '1000000000000000.0'],
    [9999999999999998, '9999999999999998.0'],
    [1e16, '1e+16'],
    [1e22, '1e+22'],
    [123456789012345678, '1.2345678901234568e+17'],
    [0.1 + 0.2, '0.30000000000000004'],
    [5e-324, '5e-324'],
    [1.7976931348623157e308, '1.7976931348623157e+308'],
    [-0.75, '-0.75'],
    [-1e-5, '-1e-05'],
    [0, '0.0'],
    [-0, '-0.0'],
    [NaN, 'NaN'],
    [Infinity, 'Infinity'],
    [-Infinity, '-Infinity'],
  ])('%d -> %s', (value, expected) => {
    expect(pythonFloatRepr(value)).toBe(expected);
  });
});

describe('pythonJsonDumps', () => {
  test('ints, floats and the pyFloat marker', () => {
    expect(pythonJsonDumps([1, pyFloat(1), 0.5, 1e-5, 2 ** 70, 12345678901234567890n, -0])).toBe(
      '[1, 1.0, 0.5, 1e-05, 1180591620717411303424, 12345678901234567890, 0]',
    );
  });

  test('indent=2, sort_keys=True layout: "," line ends, ": ", empty containers inline', () => {
    const value = { b: [1, 2], a: {}, c: [], d: { y: null, x: true } };
    expect(pythonJsonDumps(value, { indent: 2, sortKeys: true })).toBe(
      '{\n  "a": {},\n  "b": [\n    1,\n    2\n  ],\n  "c": [],\n  "d": {\n    "x": true,\n    "y": null\n  }\n}',
    );
    expect(pythonJsonDumps(value)).toBe('{"b": [1, 2], "a": {}, "c": [], "d": {"y": null, "x": true}}');
    expect(pythonJsonDumps(value, { separators: [',', ':'] })).toBe('{"b":[1,2],"a":{},"c":[],"d":{"y":null,"x":true}}');
    expect(pythonJsonDumps([1, [2]], { indent: 0 })).toBe('[\n1,\n[\n2\n]\n]');
  });

  test('ensure_ascii=True escapes like Python (lower-case hex, surrogate pairs, DEL)', () => {
    expect(pythonJsonDumps('é😀\x7f\x00\x1f/~ \b\f\n\r\t"\\')).toBe('"\\u00e9\\ud83d\\ude00\\u007f\\u0000\\u001f/~ \\b\\f\\n\\r\\t\\"\\\\"');
    expect(pythonJsonDumps('é😀\x7f\x01"', { ensureAscii: false })).toBe('"é😀\x7f\\u0001\\""');
  });

  test('sort_keys orders by code point, not UTF-16 unit', () => {
    expect(pythonJsonDumps({ '😀': 1, '\uffff': 2, a: 3 }, { sortKeys: true, ensureAscii: false })).toBe('{"a": 3, "\uffff": 2, "😀": 1}');
  });

  test('refuses what Python cannot serialize', () => {
    expect(() => pythonJsonDumps({ a: undefined })).toThrow(TypeError);
    expect(() => pythonJsonDumps(new Map())).toThrow(TypeError);
    const cyclic: unknown[] = [];
    cyclic.push(cyclic);
    expect(() => pythonJsonDumps(cyclic)).toThrow(/Circular/);
  });
});

describe('parsePythonJson', () => {
  test('floats become PyFloat, ints stay numbers, big ints become bigint', () => {
    const v = parsePythonJson('{"a": 1.0, "b": 1, "c": 1e-05, "d": 123456789012345678901, "e": [NaN, -Infinity]}') as Record<string, unknown>;
    expect(v.a).toEqual(new PyFloat(1));
    expect(v.b).toBe(1);
    expect(v.c).toEqual(new PyFloat(1e-5));
    expect(v.d).toBe(123456789012345678901n);
    expect(pythonJsonDumps(v)).toBe('{"a": 1.0, "b": 1, "c": 1e-05, "d": 123456789012345678901, "e": [NaN, -Infinity]}');
  });

  test('keeps key order and a "__proto__" key as data', () => {
    const v = parsePythonJson('{"z": 1, "0": 2, "__proto__": 3}') as Record<string, unknown>;
    expect(Object.keys(v)).toEqual(['0', 'z', '__proto__']);
    expect(pythonJsonDumps(v, { sortKeys: true })).toBe('{"0": 2, "__proto__": 3, "z": 1}');
  });

  test.each(['{', '[1,]', '{"a" 1}', '01', '"\\x"', '[] []', "{'a': 1}"])('invalid JSON %s -> E_CONFIG', (text) => {
    expect(() => parsePythonJson(text, 'cfg.json')).toThrow(expect.objectContaining({ code: ErrorCode.E_CONFIG }));
  });
});

/** Every JSON file Diffusers or transformers wrote under golden/<case>/diffusers*. */
function goldenConfigFiles(): string[] {
  const golden = sharedFixture('golden');
  if (!existsSync(golden)) return [];
  const found: string[] = [];
  const walk = (d: string): void => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      // _large_files.json is written by the fixture tooling, not by Diffusers.
      else if (name.endsWith('.json') && name !== '_large_files.json') found.push(p);
    }
  };
  for (const c of readdirSync(golden)) {
    for (const sub of readdirSync(join(golden, c))) if (sub.startsWith('diffusers')) walk(join(golden, c, sub));
  }
  return found.sort();
}

describe('real Diffusers / transformers config files', () => {
  const files = goldenConfigFiles();

  test('the golden configs are present', () => {
    expect(files.length).toBeGreaterThanOrEqual(30);
  });

  test.each(files)('%s: parse -> json.dumps(indent=2, sort_keys=True) + "\\n" gives the same bytes', (path) => {
    const raw = readFileSync(path, 'utf8');
    expect(pythonJsonDumps(parsePythonJson(raw, path), { indent: 2, sortKeys: true }) + '\n').toBe(raw);
  });

  test('float fields of a real UNet config keep their Python spelling', () => {
    const path = files.find((f) => f.endsWith(join('sd1', 'diffusers', 'unet', 'config.json')));
    expect(path).toBeDefined();
    const out = pythonJsonDumps(parsePythonJson(readFileSync(path!, 'utf8')), { indent: 2, sortKeys: true });
    expect(out).toContain('"norm_eps": 1e-05,');
    expect(out).toContain('"dropout": 0.0,');
    expect(out).toContain('"resnet_out_scale_factor": 1.0,');
    expect(out).toContain('"mid_block_scale_factor": 1,');
  });
});
