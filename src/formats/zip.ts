/**
 * Central-directory zip reader over positional reads, enough for torch.save archives and copies
 * re-zipped by other tools (stored or DEFLATE entries, ZIP64).
 *
 * Spec: PKWARE APPNOTE.TXT 6.3 §4.3 (records), §4.4.2–§4.4.x (fields), §4.5.3 (ZIP64 extra);
 * docs/formats.md §2.2 (torch's layout: zero sizes/CRC in local headers, FB padding extra),
 * §2.3 (ZIP64), §2.4 (compression), §2.10 (reader checklist).
 * Reference: PyTorch `caffe2/serialize/inline_container.cc` (`init`, `getRecordOffset`), miniz.
 *
 * Never reads the whole file: the end records and the central directory are read from the end,
 * each entry's local header only when its data is first needed.
 */
import { crc32 } from 'node:zlib';
import { Inflate } from 'fflate';
import { ErrorCode, fail } from '../errors.js';
import type { FileSource } from '../io/file-source.js';
import { MAX_EOCD_SEARCH_BYTES, MAX_ZIP_ENTRIES } from '../limits.js';

export const ZIP_METHOD_STORED = 0;
export const ZIP_METHOD_DEFLATE = 8;

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;

const LOCAL_HEADER_BYTES = 30;
const CENTRAL_HEADER_BYTES = 46;
const EOCD_BYTES = 22;
const ZIP64_LOCATOR_BYTES = 20;
const ZIP64_EOCD_BYTES = 56;
const ZIP64_EXTRA_ID = 0x0001;

const U16_SATURATED = 0xffff;
const U32_SATURATED = 0xffffffff;

/** General-purpose flag bits (APPNOTE §4.4.4). */
const FLAG_ENCRYPTED = 0x0001;
const FLAG_STRONG_ENCRYPTION = 0x0040;

/** Central-directory bytes held in memory at once while parsing it. */
const CENTRAL_WINDOW_BYTES = 1024 * 1024;
/** Compressed bytes handed to the inflater per step: bounds its output per step (~1032:1 max ratio). */
const INFLATE_INPUT_BYTES = 16 * 1024;

export interface ZipEntry {
  /** Position in the central directory. */
  readonly index: number;
  readonly name: string;
  readonly flags: number;
  readonly method: number;
  /** CRC-32 from the central directory; 0 may mean "not computed" (torch compute_crc32=False). */
  readonly crc32: number;
  readonly compressedSize: number;
  readonly uncompressedSize: number;
  readonly localHeaderOffset: number;
}

export interface ZipDirectory {
  readonly path: string;
  readonly entries: readonly ZipEntry[];
  readonly byName: ReadonlyMap<string, ZipEntry>;
  /** True when the archive ends with ZIP64 end records (every torch.save file does). */
  readonly zip64: boolean;
  readonly centralDirOffset: number;
  readonly centralDirSize: number;
}

interface EndOfCentralDirectory {
  entryCount: number;
  centralDirOffset: number;
  centralDirSize: number;
  /** First byte of the end records (ZIP64 record or classic EOCD): the central directory ends before it. */
  endRecordsOffset: number;
  zip64: boolean;
}

/** Byte offsets of each entry's data, resolved from its local header once, per directory. */
const dataOffsets = new WeakMap<ZipEntry, number>();
/** The directory each entry belongs to, for range checks against the central directory. */
const directoryOf = new WeakMap<ZipEntry, ZipDirectory>();

/** Reads the end records and the central directory; validates every entry's name, flags and method. */
export async function readZipDirectory(file: FileSource): Promise<ZipDirectory> {
  const end = await readEndRecords(file);
  const entries = await readCentralDirectory(file, end);
  const byName = new Map<string, ZipEntry>();
  for (const entry of entries) {
    if (byName.has(entry.name)) {
      fail(ErrorCode.E_ZIP_DUPLICATE_ENTRY, file.path, `zip entry "${entry.name}" appears twice in the central directory (expected unique names).`, {
        data: { name: entry.name },
      });
    }
    byName.set(entry.name, entry);
  }
  const directory: ZipDirectory = {
    path: file.path,
    entries,
    byName,
    zip64: end.zip64,
    centralDirOffset: end.centralDirOffset,
    centralDirSize: end.centralDirSize,
  };
  for (const entry of entries) directoryOf.set(entry, directory);
  return directory;
}

