/**
 * Builds inspect inputs in temporary folders: copies of the golden Diffusers folders (with the
 * real CLIP BPE files the goldens store only digests of), sharded and pickle weights, Hugging Face
 * cache layouts.
 */
import { cp, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { createHash } from 'node:crypto';
import { main } from '../../src/cli/main.js';
import { memoryIO } from '../../src/cli/io.js';
import { loadPackagedBpe, tokenizerFiles } from '../../src/diffusers/tokenizer.js';
import { openCheckpoint } from '../../src/formats/open.js';
import { writeSafetensorsFile } from '../../src/formats/safetensors.js';
import { planShards } from '../../src/formats/shards.js';
import { writeTorchZip } from '../../src/testing/torch-zip-writer.js';
import { sharedFixture } from '../helpers/paths.js';

export async function runInspect(path: string) {
  const io = memoryIO();
  const status = await main(['inspect', path, '--json'], io);
  return { status, report: io.out ? JSON.parse(io.out) : undefined, err: io.err };
}

export async function runInspectHuman(path: string) {
  const io = memoryIO();
  const status = await main(['inspect', path], io);
  return { status, out: io.out, err: io.err };
}

const temps: string[] = [];
let tokenizer: Promise<Map<string, Uint8Array | string>> | undefined;

export async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'inspect-test-'));
  temps.push(dir);
  return dir;
}

export async function cleanTemps(): Promise<void> {
  await Promise.all(temps.splice(0).map((d) => rm(d, { recursive: true, force: true })));
}

/**
 * A copy of golden/<name>/diffusers in `into` (default: a new temp folder), with vocab.json and
 * merges.txt written into every tokenizer folder (the goldens keep only their sha256).
 */
export async function goldenCopy(name: string, into?: string): Promise<string> {
  const dir = into ?? join(await tempDir(), name);
  await cp(sharedFixture(`golden/${name}/diffusers`), dir, { recursive: true });
  tokenizer ??= loadPackagedBpe().then((bpe) => tokenizerFiles('clip-l', { bpe }));
  const files = await tokenizer;
  for (const entry of await readdir(dir)) {
    if (!entry.startsWith('tokenizer')) continue;
    await rm(join(dir, entry, '_large_files.json'), { force: true });
    for (const f of ['vocab.json', 'merges.txt']) await writeFile(join(dir, entry, f), files.get(f) as string | Uint8Array);
  }
  return dir;
}

async function tensorsOf(file: string) {
  const source = await openCheckpoint(file);
  try {
    const out = [];
    for (const t of source.tensors) out.push({ name: t.name, dtype: t.dtype, shape: t.shape, data: await source.readTensor(t.name), byteLength: t.byteLength });
    return out;
  } finally {
    await source.close();
  }
}

/** Replaces `<component>/diffusion_pytorch_model.safetensors` by two shards and their index. */
export async function shardComponent(dir: string, component: string, base: 'diffusion_pytorch_model' | 'model' = 'diffusion_pytorch_model'): Promise<{ shards: string[]; index: string }> {
  const single = join(dir, component, `${base}.safetensors`);
  const tensors = await tensorsOf(single);
  const total = tensors.reduce((s, t) => s + t.byteLength, 0);
  const plan = planShards(tensors, base, { maxShardBytes: Math.ceil(total / 2) + 1 });
  for (const f of plan.files) await writeSafetensorsFile(join(dir, component, f.fileName), f.entries);
  await writeFile(join(dir, component, plan.index!.fileName), plan.index!.json);
  await rm(single);
  return { shards: plan.files.map((f) => f.fileName), index: plan.index!.fileName };
}

/** Replaces `<component>/<base>.safetensors` by a torch.save zip `<binBase>.bin` holding the same tensors. */
export async function toPickle(dir: string, component: string, base = 'diffusion_pytorch_model', binBase = base): Promise<void> {
  const single = join(dir, component, `${base}.safetensors`);
  const tensors = await tensorsOf(single);
  const byName = new Map(tensors.map((t) => [t.name, t.data]));
  await writeTorchZip(join(dir, component, `${binBase}.bin`), tensors, {
    data: async function* (spec) {
      yield byName.get(spec.name)!;
    },
  });
  await rm(single);
}

/**
 * Lays `folder` out as the Hugging Face cache does: `models--org--name/blobs/<sha256>`,
 * `snapshots/<hash>/<path>` links to the blobs, `refs/main` naming the snapshot.
 */
export async function hfCache(folder: string, repo: string): Promise<{ root: string; snapshot: string; blobs: Map<string, string> }> {
  const root = join(await tempDir(), `models--${repo.replace('/', '--')}`);
  const hash = 'a'.repeat(40);
  const snapshot = join(root, 'snapshots', hash);
  await mkdir(join(root, 'blobs'), { recursive: true });
  await mkdir(join(root, 'refs'), { recursive: true });
  await writeFile(join(root, 'refs', 'main'), hash);
  const blobs = new Map<string, string>();
  const walk = async (dir: string): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const full = join(dir, e.name);
      if (e.isDirectory()) {
        await walk(full);
        continue;
      }
      const data = await readFile(full);
      const blob = join(root, 'blobs', createHash('sha256').update(data).digest('hex'));
      await writeFile(blob, data);
      const rel = relative(folder, full);
      const link = join(snapshot, rel);
      await mkdir(join(link, '..'), { recursive: true });
      await symlink(relative(join(link, '..'), blob), link);
      blobs.set(rel, blob);
    }
  };
  await walk(folder);
  return { root, snapshot, blobs };
}
