import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, utimes, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { cleanStaleTempFolders, liveTempFolders, OWNER_FILE, prepareOutputFolder, removeLiveTempFolders } from '../../src/diffusers/output-folder.js';

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'leftovers-'));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

async function leftover(name: string, owner?: object): Promise<string> {
  const dir = join(root, name);
  await mkdir(dir);
  if (owner) await writeFile(join(dir, OWNER_FILE), JSON.stringify(owner));
  return dir;
}

describe('leftover temp folders', () => {
  it('removes those whose owner process is gone, keeps running ones, other hosts\' and foreign names', async () => {
    const dead = await leftover('model.partial-aa11', { pid: 2 ** 22 + 12345, host: hostname() }); // beyond pid_max
    const alive = await leftover('model.partial-bb22', { pid: process.ppid, host: hostname() });
    const remote = await leftover('model.partial-cc33', { pid: 2 ** 22 + 1, host: `${hostname()}-elsewhere` });
    const unownedNew = await leftover('model.partial-dd44');
    const unownedOld = await leftover('model.partial-ee55');
    const old = new Date(Date.now() - 3600_000);
    await utimes(unownedOld, old, old);
    const other = await leftover('model.partial-not-hex', { pid: 2 ** 22 + 2, host: hostname() });
    const removed = await cleanStaleTempFolders(join(root, 'model'));
    expect(removed.sort()).toEqual([dead, unownedOld].sort());
    for (const kept of [alive, remote, unownedNew, other]) expect(existsSync(kept), kept).toBe(true);
  });

  it('registers live temp folders until commit or abort, and removes them on demand', async () => {
    const a = await prepareOutputFolder(join(root, 'a'));
    const b = await prepareOutputFolder(join(root, 'b'));
    expect(liveTempFolders()).toEqual(expect.arrayContaining([a.tempDir, b.tempDir]));
    expect(existsSync(join(a.tempDir, OWNER_FILE))).toBe(true);
    await a.commit();
    expect(existsSync(join(root, 'a', OWNER_FILE))).toBe(false);
    expect(liveTempFolders()).not.toContain(a.tempDir);
    expect(removeLiveTempFolders()).toEqual([b.tempDir]);
    expect(existsSync(b.tempDir)).toBe(false);
    expect(liveTempFolders()).toEqual([]);
  });
});
