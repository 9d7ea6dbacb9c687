import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import * as api from '../../src/index.js';
import { repoRoot } from '../helpers/paths.js';

describe('package entry point', () => {
  it('exports the library functions, the error type and codes', () => {
    for (const name of [
      'convert',
      'CONVERT_DEFAULTS',
      'batch',
      'inspectFile',
      'scanFile',
      'openCheckpoint',
      'readSafetensorsHeader',
      'openSafetensors',
      'writeSafetensorsFile',
      'detectFamily',
      'planConversion',
      'CkptError',
      'ErrorCode',
      'isCkptError',
    ]) {
      expect(api, name).toHaveProperty(name);
    }
    expect(api.ErrorCode.E_DISK_FULL).toBe('E_DISK_FULL');
    expect(api.ErrorCode.E_OUTPUT_NOT_WRITABLE).toBe('E_OUTPUT_NOT_WRITABLE');
    expect(api.ErrorCode.E_INPUT_CHANGED).toBe('E_INPUT_CHANGED');
  });

  it('statically imports nothing from onnxruntime (only export/verify may load it, dynamically)', () => {
    const seen = new Set<string>();
    const packages = new Set<string>();
    const visit = (file: string) => {
      if (seen.has(file)) return;
      seen.add(file);
      const text = readFileSync(file, 'utf8');
      // Static `import ... from 'x'` and `export ... from 'x'`; `import type` is erased.
      for (const m of text.matchAll(/^(?:import|export)\s+(?!type\s)[^'"]*?from\s+'([^']+)'/gm)) {
        const spec = m[1];
        if (spec.startsWith('.')) visit(resolve(dirname(file), spec.replace(/\.js$/, '.ts')));
        else packages.add(spec);
      }
      for (const m of text.matchAll(/^import\s+'([^']+)'/gm)) packages.add(m[1]);
    };
    visit(join(repoRoot, 'src', 'index.ts'));
    expect(seen.size).toBeGreaterThan(10);
    expect([...packages].filter((p) => p.includes('onnxruntime'))).toEqual([]);
  });
});
