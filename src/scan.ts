/**
 * `scan`: every global a checkpoint's pickles import, classified allowed / unknown / dangerous.
 * It walks opcodes only (pickle-scan.ts), so it reports on pickles the reader would refuse to
 * interpret, and it never builds, imports or calls anything.
 */
import { detectFormat } from './formats/detect.js';
import { mergeGlobals, scanPickle } from './formats/pickle-scan.js';
import type { InputFormat, PickleGlobal, SafetyReport } from './formats/tensor-source.js';
import { readSmallEntry, readZipDirectory } from './formats/zip.js';
import { FileSource } from './io/file-source.js';
import { MAX_PICKLE_BYTES } from './limits.js';

export interface ScannedPickle {
  /** Zip entry name, or `pickle <n>` for the pickles of a legacy file. */
  where: string;
  protocol: number;
  bytes: number;
}

export interface ScanResult {
  /** JSON schema version of this report. */
  schema: 1;
  path: string;
  format: InputFormat;
  pickles: ScannedPickle[];
  safety: SafetyReport;
}

/** The five consecutive pickles of a legacy torch.save file (formats.md §3.1). */
const LEGACY_PICKLE_COUNT = 5;

export async function scanFile(path: string): Promise<ScanResult> {
  const file = await FileSource.open(path);
  try {
    const format = await detectFormat(file);
    const scans = format === 'torch-zip' ? await scanZip(file) : format === 'torch-legacy' ? await scanLegacy(file) : [];
    const globals = mergeGlobals(scans.flatMap((s) => s.globals));
    return {
      schema: 1,
      path,
      format,
      pickles: scans.map(({ where, protocol, bytes }) => ({ where, protocol, bytes })),
      safety: { hasPickle: scans.length > 0, globals, dangerous: globals.some((g) => g.safety === 'dangerous') },
    };
  } finally {
    await file.close();
  }
}

interface PickleFindings extends ScannedPickle {
  globals: PickleGlobal[];
}

async function scanZip(file: FileSource): Promise<PickleFindings[]> {
  const dir = await readZipDirectory(file);
  // Every pickle in the archive: data.pkl, and constants.pkl or others in TorchScript-like files.
  const pickles = dir.entries.filter((e) => e.name.endsWith('.pkl'));
  const out: PickleFindings[] = [];
  for (const entry of pickles) {
    const bytes = await readSmallEntry(file, entry, MAX_PICKLE_BYTES);
    const scan = scanPickle(bytes, `${file.path}:${entry.name}`);
    out.push({ where: entry.name, protocol: scan.protocol, bytes: bytes.length, globals: scan.globals });
  }
  return out;
}

async function scanLegacy(file: FileSource): Promise<PickleFindings[]> {
  // The pickles precede the raw storage bytes; together they fit in the pickle size limit.
  const head = await file.read(0, Math.min(file.size, MAX_PICKLE_BYTES), 'legacy pickles');
  const out: PickleFindings[] = [];
  let start = 0;
  for (let n = 1; n <= LEGACY_PICKLE_COUNT; n++) {
    const scan = scanPickle(head, file.path, { start });
    out.push({ where: `pickle ${n}`, protocol: scan.protocol, bytes: scan.end - start, globals: scan.globals });
    start = scan.end;
  }
  return out;
}
