/**
 * Opens any supported checkpoint: sniffs the format (detect.ts), then hands the file to its reader.
 * The returned TensorSource owns the file and closes it in `close()`; on failure the file is
 * closed here.
 *
 * Spec: docs/formats.md §1 (recognition), §2 (torch zip), §3 (legacy torch), §5 (safetensors).
 */
import { FileSource } from '../io/file-source.js';
import { detectFormat } from './detect.js';
import { openSafetensors } from './safetensors.js';
import type { TensorSource } from './tensor-source.js';
import { openTorchLegacy } from './torch-legacy.js';
import { openTorchZip } from './torch-zip.js';

export interface OpenCheckpointOptions {
  /**
   * Read torch files whose pickle imports globals on the dangerous list. Nothing is ever
   * executed either way; this only turns the refusal (E_UNSAFE_PICKLE) into a report entry.
   */
  allowUnsafePickle?: boolean;
}

export async function openCheckpoint(path: string, opts: OpenCheckpointOptions = {}): Promise<TensorSource> {
  const file = await FileSource.open(path);
  try {
    switch (await detectFormat(file)) {
      case 'torch-zip':
        return await openTorchZip(file, opts);
      case 'torch-legacy':
        return await openTorchLegacy(file, opts);
      case 'safetensors':
        return await openSafetensors(file);
    }
  } catch (e) {
    await file.close().catch(() => undefined);
    throw e;
  }
}
