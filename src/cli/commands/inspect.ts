import type { Argv } from 'yargs';
import type { ComponentReport, FolderInspection } from '../../inspect-folder.js';
import { inspectPath, type CollectionInspection, type FileInspection, type Inspection, type Problem, type UnreadableInspection } from '../../inspect.js';
import { formatBytes, formatCount, plural, table } from '../format.js';
import type { CliIO } from '../io.js';
import type { CommandModule } from './types.js';

interface InspectArgs {
  path: string;
  json: boolean;
}

export const inspect: CommandModule<InspectArgs> = {
  command: 'inspect <path>',
  describe: 'Can Diffusers load it, or can it be converted? For a checkpoint file, a Diffusers folder, a Hugging Face cache folder or a folder of checkpoints (headers only)',
  builder: (y: Argv) =>
    y
      .positional('path', { type: 'string', describe: 'a .ckpt/.pt/.bin/.safetensors file, a Diffusers folder, a models--org--name cache folder, or a folder of checkpoints', demandOption: true })
      .option('json', { type: 'boolean', default: false, describe: 'print the report as JSON on stdout (schema: README "inspect --json schema")' })
      .example('$0 inspect sd15.ckpt', 'family, prediction type, EMA and the convert command')
      .example('$0 inspect ./stable-diffusion-xl-base-1.0', 'is the folder loadable, and as which pipeline'),
  // 0: loadable / convertible; 1: not (the report says why); 2: could not read.
  errorExitCode: 2,
  async run(args: InspectArgs, io: CliIO): Promise<number> {
    const report = await inspectPath(args.path);
    io.stdout(args.json ? JSON.stringify(report, null, 2) + '\n' : renderReport(report));
    return report.verdict.exitCode;
  },
};

export function renderReport(r: Inspection): string {
  switch (r.kind) {
    case 'file':
      return renderInspection(r);
    case 'pipeline':
    case 'model':
      return renderFolder(r);
    case 'collection':
      return renderCollection(r);
    case 'unreadable':
      return renderUnreadable(r);
  }
}

// --- a checkpoint file ---------------------------------------------------------------------------

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
  out += table(Object.entries(r.bytesByDtype).map(([d, b]) => [d, plural(r.tensorsByDtype[d as keyof typeof r.tensorsByDtype] ?? 0, 'tensor'), formatBytes(b ?? 0)]));
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
  if (r.family) {
    out += `\nfamily ${r.family.id} (${r.family.confidence} confidence)\n`;
    out += table(r.family.evidence.map((e) => [e.what, e.found, e.implies]));
  }
  if (r.prediction) {
    const p = r.prediction;
    out += '\nsettings\n';
    out += table([
      ['prediction type', p.predictionType.value, `${p.predictionType.confidence}: ${p.predictionType.evidence.map((e) => `${e.what} = ${e.found}`).join('; ')}`],
      ['image size', String(p.imageSize.value), `${p.imageSize.confidence}: ${p.imageSize.evidence.map((e) => `${e.what} = ${e.found}`).join('; ')}`],
      ['upcast attention', String(p.upcastAttention.value), p.upcastAttention.confidence],
    ]);
  }
  if (r.components.length) {
    out += `\ncomponents (EMA: ${r.ema.present ? plural(r.ema.count, 'tensor') : 'none'})\n`;
    out += table(r.components.map((c) => [c.folder, c.className, formatCount(c.tensors), formatCount(c.parameters), dtypeMix(c.dtypes)]));
  }
  out += renderProblems(r.problems);
  if (r.convert) {
    out += `\nconvert\n  ${r.convert.command}\n`;
    for (const f of r.convert.flags) out += `    ${f.flag}: ${f.why}\n`;
  }
  out += `\nverdict: ${r.verdict.summary}\n`;
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

// --- a Diffusers folder -------------------------------------------------------------------------

function renderFolder(r: FolderInspection): string {
  let out = `${r.path}\n`;
  if (r.hfCache) out += `  Hugging Face cache: ${r.hfCache.repo} @ ${r.hfCache.snapshot}${r.hfCache.ref ? ` (refs/${r.hfCache.ref})` : ''}\n`;
  out += `  ${r.kind === 'pipeline' ? 'pipeline' : 'model'}: ${r.className ?? '(unknown)'}${r.diffusersVersion ? ` (saved by diffusers ${r.diffusersVersion})` : ''}\n\n`;
  const rows: string[][] = [['component', 'class', 'weights', 'tensors', 'parameters', 'dtype', 'status']];
  for (const c of r.components) rows.push([c.name, c.className ?? '-', weightsText(c), c.tensors ? formatCount(c.tensors) : '-', c.parameters ? formatCount(c.parameters) : '-', dtypeMix(c.dtypes) || '-', c.status]);
  out += table(rows);
  if (r.otherFiles.length) out += `  other checkpoint files here (not read by Diffusers loaders): ${r.otherFiles.join(', ')}\n`;
  out += renderProblems(r.problems);
  out += `\nverdict: ${r.verdict.summary}\n`;
  return out;
}

function weightsText(c: ComponentReport): string {
  if (!c.present) return c.className ? 'missing' : '(none)';
  if (!c.loads) return c.kind === 'model' || c.kind === 'onnx' ? 'none' : '-';
  const shards = c.loads.files.length > 1 && c.loads.format !== 'onnx' ? ` x${c.loads.files.length}` : '';
  const variants = c.variants.length ? ` +${c.variants.join(',')}` : '';
  return `${c.loads.format}${c.loads.variant ? `.${c.loads.variant}` : ''}${shards}${variants}`;
}

function dtypeMix(d: Partial<Record<string, number>>): string {
  const entries = Object.entries(d).filter(([, n]) => (n ?? 0) > 0);
  if (entries.length <= 1) return entries[0]?.[0] ?? '';
  const total = entries.reduce((s, [, n]) => s + (n ?? 0), 0);
  return entries.map(([k, n]) => `${k} ${Math.round(((n ?? 0) / total) * 100)}%`).join(' ');
}

function renderProblems(problems: readonly Problem[]): string {
  if (problems.length === 0) return '';
  let out = '\nproblems\n';
  for (const p of problems) {
    out += `  ${p.severity.toUpperCase()} [${p.code}]${p.component ? ` ${p.component}:` : ''} ${p.message}\n`;
    if (p.fix) out += p.fix.split('\n').map((line, i) => `      ${i === 0 ? 'fix: ' : '     '}${line}\n`).join('');
  }
  return out;
}

// --- several things -----------------------------------------------------------------------------

function renderCollection(r: CollectionInspection): string {
  let out = `${r.path}: ${r.verdict.summary}\n`;
  for (const e of r.entries) {
    out += '\n' + indent(renderReport(e));
  }
  out += renderProblems(r.problems);
  out += `\nverdict: ${r.verdict.summary}\n`;
  return out;
}

function renderUnreadable(r: UnreadableInspection): string {
  return `${r.path}\n  could not read: error[${r.error.code}] ${r.error.message}\n`;
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((l) => (l ? `  ${l}` : l))
    .join('\n');
}
