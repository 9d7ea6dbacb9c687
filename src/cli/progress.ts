/**
 * Renders the library's progress events on stderr: an ora spinner with the running byte count on
 * an interactive terminal, one line per phase otherwise (logs, CI). Warnings always get a line.
 */
import ora, { type Ora } from 'ora';
import type { ProgressEvent } from '../progress.js';
import { formatBytes } from './format.js';
import type { CliIO } from './io.js';

export interface ProgressRenderer {
  onProgress(event: ProgressEvent): void;
  /** Stops the spinner; `ok` picks the final symbol. */
  stop(ok: boolean): void;
}

export function progressRenderer(io: CliIO, quiet = false): ProgressRenderer {
  let spinner: Ora | undefined;
  let phase = '';
  let done = 0;
  let total = 0;
  let lastDraw = 0;
  const label = () => (total ? `${phase}: ${formatBytes(done)} / ${formatBytes(total)} (${Math.floor((100 * done) / total)}%)` : phase);
  const show = (text: string) => {
    if (quiet) return;
    // ora needs a terminal with a width: a pty reporting 0 columns makes it clear lines forever.
    if (!io.interactive || !((process.stderr.columns ?? 0) > 0)) return io.stderr(`${text}\n`);
    spinner ??= ora({ stream: process.stderr }).start();
    spinner.text = text;
  };
  return {
    onProgress(event) {
      if (event.type === 'phase') {
        phase = event.detail ? `${event.phase} ${event.detail}` : event.phase;
        done = 0;
        total = event.total?.bytes ?? 0;
        show(event.total ? `${phase} (${event.total.tensors} tensors, ${formatBytes(event.total.bytes)})` : phase);
      } else if (event.type === 'tensor') {
        done += event.bytes;
        // Redraw at most ~10 times a second: SD UNets have ~700 tensors.
        const now = Date.now();
        if (io.interactive && spinner && now - lastDraw > 100) {
          spinner.text = label();
          lastDraw = now;
        }
      } else if (event.type === 'warning') {
        spinner?.clear();
        io.stderr(`warning${event.code ? `[${event.code}]` : ''}: ${event.message}\n`);
        spinner?.render();
      }
    },
    stop(ok) {
      if (!spinner) return;
      if (ok) spinner.succeed('done');
      else spinner.stop();
    },
  };
}