// ------------------------------------------------------------------------------------------------
// End records

async function readEndRecords(file: FileSource): Promise<EndOfCentralDirectory> {
  const eocdOffset = await findEocdOffset(file);
  const locator = await readZip64Locator(file, eocdOffset);
  if (locator !== undefined) return readZip64End(file, locator);
  return readClassicEnd(file, eocdOffset);
}

async function findEocdOffset(file: FileSource): Promise<number> {
  if (file.size < EOCD_BYTES) {
    fail(ErrorCode.E_ZIP_EOCD, file.path, `file of ${file.size} bytes is too small for a zip end record (expected at least ${EOCD_BYTES}).`);
  }
  const tailLength = Math.min(file.size, MAX_EOCD_SEARCH_BYTES);
  const tailStart = file.size - tailLength;
  const tail = await file.read(tailStart, tailLength, 'zip end-of-central-directory search window');
  const at = findEocd(tail);
  if (at < 0) {
    fail(ErrorCode.E_ZIP_EOCD, file.path, `no zip end-of-central-directory record (PK\\5\\6) in the last ${tailLength} bytes (expected one).`, {
      hint: 'The file is truncated or is not a zip archive.',
    });
  }
  return tailStart + at;
}

/** The classic EOCD alone; saturated fields there mean a ZIP64 locator should have preceded it. */
async function readClassicEnd(file: FileSource, eocdOffset: number): Promise<EndOfCentralDirectory> {
  const v = view(await file.read(eocdOffset, EOCD_BYTES, 'zip end-of-central-directory record'));
  const diskNumber = v.getUint16(4, true);
  const centralDisk = v.getUint16(6, true);
  const entriesOnDisk = v.getUint16(8, true);
  const entryCount = v.getUint16(10, true);
  const centralDirSize = v.getUint32(12, true);
  const centralDirOffset = v.getUint32(16, true);
  const saturated =
    entryCount === U16_SATURATED || entriesOnDisk === U16_SATURATED || centralDirSize === U32_SATURATED || centralDirOffset === U32_SATURATED;
  if (saturated) {
    fail(
      ErrorCode.E_ZIP_ZIP64,
      file.path,
      `zip end record has saturated fields (entries ${entryCount}, central directory ${centralDirSize} bytes at ${centralDirOffset}) but no ZIP64 locator before it at byte ${eocdOffset - ZIP64_LOCATOR_BYTES} (expected one).`,
    );
  }
  if (diskNumber !== 0 || centralDisk !== 0 || entriesOnDisk !== entryCount) {
    fail(ErrorCode.E_ZIP_EOCD, file.path, `zip end record describes a multi-disk archive (disk ${diskNumber}, central directory disk ${centralDisk}; expected a single disk).`);
  }
  return { entryCount, centralDirOffset, centralDirSize, endRecordsOffset: eocdOffset, zip64: false };
}

/** Last `PK\5\6` whose comment length fits inside the window. */
function findEocd(tail: Uint8Array): number {
  const v = view(tail);
  for (let i = tail.length - EOCD_BYTES; i >= 0; i--) {
    if (v.getUint32(i, true) !== SIG_EOCD) continue;
    const commentLength = v.getUint16(i + 20, true);
    if (i + EOCD_BYTES + commentLength <= tail.length) return i;
  }
  return -1;
}

/** Returns the ZIP64 end record's offset when a locator sits right before the EOCD. */
async function readZip64Locator(file: FileSource, eocdOffset: number): Promise<number | undefined> {
  const at = eocdOffset - ZIP64_LOCATOR_BYTES;
  if (at < 0) return undefined;
  const bytes = await file.read(at, ZIP64_LOCATOR_BYTES, 'ZIP64 end-of-central-directory locator');
  const v = view(bytes);
  if (v.getUint32(0, true) !== SIG_ZIP64_LOCATOR) return undefined;
  const record = readU64(v, 8, file.path, 'ZIP64 end record offset');
  if (record + ZIP64_EOCD_BYTES > at) {
    fail(ErrorCode.E_ZIP_ZIP64, file.path, `ZIP64 locator points at byte ${record}, which leaves no room for a ${ZIP64_EOCD_BYTES}-byte ZIP64 end record before the locator at ${at} (expected a record there).`);
  }
  return record;
}

