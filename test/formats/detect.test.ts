import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { CkptError, type ErrorCode } from '../../src/errors.js';
import { detectFormat, type DetectedFormat } from '../../src/formats/detect.js';
import { FileSource } from '../../src/io/file-source.js';
import { sharedFixture } from '../helpers/paths.js';
import { buildTorchZip, buildStateDictPickle } from '../helpers/zip-builder.js';

let dir: string;
let counter = 0;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ckpt2diffusers-detect-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function detectBytes(bytes: Uint8Array): Promise<DetectedFormat> {
  const path = join(dir, `f${counter++}.bin`);
  await writeFile(path, bytes);
  const file = await FileSource.open(path);
  try {
    return await detectFormat(file);
  } finally {
    await file.close();
  }
}

const LEGACY_MAGIC = [0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const bytes = (...parts: (number[] | Uint8Array | string)[]) =>
  Uint8Array.from(parts.flatMap((p) => (typeof p === 'string' ? [...new TextEncoder().encode(p)] : [...p])));

function safetensorsBytes(header: string, dataBytes = 0, lengthDelta = 0): Uint8Array {
  const h = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + h.length + dataBytes);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length + lengthDelta), true);
  out.set(h, 8);
  return out;
}

function tarBytes(): Uint8Array {
  const out = new Uint8Array(1024);
  out.set(new TextEncoder().encode('storages'), 0);
  out.set(new TextEncoder().encode('ustar\x0000'), 257);
  return out;
}

describe('detectFormat recognises', () => {
  test.each([
    { name: 'a torch zip', input: () => buildTorchZip({ pickle: buildStateDictPickle([]), storages: {} }), format: 'torch-zip' },
    { name: 'legacy torch, protocol 2', input: () => bytes([0x80, 0x02], LEGACY_MAGIC, [0x2e]), format: 'torch-legacy' },
    { name: 'legacy torch, protocol 3', input: () => bytes([0x80, 0x03], LEGACY_MAGIC, [0x2e]), format: 'torch-legacy' },
    {
      name: 'legacy torch, protocol 4 with a FRAME',
      input: () => bytes([0x80, 0x04, 0x95, 13, 0, 0, 0, 0, 0, 0, 0], LEGACY_MAGIC, [0x94, 0x2e]),
      format: 'torch-legacy',
    },
    { name: 'safetensors', input: () => safetensorsBytes('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', 4), format: 'safetensors' },
    { name: 'safetensors with a leading space', input: () => safetensorsBytes(' {}'), format: 'safetensors' },
    { name: 'safetensors with an empty header object', input: () => safetensorsBytes('{}'), format: 'safetensors' },
    { name: 'safetensors whose header length starts 80 02 (a pickle PROTO look-alike)', input: () => safetensorsBytes(`{}${' '.repeat(0x280 - 2)}`), format: 'safetensors' },
  ] as const)('$name', async ({ input, format }) => {
    expect(await detectBytes(input())).toBe(format);
  });
});

describe('detectFormat rejects', () => {
  test.each([
    { name: 'an empty file', input: () => new Uint8Array(0), code: 'E_UNKNOWN_FORMAT' },
    { name: 'a tar archive', input: tarBytes, code: 'E_TAR_FORMAT' },
    { name: 'a PYTORCH1 preview archive', input: () => bytes('PYTORCH1', new Uint8Array(100)), code: 'E_UNKNOWN_FORMAT' },
    { name: 'GGUF', input: () => bytes('GGUF', [3, 0, 0, 0], new Uint8Array(100)), code: 'E_UNKNOWN_FORMAT' },
    { name: 'HTML (a failed download)', input: () => bytes('<!DOCTYPE html><html>'), code: 'E_UNKNOWN_FORMAT' },
    { name: 'a plain pickle without the torch magic', input: () => bytes([0x80, 0x02, 0x7d, 0x71, 0x00, 0x2e]), code: 'E_LEGACY_MAGIC' },
    { name: 'a pickle of protocol 1 (torch.save never writes one)', input: () => bytes([0x80, 0x01], LEGACY_MAGIC), code: 'E_UNKNOWN_FORMAT' },
    { name: 'a safetensors header longer than the file', input: () => safetensorsBytes('{}', 0, 100), code: 'E_UNKNOWN_FORMAT' },
    { name: 'a safetensors-like length followed by NUL', input: () => safetensorsBytes('\0{}'), code: 'E_UNKNOWN_FORMAT' },
    { name: 'a lone empty zip (end record only)', input: () => bytes([0x50, 0x4b, 0x05, 0x06], new Uint8Array(18)), code: 'E_UNKNOWN_FORMAT' },
  ] as { name: string; input: () => Uint8Array; code: ErrorCode }[])('$name → $code', async ({ input, code }) => {
    const error = await detectBytes(input()).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(CkptError);
    expect((error as CkptError).code).toBe(code);
  });

  test('the unknown-format message shows the first bytes', async () => {
    await expect(detectBytes(bytes('<!DOCTYPE html>'))).rejects.toThrow(/3C 21 44 4F 43 54 59 50 45.*"<!DOCTYPE html>"/);
  });

  test('the tar message says how to re-save', async () => {
    await expect(detectBytes(tarBytes())).rejects.toThrow(/re-save/i);
  });
});

describe('detectFormat on the shared fixtures', () => {
  test.each([
    ['cases/sd1/model.ckpt', 'torch-zip'],
    ['cases/sd2/model-fp16.ckpt', 'torch-zip'],
    ['cases/vae/vae.ckpt', 'torch-zip'],
    ['cases/sd1/model-legacy-fp16.ckpt', 'torch-legacy'],
    ['cases/vae/vae-legacy.ckpt', 'torch-legacy'],
    ['cases/vae/vae.safetensors', 'safetensors'],
    ['cases/sdxl-base/model-fp16.safetensors', 'safetensors'],
  ])('%s is %s', async (rel, format) => {
    const file = await FileSource.open(sharedFixture(rel));
    try {
      expect(await detectFormat(file)).toBe(format);
    } finally {
      await file.close();
    }
  });
});
