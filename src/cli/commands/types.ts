import type { Argv } from 'yargs';
import type { CliIO } from '../io.js';

/**
 * One CLI command: yargs metadata plus `run`, which calls one library function, prints its result
 * and returns the exit status. Commands throw CkptErrors; main prints them and picks the status
 * from `errorExitCode`.
 */
export interface CommandModule<A = Record<string, unknown>> {
  command: string | string[];
  describe: string;
  builder: (y: Argv) => Argv;
  run: (args: A, io: CliIO) => Promise<number>;
  /** Exit status for a CkptError thrown by `run` (default 1). */
  errorExitCode?: number;
}