async function readZip64End(file: FileSource, recordOffset: number): Promise<EndOfCentralDirectory> {
  const bytes = await file.read(recordOffset, ZIP64_EOCD_BYTES, 'ZIP64 end-of-central-directory record');
  const v = view(bytes);
  const signature = v.getUint32(0, true);
  if (signature !== SIG_ZIP64_EOCD) {
    fail(ErrorCode.E_ZIP_ZIP64, file.path, `ZIP64 locator points at byte ${recordOffset}, which holds signature 0x${hex(signature)} (expected the ZIP64 end record 0x${hex(SIG_ZIP64_EOCD)}).`);
  }
  const diskNumber = v.getUint32(16, true);
  const centralDisk = v.getUint32(20, true);
  const entriesOnDisk = readU64(v, 24, file.path, 'ZIP64 entries on disk');
  const entryCount = readU64(v, 32, file.path, 'ZIP64 entry count');
  const centralDirSize = readU64(v, 40, file.path, 'ZIP64 central directory size');
  const centralDirOffset = readU64(v, 48, file.path, 'ZIP64 central directory offset');
  if (diskNumber !== 0 || centralDisk !== 0 || entriesOnDisk !== entryCount) {
    fail(ErrorCode.E_ZIP_ZIP64, file.path, `ZIP64 end record describes a multi-disk archive (disk ${diskNumber}, central directory disk ${centralDisk}; expected a single disk).`);
  }
  return { entryCount, centralDirOffset, centralDirSize, endRecordsOffset: recordOffset, zip64: true };
}

// ------------------------------------------------------------------------------------------------
// Central directory

async function readCentralDirectory(file: FileSource, end: EndOfCentralDirectory): Promise<ZipEntry[]> {
  if (end.entryCount > MAX_ZIP_ENTRIES) {
    fail(ErrorCode.E_LIMIT, file.path, `zip declares ${end.entryCount} entries (expected at most MAX_ZIP_ENTRIES = ${MAX_ZIP_ENTRIES}).`, {
      data: { entries: end.entryCount, limit: MAX_ZIP_ENTRIES },
    });
  }
  const cdEnd = end.centralDirOffset + end.centralDirSize;
  if (cdEnd > end.endRecordsOffset) {
    fail(
      ErrorCode.E_ZIP_CENTRAL_DIR,
      file.path,
      `central directory spans bytes ${end.centralDirOffset}..${cdEnd}, past the end records at byte ${end.endRecordsOffset} (expected it to end before them).`,
      { hint: 'The file is truncated or corrupt.', data: { centralDirOffset: end.centralDirOffset, centralDirSize: end.centralDirSize } },
    );
  }
  if (end.entryCount * CENTRAL_HEADER_BYTES > end.centralDirSize) {
    fail(ErrorCode.E_ZIP_CENTRAL_DIR, file.path, `central directory of ${end.centralDirSize} bytes cannot hold the ${end.entryCount} entries the end record declares (expected at least ${end.entryCount * CENTRAL_HEADER_BYTES} bytes).`);
  }
  const window = new CentralWindow(file, end.centralDirOffset, cdEnd);
  const entries: ZipEntry[] = [];
  let position = end.centralDirOffset;
  for (let index = 0; index < end.entryCount; index++) {
    const { entry, length } = await readCentralEntry(file, window, position, index, end);
    entries.push(entry);
    position += length;
  }
  return entries;
}

/** A moving window over the central directory so that a huge directory is never held whole. */
class CentralWindow {
  private start = 0;
  private bytes: Uint8Array = new Uint8Array(0);

  constructor(
    private readonly file: FileSource,
    private readonly cdStart: number,
    private readonly cdEnd: number,
  ) {}

