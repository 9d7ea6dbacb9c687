/**
 * Reads every tensor of a checkpoint through the streaming reader and prints a checksum, the
 * bytes read and the time: a way to measure the reader's peak memory on a large file, e.g.
 *
 *   /usr/bin/time -v npx tsx scripts/read-all.ts ~/.cache/ckpt2diffusers-bench/sd15-fp32.ckpt
 */
import { createHash } from 'node:crypto';
import { openCheckpoint } from '../src/formats/open.js';

const path = process.argv[2];
if (!path) throw new Error('usage: tsx scripts/read-all.ts CHECKPOINT');
const started = Date.now();
const source = await openCheckpoint(path);
const hash = createHash('sha256');
let bytes = 0;
try {
  for (const t of source.tensors) {
    for await (const chunk of source.readChunks(t.name)) {
      hash.update(chunk);
      bytes += chunk.length;
    }
  }
} finally {
  await source.close();
}
const seconds = (Date.now() - started) / 1000;
console.log(`${source.format} ${source.tensors.length} tensors, ${(bytes / 1e9).toFixed(2)} GB in ${seconds.toFixed(1)} s, sha256 ${hash.digest('hex').slice(0, 16)}`);
console.log(`peak RSS (process.resourceUsage): ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MB`);
