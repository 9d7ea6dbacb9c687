/**
 * CLI entry: parses argv with yargs, dispatches to one command module, and is the only place that
 * turns errors into exit codes. Commands throw; main decides.
 */
export async function main(argv: string[]): Promise<number> {
  void argv;
  process.stderr.write('ckpt2diffusers: no commands yet\n');
  return 2;
}