  /** Returns a view whose byte 0 is `position`, valid for at least `length` bytes. */
  async at(position: number, length: number, what: string): Promise<DataView> {
    if (position + length > this.cdEnd) {
      fail(ErrorCode.E_ZIP_CENTRAL_DIR, this.file.path, `${what} spans bytes ${position}..${position + length}, past the end of the central directory at ${this.cdEnd} (central directory starts at ${this.cdStart}).`, {
        hint: 'The central directory is truncated or its size field is wrong.',
      });
    }
    if (position < this.start || position + length > this.start + this.bytes.length) {
      const windowLength = Math.min(Math.max(length, CENTRAL_WINDOW_BYTES), this.cdEnd - position);
      this.bytes = await this.file.read(position, windowLength, 'zip central directory');
      this.start = position;
    }
    return new DataView(this.bytes.buffer, this.bytes.byteOffset + (position - this.start), length);
  }
}

async function readCentralEntry(
  file: FileSource,
  window: CentralWindow,
  position: number,
  index: number,
  end: EndOfCentralDirectory,
): Promise<{ entry: ZipEntry; length: number }> {
  const head = await window.at(position, CENTRAL_HEADER_BYTES, `central directory entry ${index}`);
  const signature = head.getUint32(0, true);
  if (signature !== SIG_CENTRAL) {
    fail(ErrorCode.E_ZIP_CENTRAL_DIR, file.path, `central directory entry ${index} at byte ${position} has signature 0x${hex(signature)} (expected 0x${hex(SIG_CENTRAL)}).`);
  }
  const flags = head.getUint16(8, true);
  const method = head.getUint16(10, true);
  const crc = head.getUint32(16, true);
  const nameLength = head.getUint16(28, true);
  const extraLength = head.getUint16(30, true);
  const commentLength = head.getUint16(32, true);
  const length = CENTRAL_HEADER_BYTES + nameLength + extraLength + commentLength;

  const whole = await window.at(position, length, `central directory entry ${index}`);
  const nameBytes = new Uint8Array(whole.buffer, whole.byteOffset + CENTRAL_HEADER_BYTES, nameLength);
  const name = decodeName(nameBytes, file.path, index);
  const extra = new DataView(whole.buffer, whole.byteOffset + CENTRAL_HEADER_BYTES + nameLength, extraLength);
  const sizes = resolveZip64Fields(
    {
      uncompressedSize: head.getUint32(24, true),
      compressedSize: head.getUint32(20, true),
      localHeaderOffset: head.getUint32(42, true),
    },
    extra,
    file.path,
    name,
  );
  const entry: ZipEntry = { index, name, flags, method, crc32: crc, ...sizes };
  validateEntry(entry, file, end);
  return { entry, length };
}

interface EntryNumbers {
  uncompressedSize: number;
  compressedSize: number;
  localHeaderOffset: number;
}

/** Replaces saturated 32-bit fields by the u64 values of the 0x0001 extra, in APPNOTE order. */
function resolveZip64Fields(fields: EntryNumbers, extra: DataView, file: string, name: string): EntryNumbers {
  const order: (keyof EntryNumbers)[] = ['uncompressedSize', 'compressedSize', 'localHeaderOffset'];
  const needed = order.filter((k) => fields[k] === U32_SATURATED);
  if (needed.length === 0) return fields;
  const data = findExtraField(extra, ZIP64_EXTRA_ID);
  if (data === undefined || data.byteLength < needed.length * 8) {
    fail(
      ErrorCode.E_ZIP_ZIP64,
      file,
      `zip entry "${name}" has saturated fields (${needed.join(', ')}) but its ZIP64 extra holds ${data?.byteLength ?? 0} bytes (expected at least ${needed.length * 8}).`,
    );
  }
  const resolved = { ...fields };
  needed.forEach((k, i) => {
    resolved[k] = readU64(data, i * 8, file, `ZIP64 ${k} of "${name}"`);
  });
  return resolved;
}

