import type { Argv } from 'yargs';
import { scanFile, type ScanResult } from '../../scan.js';
import { table } from '../format.js';
import type { CliIO } from '../io.js';
import type { CommandModule } from './types.js';

interface ScanArgs {
  path: string;
  json: boolean;
}

/** Exit statuses as picklescan uses them: 0 clean, 1 dangerous globals found, 2 could not scan. */
export const scan: CommandModule<ScanArgs> = {
  command: 'scan <path>',
  describe: 'List every global a checkpoint pickle imports and flag dangerous ones (never executes anything)',
  builder: (y: Argv) =>
    y
      .positional('path', { type: 'string', describe: 'a .ckpt/.pt/.bin/.safetensors file', demandOption: true })
      .option('json', { type: 'boolean', default: false, describe: 'print the findings as JSON on stdout' }),
  errorExitCode: 2,
  async run(args: ScanArgs, io: CliIO): Promise<number> {
    const result = await scanFile(args.path);
    io.stdout(args.json ? JSON.stringify(result, null, 2) + '\n' : renderScan(result));
    return result.safety.dangerous ? 1 : 0;
  },
};

export function renderScan(r: ScanResult): string {
  const s = r.safety;
  if (!s.hasPickle) return `${r.path}: ${r.format}, no pickle - clean\n`;
  const rows = s.globals.map((g) => [g.safety.toUpperCase(), `${g.module}.${g.name}`, g.opcode, `x${g.count}`, g.reason ?? '']);
  const dangerous = s.globals.filter((g) => g.safety === 'dangerous').length;
  const verdict = dangerous ? `DANGEROUS: ${dangerous} dangerous global(s); loading this file with torch.load could run code` : 'clean';
  return `${r.path}: ${r.format}, ${s.globals.length} globals\n${table(rows)}${verdict}\n`;
}
