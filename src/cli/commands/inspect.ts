import type { Argv } from 'yargs';
import { inspectFile, type FileInspection } from '../../inspect.js';
import { formatBytes, formatCount, plural, table } from '../format.js';
import type { CliIO } from '../io.js';
import type { CommandModule } from './types.js';

interface InspectArgs {
  path: string;
  json: boolean;
}

export const inspect: CommandModule<InspectArgs> = {
  command: 'inspect <path>',
  describe: 'Describe a checkpoint: format, tensors, dtypes, prefixes, safety findings (headers only)',
  builder: (y: Argv) =>
    y
      .positional('path', { type: 'string', describe: 'a .ckpt/.pt/.bin/.safetensors file', demandOption: true })
      .option('json', { type: 'boolean', default: false, describe: 'print the report as JSON on stdout' }),
  // inspect answers "could not read" with 2, like scan.
  errorExitCode: 2,
  async run(args: InspectArgs, io: CliIO): Promise<number> {
    const report = await inspectFile(args.path);
    io.stdout(args.json ? JSON.stringify(report, null, 2) + '\n' : renderInspection(report));
    return 0;
  },
};

export function renderInspection(r: FileInspection): string {
  let out = `${r.path}\n`;
  out += table([
    ['format', describeFormat(r)],
    ['size', formatBytes(r.fileSize)],
    ['wrapper', r.wrapperPath.length ? r.wrapperPath.map((k) => `[${JSON.stringify(k)}]`).join('') : '(state dict at top level)'],
    ['tensors', formatCount(r.tensorCount)],
    ['parameters', formatCount(r.parameters)],
  ]);
  out += '\ndtypes\n';
  out += table(Object.entries(r.bytesByDtype).map(([d, b]) => [d, plural(r.tensorsByDtype[d as keyof typeof r.tensorsByDtype] ?? 0, "tensor"), formatBytes(b ?? 0)]));
  out += '\nprefixes\n';
  out += table(r.prefixes.map((p) => [p.prefix, formatCount(p.tensors), formatCount(p.parameters)]));
  const extras = Object.entries(r.extras);
  if (extras.length) {
    out += '\nother values\n';
    out += table(extras.map(([k, v]) => [k, JSON.stringify(v) ?? String(v)]));
  }
  const meta = Object.entries(r.metadata);
  if (meta.length) {
    out += '\nmetadata\n';
    out += table(meta.map(([k, v]) => [k, v.length > 80 ? `${v.slice(0, 77)}...` : v]));
  }
  out += '\nsafety\n' + renderSafety(r);
  return out;
}

function describeFormat(r: FileInspection): string {
  const c = r.container;
  if (r.format === 'torch-zip') return `PyTorch zip (prefix ${JSON.stringify(c.prefix)}, pickle protocol ${c.pickleProtocol})`;
  if (r.format === 'torch-legacy') return `PyTorch legacy torch.save (pickle protocol ${c.pickleProtocol})`;
  return `safetensors (header ${formatBytes(Number(c.headerBytes ?? 0))})`;
}

function renderSafety(r: FileInspection): string {
  const s = r.safety;
  if (!s.hasPickle) return '  no pickle: nothing in this format can run code\n';
  const dangerous = s.globals.filter((g) => g.safety === 'dangerous');
  const unknown = s.globals.filter((g) => g.safety === 'unknown');
  let out = `  ${s.globals.length} globals imported: ${s.globals.length - dangerous.length - unknown.length} allowed, ${unknown.length} unknown, ${dangerous.length} dangerous\n`;
  for (const g of [...dangerous, ...unknown]) out += `  ${g.safety.toUpperCase()} ${g.module}.${g.name}${g.reason ? ` (${g.reason})` : ''}\n`;
  return out;
}