function findExtraField(extra: DataView, id: number): DataView | undefined {
  let at = 0;
  while (at + 4 <= extra.byteLength) {
    const fieldId = extra.getUint16(at, true);
    const size = extra.getUint16(at + 2, true);
    if (at + 4 + size > extra.byteLength) return undefined;
    if (fieldId === id) return new DataView(extra.buffer, extra.byteOffset + at + 4, size);
    at += 4 + size;
  }
  return undefined;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function decodeName(bytes: Uint8Array, file: string, index: number): string {
  let name: string;
  try {
    name = utf8.decode(bytes);
  } catch {
    return fail(ErrorCode.E_ZIP_ENTRY_NAME, file, `zip entry ${index} has a name that is not valid UTF-8 (expected UTF-8 names).`);
  }
  const segments = name.split(/[\\/]/);
  const unsafe =
    name.length === 0 ||
    name.includes('\0') ||
    name.startsWith('/') ||
    name.startsWith('\\') ||
    /^[A-Za-z]:/.test(name) ||
    segments.includes('..');
  if (unsafe) {
    fail(ErrorCode.E_ZIP_ENTRY_NAME, file, `zip entry ${index} has the unsafe name ${JSON.stringify(name)} (expected a relative path without "..").`, {
      data: { name },
    });
  }
  return name;
}

function validateEntry(entry: ZipEntry, file: FileSource, end: EndOfCentralDirectory): void {
  const what = `zip entry "${entry.name}"`;
  if (entry.flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION)) {
    fail(ErrorCode.E_ZIP_ENCRYPTED, file.path, `${what} is encrypted (flags 0x${entry.flags.toString(16)}; expected no encryption bit).`);
  }
  if (entry.method !== ZIP_METHOD_STORED && entry.method !== ZIP_METHOD_DEFLATE) {
    fail(ErrorCode.E_ZIP_METHOD, file.path, `${what} uses compression method ${entry.method} (expected 0 = stored or 8 = deflate).`, {
      data: { name: entry.name, method: entry.method },
    });
  }
  if (entry.method === ZIP_METHOD_STORED && entry.compressedSize !== entry.uncompressedSize) {
    fail(ErrorCode.E_ZIP_CENTRAL_DIR, file.path, `${what} is stored but its compressed size ${entry.compressedSize} differs from its size ${entry.uncompressedSize} (expected equal).`);
  }
  // The local header and data must lie before the central directory; its exact length is known
  // only once the local header is read (see entryDataOffset), so check the minimum here.
  const minimumEnd = entry.localHeaderOffset + LOCAL_HEADER_BYTES + entry.compressedSize;
  if (minimumEnd > file.size) {
    fail(ErrorCode.E_TRUNCATED, file.path, `${what} spans at least bytes ${entry.localHeaderOffset}..${minimumEnd}, past the end of the file (${file.size} bytes).`, {
      hint: 'The file is truncated or corrupt.',
      data: { name: entry.name, localHeaderOffset: entry.localHeaderOffset, compressedSize: entry.compressedSize, size: file.size },
    });
  }
  if (minimumEnd > end.centralDirOffset) {
    fail(ErrorCode.E_ZIP_CENTRAL_DIR, file.path, `${what} spans at least bytes ${entry.localHeaderOffset}..${minimumEnd}, overlapping the central directory at ${end.centralDirOffset} (expected it to end before).`);
  }
}

// ------------------------------------------------------------------------------------------------
// Entry data

/**
 * Absolute file offset of the entry's data: local header + the LOCAL name and extra lengths
 * (torch's FB padding extra exists only in the local header; inline_container.cc getRecordOffset).
 */
export async function entryDataOffset(file: FileSource, entry: ZipEntry): Promise<number> {
  const cached = dataOffsets.get(entry);
  if (cached !== undefined) return cached;
  const header = await file.read(entry.localHeaderOffset, LOCAL_HEADER_BYTES, `local header of zip entry "${entry.name}"`);
  const v = view(header);
  const signature = v.getUint32(0, true);
  if (signature !== SIG_LOCAL) {
    fail(ErrorCode.E_ZIP_LOCAL_HEADER, file.path, `local header of zip entry "${entry.name}" at byte ${entry.localHeaderOffset} has signature 0x${hex(signature)} (expected 0x${hex(SIG_LOCAL)}).`);
  }
  const start = entry.localHeaderOffset + LOCAL_HEADER_BYTES + v.getUint16(26, true) + v.getUint16(28, true);
  const end = start + entry.compressedSize;
  const limit = directoryOf.get(entry)?.centralDirOffset ?? file.size;
  if (end > file.size) {
    fail(ErrorCode.E_TRUNCATED, file.path, `data of zip entry "${entry.name}" spans bytes ${start}..${end}, past the end of the file (${file.size} bytes).`, {
      hint: 'The file is truncated or corrupt.',
    });
  }
  if (end > limit) {
    fail(ErrorCode.E_ZIP_LOCAL_HEADER, file.path, `data of zip entry "${entry.name}" spans bytes ${start}..${end}, overlapping the central directory at ${limit} (expected it to end before).`);
  }
  dataOffsets.set(entry, start);
  return start;
}

