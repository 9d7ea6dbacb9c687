/** A folder of checkpoints of every kind a batch meets: good, corrupt, hostile, unsupported, not a checkpoint. */
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { sharedFixture, torchFixture } from './paths.js';

export const GOOD = ['vae.safetensors', 'model.ckpt'] as const;

/** Input name → the error code its conversion must report. */
export const BAD: Readonly<Record<string, string>> = {
  'truncated.ckpt': 'E_ZIP_EOCD',
  'hostile-system.pt': 'E_UNSAFE_PICKLE',
  'complex.pt': 'E_TENSOR_DTYPE',
  'notes.bin': 'E_UNKNOWN_FORMAT',
};

export async function writeMixedInputs(dir: string): Promise<void> {
  await mkdir(join(dir, 'nested'), { recursive: true });
  await copyFile(sharedFixture('cases/vae/vae.safetensors'), join(dir, 'vae.safetensors'));
  await copyFile(sharedFixture('cases/sd1/model.ckpt'), join(dir, 'nested', 'model.ckpt'));
  const ckpt = await readFile(sharedFixture('cases/sd1/model.ckpt'));
  await writeFile(join(dir, 'truncated.ckpt'), ckpt.subarray(0, Math.floor(ckpt.length / 2)));
  await copyFile(torchFixture('hostile-system.pt'), join(dir, 'hostile-system.pt'));
  await copyFile(torchFixture('complex.pt'), join(dir, 'nested', 'complex.pt'));
  await writeFile(join(dir, 'notes.bin'), 'not a checkpoint\n');
  await writeFile(join(dir, 'README.txt'), 'ignored: not a checkpoint extension\n');
}
