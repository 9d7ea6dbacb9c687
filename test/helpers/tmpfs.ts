/**
 * Small tmpfs mounts for tests of full and read-only filesystems. Mounting needs root (or
 * CAP_SYS_ADMIN); where it is refused, `mountTmpfs` says why and the caller skips.
 */
import { execFileSync } from 'node:child_process';
import { mkdir } from 'node:fs/promises';

/** Mounts a tmpfs of `size` (e.g. `1m`) on `dir`; returns undefined on success, else the reason. */
export async function mountTmpfs(dir: string, size: string): Promise<string | undefined> {
  await mkdir(dir, { recursive: true });
  if (process.platform !== 'linux') return `tmpfs mounts need Linux (this is ${process.platform})`;
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0755`, 'tmpfs', dir], { stdio: 'pipe' });
    return undefined;
  } catch (e) {
    const err = e as { stderr?: Buffer; message: string };
    return `mount -t tmpfs refused: ${(err.stderr?.toString() || err.message).trim()}`;
  }
}

/** Remounts a tmpfs mounted by mountTmpfs read-only. */
export function remountReadOnly(dir: string): void {
  execFileSync('mount', ['-o', 'remount,ro', dir], { stdio: 'pipe' });
}

/** Unmounts; lazily when busy, so a failing test never leaves a mount behind. */
export function unmount(dir: string): void {
  try {
    execFileSync('umount', [dir], { stdio: 'pipe' });
  } catch {
    execFileSync('umount', ['-l', dir], { stdio: 'pipe' });
  }
}

/** Whether mounting works here: probed once, on a throwaway folder. */
export async function tmpfsUnavailable(probeDir: string): Promise<string | undefined> {
  const reason = await mountTmpfs(probeDir, '64k');
  if (reason === undefined) unmount(probeDir);
  return reason;
}
