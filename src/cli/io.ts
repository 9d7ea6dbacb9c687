/** Where the CLI writes: injectable so tests can run commands in-process and read the output. */
export interface CliIO {
  stdout(text: string): void;
  stderr(text: string): void;
  /** Whether stderr is an interactive terminal (progress spinners only then). */
  readonly interactive: boolean;
}

export const processIO: CliIO = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
  interactive: Boolean(process.stderr.isTTY) && !process.env.CI,
};

/** Collects output in memory (tests). */
export function memoryIO(): CliIO & { out: string; err: string } {
  const io = {
    out: '',
    err: '',
    interactive: false,
    stdout(text: string) {
      io.out += text;
    },
    stderr(text: string) {
      io.err += text;
    },
  };
  return io;
}
