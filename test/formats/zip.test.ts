import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { CkptError, type ErrorCode } from '../../src/errors.js';
import { entryDataOffset, openEntryReader, readEntryRange, readSmallEntry, readZipDirectory, type ZipDirectory } from '../../src/formats/zip.js';
import { FileSource } from '../../src/io/file-source.js';
import { MAX_ZIP_ENTRIES } from '../../src/limits.js';
import { buildZip, layoutZip, writeSparseZip, type ZipBuildOptions, type ZipEntrySpec } from '../helpers/zip-builder.js';

let dir: string;
let counter = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ckpt2diffusers-zip-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function openBytes(bytes: Uint8Array): Promise<FileSource> {
  const path = join(dir, `z${counter++}.zip`);
  await writeFile(path, bytes);
  return FileSource.open(path);
}

async function withZip<T>(bytes: Uint8Array, fn: (file: FileSource, zip: ZipDirectory) => Promise<T>): Promise<T> {
  const file = await openBytes(bytes);
  try {
    return await fn(file, await readZipDirectory(file));
  } finally {
    await file.close();
  }
}

/** Deterministic pseudo-random bytes (incompressible enough to span several inflate steps). */
function noise(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

const text = (b: Uint8Array) => new TextDecoder().decode(b);

describe('readZipDirectory on torch-like archives', () => {
  const entries: ZipEntrySpec[] = [
    { name: 'archive/data.pkl', data: 'pickle-bytes' },
    { name: 'archive/data/0', data: noise(1000) },
    { name: 'archive/data/1', data: new Uint8Array(0) },
    { name: 'archive/version', data: '3\n' },
  ];

  test('lists entries with central-directory sizes and 64-byte aligned data', async () => {
    const bytes = buildZip(entries);
    await withZip(bytes, async (file, zip) => {
      expect(zip.zip64).toBe(true);
      expect(zip.entries.map((e) => e.name)).toEqual(entries.map((e) => e.name));
      const e0 = zip.byName.get('archive/data/0')!;
      expect(e0).toMatchObject({ method: 0, flags: 0x0808, compressedSize: 1000, uncompressedSize: 1000 });
      expect((await entryDataOffset(file, e0)) % 64).toBe(0);
      expect(await readSmallEntry(file, e0, 4096)).toEqual(noise(1000));
      expect(text(await readSmallEntry(file, zip.byName.get('archive/version')!, 16))).toBe('3\n');
      expect(await readSmallEntry(file, zip.byName.get('archive/data/1')!, 16)).toEqual(new Uint8Array(0));
      expect(await readEntryRange(file, e0, 100, 50)).toEqual(noise(1000).subarray(100, 150));
    });
  });

  test('reads archives without ZIP64 records, padding or data descriptors, with a comment', async () => {
    const opts: ZipBuildOptions = { zip64: false, align: 1, dataDescriptors: false, comment: 'made elsewhere' };
    await withZip(buildZip(entries, opts), async (file, zip) => {
      expect(zip.zip64).toBe(false);
      expect(zip.entries).toHaveLength(4);
      expect(text(await readSmallEntry(file, zip.byName.get('archive/data.pkl')!, 100))).toBe('pickle-bytes');
    });
  });

  test('skips the CRC check when the stored CRC is 0 (torch compute_crc32=False)', async () => {
    await withZip(buildZip([{ name: 'a/x', data: 'abc', crc32: 0 }]), async (file, zip) => {
      expect(text(await readSmallEntry(file, zip.entries[0], 10))).toBe('abc');
    });
  });
});

describe('deflated entries', () => {
  const big = noise(300_000, 7);
  const zeros = new Uint8Array(200_000);
  const bytes = buildZip([
    { name: 'a/big', data: big, method: 8 },
    { name: 'a/zeros', data: zeros, method: 8 },
  ]);

  test('readSmallEntry inflates whole entries and checks their CRC', async () => {
    await withZip(bytes, async (file, zip) => {
      expect(await readSmallEntry(file, zip.byName.get('a/big')!, 1 << 20)).toEqual(big);
      expect(await readSmallEntry(file, zip.byName.get('a/zeros')!, 1 << 20)).toEqual(zeros);
    });
  });

  test('readEntryRange inflates from the start and returns any range', async () => {
    await withZip(bytes, async (file, zip) => {
      const e = zip.byName.get('a/big')!;
      expect(await readEntryRange(file, e, 0, 10)).toEqual(big.subarray(0, 10));
      expect(await readEntryRange(file, e, 250_000, 50_000)).toEqual(big.subarray(250_000));
      expect(await readEntryRange(file, e, 123_456, 0)).toEqual(new Uint8Array(0));
    });
  });

  test('an entry reader continues forward and restarts for a read behind it', async () => {
    await withZip(bytes, async (file, zip) => {
      const reader = openEntryReader(file, zip.byName.get('a/big')!);
      for (let at = 0; at < big.length; at += 70_001) {
        const n = Math.min(70_001, big.length - at);
        expect(await reader.read(at, n)).toEqual(big.subarray(at, at + n));
      }
      expect(await reader.read(5, 7)).toEqual(big.subarray(5, 12));
      expect(await reader.read(200_000, 3)).toEqual(big.subarray(200_000, 200_003));
    });
  });
});

type Action = 'directory' | { read: string; maxBytes?: number } | { range: string; offset: number; length: number };

interface MalformedCase {
  name: string;
  bytes: () => Uint8Array;
  action: Action;
  code: ErrorCode;
}

const ok: ZipEntrySpec[] = [
  { name: 'archive/data.pkl', data: 'pickle' },
  { name: 'archive/data/0', data: noise(256) },
  { name: 'archive/version', data: '3\n' },
];

function withEntry(i: number, patch: Partial<ZipEntrySpec>): ZipEntrySpec[] {
  return ok.map((e, k) => (k === i ? { ...e, ...patch } : e));
}

function patchBytes(bytes: Uint8Array, at: number, values: number[]): Uint8Array {
  const copy = bytes.slice();
  copy.set(values, at);
  return copy;
}

const catalogue: MalformedCase[] = [
  { name: 'empty file', bytes: () => new Uint8Array(0), action: 'directory', code: 'E_ZIP_EOCD' },
  { name: 'bad EOCD (no end record at all)', bytes: () => patchBytes(noise(5000), 0, [0x50, 0x4b, 3, 4]), action: 'directory', code: 'E_ZIP_EOCD' },
  { name: 'file cut before its end records', bytes: () => buildZip(ok).subarray(0, 700), action: 'directory', code: 'E_ZIP_EOCD' },
  {
    name: 'multi-disk EOCD',
    bytes: () => {
      const b = buildZip(ok, { zip64: false });
      return patchBytes(b, b.length - 22 + 4, [1, 0]);
    },
    action: 'directory',
    code: 'E_ZIP_EOCD',
  },
  {
    name: 'truncated central directory (size field too small)',
    bytes: () => {
      const l = layoutZip(ok, { zip64: false });
      const cdSize = l.size - 22 - l.centralDirOffset;
      return buildZip(ok, { zip64: false, eocd: { centralDirSize: cdSize - 10 } });
    },
    action: 'directory',
    code: 'E_ZIP_CENTRAL_DIR',
  },
  {
    name: 'central directory runs into the end records',
    bytes: () => buildZip(ok, { zip64: false, eocd: { centralDirSize: 100_000 } }),
    action: 'directory',
    code: 'E_ZIP_CENTRAL_DIR',
  },
  {
    name: 'more entries declared than the central directory holds',
    bytes: () => buildZip(ok, { zip64: false, eocd: { entryCount: 40 } }),
    action: 'directory',
    code: 'E_ZIP_CENTRAL_DIR',
  },
  {
    name: 'central directory offset pointing at file data',
    bytes: () => buildZip(ok, { zip64: false, eocd: { centralDirOffset: 64 } }),
    action: 'directory',
    code: 'E_ZIP_CENTRAL_DIR',
  },
  {
    name: 'entry count above MAX_ZIP_ENTRIES',
    bytes: () => buildZip(ok, { zip64Record: { entryCount: MAX_ZIP_ENTRIES + 1 } }),
    action: 'directory',
    code: 'E_LIMIT',
  },
  { name: 'entry offset past EOF', bytes: () => buildZip(withEntry(1, { declaredOffset: 50_000_000 })), action: 'directory', code: 'E_TRUNCATED' },
  {
    name: 'entry overlapping the central directory',
    bytes: () => buildZip(withEntry(1, { declaredOffset: layoutZip(ok).centralDirOffset - 280 })),
    action: 'directory',
    code: 'E_ZIP_CENTRAL_DIR',
  },
  {
    name: 'bad local header signature',
    bytes: () => buildZip(withEntry(1, { localSignature: 0x12345678 })),
    action: { read: 'archive/data/0' },
    code: 'E_ZIP_LOCAL_HEADER',
  },
  {
    name: 'local extra length pushing the data into the central directory',
    bytes: () => {
      const l = layoutZip(ok);
      const header = l.pieces.find((p) => p.position + p.bytes.length === l.dataOffsets.get('archive/version'))!;
      const extraLength = header.bytes[28] | (header.bytes[29] << 8);
      // Its 2 data bytes and 16-byte descriptor end at the central directory; 17 more bytes of
      // extra make the data start 1 byte before it.
      const patched = extraLength + 17;
      return patchBytes(buildZip(ok), header.position + 28, [patched & 0xff, patched >> 8]);
    },
    action: { read: 'archive/version' },
    code: 'E_ZIP_LOCAL_HEADER',
  },
  {
    name: 'local extra length pushing the data past EOF',
    bytes: () => {
      const l = layoutZip(ok);
      const header = l.pieces.find((p) => p.position + p.bytes.length === l.dataOffsets.get('archive/version'))!;
      return patchBytes(buildZip(ok), header.position + 28, [0xff, 0xff]);
    },
    action: { read: 'archive/version' },
    code: 'E_TRUNCATED',
  },
  { name: 'encrypted entry (flag bit 0)', bytes: () => buildZip(withEntry(1, { flags: 0x0809 })), action: 'directory', code: 'E_ZIP_ENCRYPTED' },
  { name: 'compression method 12 (bzip2)', bytes: () => buildZip(withEntry(1, { method: 12 })), action: 'directory', code: 'E_ZIP_METHOD' },
  { name: 'duplicate name', bytes: () => buildZip([...ok, { name: 'archive/data/0', data: 'x' }]), action: 'directory', code: 'E_ZIP_DUPLICATE_ENTRY' },
  { name: '`../` name', bytes: () => buildZip([...ok, { name: '../evil', data: 'x' }]), action: 'directory', code: 'E_ZIP_ENTRY_NAME' },
  { name: '`..` inside a name', bytes: () => buildZip([...ok, { name: 'archive/../../evil', data: 'x' }]), action: 'directory', code: 'E_ZIP_ENTRY_NAME' },
  { name: 'absolute name', bytes: () => buildZip([...ok, { name: '/etc/passwd', data: 'x' }]), action: 'directory', code: 'E_ZIP_ENTRY_NAME' },
  { name: 'drive-letter name', bytes: () => buildZip([...ok, { name: 'C:\\evil', data: 'x' }]), action: 'directory', code: 'E_ZIP_ENTRY_NAME' },
  { name: 'stored entry whose sizes differ', bytes: () => buildZip(withEntry(1, { declaredSize: 200 })), action: 'directory', code: 'E_ZIP_CENTRAL_DIR' },
  { name: 'zip64 locator pointing nowhere (past the locator)', bytes: () => buildZip(ok, { locator: { recordOffset: 2 ** 40 } }), action: 'directory', code: 'E_ZIP_ZIP64' },
  { name: 'zip64 locator pointing at file data', bytes: () => buildZip(ok, { locator: { recordOffset: 3 } }), action: 'directory', code: 'E_ZIP_ZIP64' },
  { name: 'zip64 end record with a bad signature', bytes: () => buildZip(ok, { zip64Record: { signature: 0x01020304 } }), action: 'directory', code: 'E_ZIP_ZIP64' },
  {
    name: 'saturated EOCD without a zip64 locator',
    bytes: () => buildZip(ok, { zip64: false, eocd: { centralDirOffset: 0xffffffff } }),
    action: 'directory',
    code: 'E_ZIP_ZIP64',
  },
  {
    name: 'deflate bomb (inflates past the cap)',
    bytes: () => buildZip([{ name: 'a/data.pkl', data: new Uint8Array(5_000_000), method: 8, declaredSize: 1000, crc32: 0 }]),
    action: { read: 'a/data.pkl', maxBytes: 4096 },
    code: 'E_LIMIT',
  },
  {
    name: 'entry declaring more than the cap',
    bytes: () => buildZip([{ name: 'a/data.pkl', data: new Uint8Array(10_000), method: 8 }]),
    action: { read: 'a/data.pkl', maxBytes: 4096 },
    code: 'E_LIMIT',
  },
  {
    name: 'deflated entry inflating past its declared size',
    bytes: () => buildZip([{ name: 'a/x', data: new Uint8Array(3000), method: 8, declaredSize: 1000, crc32: 0 }]),
    action: { read: 'a/x', maxBytes: 1 << 20 },
    code: 'E_ZIP_INFLATE',
  },
  {
    name: 'deflated entry inflating short of its declared size',
    bytes: () => buildZip([{ name: 'a/x', data: new Uint8Array(1000), method: 8, declaredSize: 3000, crc32: 0 }]),
    action: { read: 'a/x', maxBytes: 1 << 20 },
    code: 'E_ZIP_INFLATE',
  },
  {
    name: 'corrupt DEFLATE stream',
    bytes: () => buildZip([{ name: 'a/x', data: new Uint8Array(1000), method: 8, rawData: Uint8Array.from([0xff, 0xff, 0xff, 0xff]) }]),
    action: { read: 'a/x', maxBytes: 1 << 20 },
    code: 'E_ZIP_INFLATE',
  },
  {
    name: 'corrupt DEFLATE stream read by range',
    bytes: () => buildZip([{ name: 'a/x', data: new Uint8Array(1000), method: 8, rawData: Uint8Array.from([0xff, 0xff, 0xff, 0xff]) }]),
    action: { range: 'a/x', offset: 10, length: 10 },
    code: 'E_ZIP_INFLATE',
  },
  { name: 'CRC mismatch', bytes: () => buildZip(withEntry(0, { crc32: 0xdeadbeef })), action: { read: 'archive/data.pkl' }, code: 'E_ZIP_CRC' },
  {
    name: 'CRC mismatch in a deflated entry',
    bytes: () => buildZip([{ name: 'a/x', data: 'hello', method: 8, crc32: 1 }]),
    action: { read: 'a/x' },
    code: 'E_ZIP_CRC',
  },
  { name: 'range past the end of an entry', bytes: () => buildZip(ok), action: { range: 'archive/data/0', offset: 200, length: 57 }, code: 'E_TRUNCATED' },
];

describe('malformed zips', () => {
  test.each(catalogue)('$name → $code', async ({ bytes, action, code }) => {
    const file = await openBytes(bytes());
    try {
      const run = async () => {
        const zip = await readZipDirectory(file);
        if (action === 'directory') return;
        if ('read' in action) {
          await readSmallEntry(file, zip.byName.get(action.read)!, action.maxBytes ?? 1 << 20);
        } else {
          await readEntryRange(file, zip.byName.get(action.range)!, action.offset, action.length);
        }
      };
      const error = await run().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(CkptError);
      expect((error as CkptError).code).toBe(code);
      expect((error as CkptError).message).toContain(file.path);
    } finally {
      await file.close();
    }
  });
});

describe('ZIP64 beyond 4 GiB (sparse file)', () => {
  const GiB = 2 ** 30;
  const bigSize = 4 * GiB + 1000;
  const secondSize = 4 * GiB + 24;
  const head = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8]);
  const tail = Uint8Array.from([0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04]);

  test('entries whose size and local header offset need the ZIP64 extra', async () => {
    const path = join(dir, 'sparse-zip64.zip');
    const layout = await writeSparseZip(path, [
      { name: 'big/data.pkl', data: 'tiny' },
      { name: 'big/data/0', data: { size: bigSize, writes: [{ offset: 0, bytes: head }] } },
      { name: 'big/data/1', data: { size: secondSize, writes: [{ offset: secondSize - tail.length, bytes: tail }] } },
      { name: 'big/version', data: '3\n' },
    ]);
    try {
      const st = await stat(path);
      expect(st.size).toBe(layout.size);
      // Refuse to go on if the file system did not keep the file sparse.
      expect(st.blocks * 512).toBeLessThan(64 * 1024 * 1024);

      const file = await FileSource.open(path);
      try {
        const zip = await readZipDirectory(file);
        expect(zip.zip64).toBe(true);
        const first = zip.byName.get('big/data/0')!;
        const second = zip.byName.get('big/data/1')!;
        expect(first.uncompressedSize).toBe(bigSize);
        expect(second.uncompressedSize).toBe(secondSize);
        expect(second.localHeaderOffset).toBeGreaterThan(2 ** 32);
        expect(await entryDataOffset(file, second)).toBe(layout.dataOffsets.get('big/data/1'));
        expect(await readEntryRange(file, first, 0, 8)).toEqual(head);
        expect(await readEntryRange(file, second, secondSize - 12, 12)).toEqual(Uint8Array.from([0, 0, 0, 0, ...tail]));
        expect(text(await readSmallEntry(file, zip.byName.get('big/version')!, 16))).toBe('3\n');
        expect(zip.centralDirOffset).toBeGreaterThan(2 ** 33);
      } finally {
        await file.close();
      }
    } finally {
      await rm(path, { force: true });
    }
  });
});
