/**
 * SIGINT / SIGTERM during a CLI run: remove the temporary output folders being written, say so,
 * and exit with 128 + the signal number (130, 143), as shells expect. Removal is synchronous, so
 * no pending write can recreate a file after it. A SIGKILL cannot be caught: the next run removes
 * the leftover (see diffusers/output-folder.ts, cleanStaleTempFolders).
 */
import { removeLiveTempFolders } from '../diffusers/output-folder.js';
import type { CliIO } from './io.js';

const EXIT_STATUS: Record<'SIGINT' | 'SIGTERM', number> = { SIGINT: 130, SIGTERM: 143 };

/** Installs the handlers; returns a function that removes them. */
export function installSignalCleanup(io: CliIO, exit: (status: number) => void = (s) => process.exit(s)): () => void {
  const handler = (signal: NodeJS.Signals) => {
    const removed = removeLiveTempFolders();
    const what = removed.length ? `; removed ${removed.length} unfinished output folder${removed.length === 1 ? '' : 's'}` : '';
    io.stderr(`\nerror[E_INTERRUPTED]: stopped by ${signal}${what}. Nothing that looks complete was left behind.\n`);
    exit(EXIT_STATUS[signal as 'SIGINT' | 'SIGTERM'] ?? 1);
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return () => {
    process.off('SIGINT', handler);
    process.off('SIGTERM', handler);
  };
}