/**
 * Reads a whole entry into memory, inflating DEFLATE entries with a hard output cap (deflate-bomb
 * guard) and checking the CRC-32 when the stored one is non-zero.
 */
export async function readSmallEntry(file: FileSource, entry: ZipEntry, maxBytes: number): Promise<Uint8Array> {
  if (entry.uncompressedSize > maxBytes) {
    fail(ErrorCode.E_LIMIT, file.path, `zip entry "${entry.name}" holds ${entry.uncompressedSize} bytes (expected at most ${maxBytes} for this record).`, {
      data: { name: entry.name, size: entry.uncompressedSize, limit: maxBytes },
    });
  }
  const start = await entryDataOffset(file, entry);
  const bytes =
    entry.method === ZIP_METHOD_STORED
      ? await file.read(start, entry.compressedSize, `zip entry "${entry.name}"`)
      : await inflateWhole(file, entry, start, maxBytes);
  checkCrc(file, entry, bytes);
  return bytes;
}

/** Reads `length` bytes at `offset` of the entry's uncompressed content. */
export async function readEntryRange(file: FileSource, entry: ZipEntry, offset: number, length: number): Promise<Uint8Array> {
  return openEntryReader(file, entry).read(offset, length);
}

export interface EntryReader {
  read(offset: number, length: number): Promise<Uint8Array>;
}

/**
 * A reader for many ranges of one entry. Stored entries are read in place; DEFLATE entries are
 * inflated from the start and the inflater is kept between reads, so ascending reads (the way
 * tensors are streamed) cost one pass in total. Memory stays bounded by one read plus one
 * inflater step.
 */
export function openEntryReader(file: FileSource, entry: ZipEntry): EntryReader {
  if (entry.method === ZIP_METHOD_STORED) {
    return {
      async read(offset, length) {
        checkEntryRange(file, entry, offset, length);
        const start = await entryDataOffset(file, entry);
        return file.read(start + offset, length, `zip entry "${entry.name}"`);
      },
    };
  }
  return new InflatingReader(file, entry);
}

function checkEntryRange(file: FileSource, entry: ZipEntry, offset: number, length: number): void {
  const valid = Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0;
  if (!valid || offset + length > entry.uncompressedSize) {
    fail(ErrorCode.E_TRUNCATED, file.path, `range ${offset}+${length} of zip entry "${entry.name}" is past its end (${entry.uncompressedSize} bytes).`, {
      data: { name: entry.name, offset, length, size: entry.uncompressedSize },
    });
  }
}

/** Streams a DEFLATE entry forward; restarts from the beginning for a read behind its position. */
class InflatingReader implements EntryReader {
  private inflater!: Inflate;
  /** Compressed bytes consumed so far. */
  private inputDone = 0;
  /** Uncompressed position of the first byte in `pending`. */
  private outputPosition = 0;
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;

  constructor(
    private readonly file: FileSource,
    private readonly entry: ZipEntry,
  ) {
    this.restart();
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    checkEntryRange(this.file, this.entry, offset, length);
    if (offset < this.outputPosition) this.restart();
    const out = new Uint8Array(length);
    let filled = 0;
    while (filled < length) {
      if (this.pendingBytes === 0) await this.step();
      filled += this.take(offset + filled, out, filled, length - filled);
    }
    return out;
  }

  private restart(): void {
    this.inflater = new Inflate((chunk) => {
      this.pending.push(chunk);
      this.pendingBytes += chunk.length;
    });
    this.inputDone = 0;
    this.outputPosition = 0;
    this.pending = [];
    this.pendingBytes = 0;
  }

  /** Copies what `pending` holds for position `from` into `out`, discarding bytes before it. */
  private take(from: number, out: Uint8Array, at: number, want: number): number {
    let copied = 0;
    while (this.pending.length > 0 && copied < want) {
      const chunk = this.pending[0];
      const skip = Math.min(chunk.length, from + copied - this.outputPosition);
      const n = Math.min(chunk.length - skip, want - copied);
      out.set(chunk.subarray(skip, skip + n), at + copied);
      copied += n;
      this.consume(skip + n);
    }
    return copied;
  }

