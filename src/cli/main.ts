/**
 * CLI entry: parses argv with yargs, dispatches to one command module, and is the only place that
 * turns errors into exit statuses. Commands return a status or throw; main prints
 * `error[CODE]: message` on stderr.
 */
import yargs, { type Argv } from 'yargs';
import { isCkptError } from '../errors.js';
import { commands } from './commands/index.js';
import type { CommandModule } from './commands/types.js';
import { processIO, type CliIO } from './io.js';
import { installSignalCleanup } from './signals.js';

class UsageError extends Error {}

/** Exit status for usage errors (unknown flag, missing argument). */
export const EXIT_USAGE = 2;

export async function main(argv: string[], io: CliIO = processIO): Promise<number> {
  let status: number | undefined;
  let active: CommandModule<never> | undefined;
  const parser = buildParser(argv, io, (cmd) => (active = cmd), (s) => (status = s));
  // Throwing from fail() stops yargs before any handler runs.
  parser.fail((msg, err) => {
    // yargs reports bad flag values (coerce/check) as a YError: a usage error, not a bug.
    if (err && err.name !== 'YError') throw err;
    throw new UsageError(msg ?? err?.message ?? 'invalid arguments');
  });
  // SIGINT/SIGTERM remove the temporary output folders being written, then exit 130/143.
  const restoreSignals = installSignalCleanup(io);
  try {
    await parser.parseAsync();
  } catch (e) {
    if (e instanceof UsageError) {
      io.stderr(`error[E_USAGE]: ${e.message}\nRun 'ckpt2diffusers --help' for usage.\n`);
      return EXIT_USAGE;
    }
    return reportError(e, io, active);
  } finally {
    restoreSignals();
  }
  return status ?? 0;
}

function buildParser(
  argv: string[],
  io: CliIO,
  setActive: (cmd: CommandModule<never>) => void,
  setStatus: (s: number) => void,
): Argv {
  let y = yargs(argv)
    .scriptName('ckpt2diffusers')
    .usage('$0 <input> <output> [options]   convert a Stable Diffusion checkpoint to a Diffusers folder\n$0 <command> [options]')
    .strict()
    .exitProcess(false)
    .version(false)
    .help('help')
    .alias('help', 'h')
    .wrap(Math.min(110, process.stdout.columns || 100));
  for (const cmd of commands as CommandModule<never>[]) {
    y = y.command({
      command: cmd.command,
      describe: cmd.describe,
      builder: cmd.builder,
      handler: async (args) => {
        setActive(cmd);
        setStatus(await cmd.run(args as never, io));
      },
    });
  }
  return y.demandCommand(1, 'Give an input file and an output folder, or a command.');
}

function reportError(e: unknown, io: CliIO, cmd: CommandModule<never> | undefined): number {
  if (isCkptError(e)) {
    io.stderr(`error[${e.code}]: ${e.message}\n`);
    // A bad flag value found by the library is still a usage error.
    if (e.code === 'E_USAGE') return EXIT_USAGE;
    return cmd?.errorExitCode ?? 1;
  }
  const err = e as Error;
  io.stderr(`error[E_INTERNAL]: ${err?.stack ?? String(e)}\n`);
  return 70; // EX_SOFTWARE: a bug in ckpt2diffusers, not in the input
}
