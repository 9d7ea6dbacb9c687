/**
 * Recognises a checkpoint by its first bytes, never by its extension (`.ckpt`, `.pt`, `.pth` and
 * `.bin` are each either torch format; safetensors files get renamed).
 *
 * Spec: docs/formats.md §1 "Recognising the input file", §3.5 (tar and preview archives).
 * Reference: PyTorch `torch/serialization.py` (`_is_zipfile` checks only the first 4 bytes,
 * `MAGIC_NUMBER`), `caffe2/serialize/inline_container.cc` `init()` (PYTORCH1).
 */
import { ErrorCode, fail } from '../errors.js';
import type { FileSource } from '../io/file-source.js';
import type { InputFormat } from './tensor-source.js';

export type DetectedFormat = InputFormat;

/** Enough for every signature below (tar's `ustar` sits at 257). */
const SNIFF_BYTES = 512;

const ZIP_LOCAL_SIGNATURE = [0x50, 0x4b, 0x03, 0x04];
/** `0x1950A86A20F9469CFC6C` as the 10 little-endian bytes of a pickle LONG1 (torch MAGIC_NUMBER). */
const LEGACY_MAGIC = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const PICKLE_PROTO = 0x80;
const PICKLE_FRAME = 0x95;
const PICKLE_LONG1 = 0x8a;
const TAR_MAGIC_OFFSET = 257;
const JSON_START = new Set([0x7b, 0x20, 0x09, 0x0a, 0x0d]); // '{' and JSON whitespace

export async function detectFormat(file: FileSource): Promise<DetectedFormat> {
  if (file.size === 0) {
    fail(ErrorCode.E_UNKNOWN_FORMAT, file.path, 'file is empty (expected a checkpoint).');
  }
  const head = await file.read(0, Math.min(file.size, SNIFF_BYTES), 'file signature');

  if (startsWith(head, 0, ZIP_LOCAL_SIGNATURE)) return 'torch-zip';
  rejectKnownUnsupported(file, head);
  if (hasLegacyMagic(head)) return 'torch-legacy';
  // Before the pickle rejection below: a safetensors header length such as 0x280 also starts 80 02.
  if (looksLikeSafetensors(head, file.size)) return 'safetensors';
  if (isTorchPickleStart(head)) rejectPlainPickle(file, head);

  fail(
    ErrorCode.E_UNKNOWN_FORMAT,
    file.path,
    `first bytes ${describeBytes(head)} match no supported format (expected a torch zip "PK\\3\\4", a legacy torch pickle "80 02 8A 0A 6C FC ...", or a safetensors header).`,
    { data: { firstBytes: hexBytes(head.subarray(0, 16)) } },
  );
}

/** Formats we recognise by name so that the message can say what to do. */
function rejectKnownUnsupported(file: FileSource, head: Uint8Array): void {
  if (startsWith(head, TAR_MAGIC_OFFSET, ascii('ustar'))) {
    fail(ErrorCode.E_TAR_FORMAT, file.path, 'is a tar archive ("ustar" at byte 257): the pre-2018 PyTorch tar format is not supported.', {
      hint: 'Re-save it with a recent torch (torch.load + torch.save) or convert it to safetensors first.',
    });
  }
  if (startsWith(head, 0, ascii('PYTORCH1'))) {
    fail(ErrorCode.E_UNKNOWN_FORMAT, file.path, 'starts with "PYTORCH1": an archive from the PyTorch preview release, which torch itself no longer reads.', {
      hint: 'Re-save it with a recent torch, or convert it to safetensors first.',
      data: { kind: 'pytorch-preview' },
    });
  }
  if (startsWith(head, 0, ascii('GGUF'))) {
    fail(ErrorCode.E_UNKNOWN_FORMAT, file.path, 'is a GGUF file ("GGUF" at byte 0), which this tool does not convert.', {
      hint: 'Use the original .ckpt or .safetensors checkpoint.',
      data: { kind: 'gguf' },
    });
  }
}

/**
 * Legacy torch.save files open with a pickle holding only the LONG1 magic number. Protocol 4/5
 * writers put a FRAME opcode (0x95 + u64 length) between PROTO and the LONG1.
 */
function magicOffset(head: Uint8Array): number {
  return head[2] === PICKLE_FRAME ? 11 : 2;
}

function isTorchPickleStart(head: Uint8Array): boolean {
  return head[0] === PICKLE_PROTO && head[1] >= 2 && head[1] <= 5;
}

function hasLegacyMagic(head: Uint8Array): boolean {
  const at = magicOffset(head);
  return isTorchPickleStart(head) && head[at] === PICKLE_LONG1 && head[at + 1] === LEGACY_MAGIC.length && startsWith(head, at + 2, LEGACY_MAGIC);
}

/** A pickle of a protocol torch.save uses, but without its magic number. */
function rejectPlainPickle(file: FileSource, head: Uint8Array): never {
  const at = magicOffset(head);
  return fail(
    ErrorCode.E_LEGACY_MAGIC,
    file.path,
    `is a pickle (protocol ${head[1]}) without the torch.save magic number: bytes ${hexBytes(head.subarray(at, at + 12))} at offset ${at} (expected 8A 0A ${hexBytes(Uint8Array.from(LEGACY_MAGIC))}).`,
    { hint: 'It was written by plain pickle, not torch.save; it is not a checkpoint this tool reads.' },
  );
}

/** u64 LE header length N, then '{' or JSON whitespace at byte 8, and 8 + N within the file. */
function looksLikeSafetensors(head: Uint8Array, size: number): boolean {
  if (head.length < 9) return false;
  const headerLength = new DataView(head.buffer, head.byteOffset, 8).getBigUint64(0, true);
  return JSON_START.has(head[8]) && 8n + headerLength <= BigInt(size);
}

function startsWith(bytes: Uint8Array, at: number, expected: readonly number[]): boolean {
  if (at + expected.length > bytes.length) return false;
  return expected.every((b, i) => bytes[at + i] === b);
}

function ascii(s: string): number[] {
  return [...s].map((c) => c.charCodeAt(0));
}

function hexBytes(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).toUpperCase().padStart(2, '0')).join(' ');
}

/** Hex plus a printable rendering, e.g. `3C 21 44 4F ... ("<!DO...")`. */
function describeBytes(head: Uint8Array): string {
  const first = head.subarray(0, 16);
  const printable = [...first].map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('');
  return `${hexBytes(first)} ("${printable}")`;
}