  private consume(used: number): void {
    const chunk = this.pending[0];
    if (used >= chunk.length) this.pending.shift();
    else this.pending[0] = chunk.subarray(used);
    this.outputPosition += used;
    this.pendingBytes -= used;
  }

  private async step(): Promise<void> {
    const total = this.entry.compressedSize;
    if (this.inputDone >= total) {
      fail(ErrorCode.E_ZIP_INFLATE, this.file.path, `zip entry "${this.entry.name}" inflates to ${this.outputPosition + this.pendingBytes} bytes (expected ${this.entry.uncompressedSize}).`);
    }
    const start = await entryDataOffset(this.file, this.entry);
    const n = Math.min(INFLATE_INPUT_BYTES, total - this.inputDone);
    const input = await this.file.read(start + this.inputDone, n, `zip entry "${this.entry.name}"`);
    this.inputDone += n;
    pushInflate(this.inflater, input, this.inputDone === total, this.file.path, this.entry);
  }
}

async function inflateWhole(file: FileSource, entry: ZipEntry, start: number, maxBytes: number): Promise<Uint8Array> {
  const expected = entry.uncompressedSize;
  const parts: Uint8Array[] = [];
  let produced = 0;
  const inflater = new Inflate((chunk) => {
    produced += chunk.length;
    // Keep nothing past the declared size: the check below fails the read after this step.
    if (produced <= expected) parts.push(chunk);
  });
  for (let done = 0; done < entry.compressedSize; ) {
    const n = Math.min(INFLATE_INPUT_BYTES, entry.compressedSize - done);
    const input = await file.read(start + done, n, `zip entry "${entry.name}"`);
    done += n;
    pushInflate(inflater, input, done === entry.compressedSize, file.path, entry);
    if (produced > maxBytes) {
      fail(ErrorCode.E_LIMIT, file.path, `zip entry "${entry.name}" inflates past ${maxBytes} bytes (expected at most ${maxBytes}; it declares ${expected}).`, {
        hint: 'This looks like a deflate bomb.',
        data: { name: entry.name, limit: maxBytes, declared: expected },
      });
    }
    if (produced > expected) {
      fail(ErrorCode.E_ZIP_INFLATE, file.path, `zip entry "${entry.name}" inflates past its declared size (more than ${expected} bytes; expected exactly ${expected}).`);
    }
  }
  if (produced !== expected) {
    fail(ErrorCode.E_ZIP_INFLATE, file.path, `zip entry "${entry.name}" inflates to ${produced} bytes (expected ${expected}).`);
  }
  return concat(parts, produced);
}

function pushInflate(inflater: Inflate, input: Uint8Array, final: boolean, file: string, entry: ZipEntry): void {
  try {
    inflater.push(input, final);
  } catch (e) {
    fail(ErrorCode.E_ZIP_INFLATE, file, `zip entry "${entry.name}" is not valid DEFLATE data (${(e as Error).message}).`, { cause: e });
  }
}

function checkCrc(file: FileSource, entry: ZipEntry, bytes: Uint8Array): void {
  if (entry.crc32 === 0) return; // torch can skip CRCs (compute_crc32=False) and then writes 0
  const actual = crc32(bytes) >>> 0;
  if (actual !== entry.crc32 >>> 0) {
    fail(ErrorCode.E_ZIP_CRC, file.path, `zip entry "${entry.name}" has CRC-32 0x${hex(actual)} (expected 0x${hex(entry.crc32)} from the central directory).`, {
      data: { name: entry.name, actual, expected: entry.crc32 },
    });
  }
}

// ------------------------------------------------------------------------------------------------
// Small helpers

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** u64 LE as a Number; values past 2^53 cannot address a real file and are rejected. */
function readU64(v: DataView, at: number, file: string, what: string): number {
  const value = v.getBigUint64(at, true);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
    fail(ErrorCode.E_ZIP_ZIP64, file, `${what} is ${value} (expected at most 2^53 - 1).`);
  }
  return Number(value);
}

function hex(n: number): string {
  return (n >>> 0).toString(16).padStart(8, '0');
}

function concat(parts: Uint8Array[], length: number): Uint8Array {
  if (parts.length === 1 && parts[0].length === length) return parts[0];
  const out = new Uint8Array(length);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
