/**
 * The `inspect` report: one shape for a checkpoint file, a Diffusers pipeline folder, a single
 * Diffusers model folder and a folder of several things. Documented in README.md
 * ("inspect --json schema"); `schema` is bumped on incompatible changes.
 */

export type Severity = 'error' | 'warning' | 'info';

/** Every problem code `inspect` reports (README lists what each means and its fix). */
export const PROBLEM_CODES = [
  // folders
  'model-index-missing',
  'model-index-invalid',
  'unknown-pipeline',
  'unknown-component-class',
  'component-class-not-allowed',
  'component-not-listed',
  'component-null',
  'component-missing',
  'config-missing',
  'config-invalid',
  'class-mismatch',
  'tokenizer-missing',
  'tokenizer-invalid',
  'weights-missing',
  'weights-unreadable',
  'variant-only',
  'pickle-weights',
  'shard-index-invalid',
  'shard-missing',
  'shard-index-mismatch',
  'shard-total-size',
  'shard-unreferenced',
  'variant-mismatch',
  'config-weights-mismatch',
  'pipeline-mismatch',
  'broken-link',
  'not-diffusers-folder',
  'nothing-found',
  'hf-cache-ref',
  // checkpoint files (and weights inside folders)
  'unsafe-pickle',
  'unknown-family',
  'unsupported-family',
  'unmatched-keys',
  'plan-failed',
  'ema-present',
  'prediction-guessed',
  // entries of a folder of several things
  'unreadable',
] as const;

export type ProblemCode = (typeof PROBLEM_CODES)[number];

export interface Problem {
  code: ProblemCode;
  severity: Severity;
  /** Component folder the problem is about (`unet`, `text_encoder`, ...), or null. */
  component: string | null;
  message: string;
  /** What to do about it: a command or an edit; null when there is nothing to do. */
  fix: string | null;
}

export type VerdictStatus = 'loadable' | 'convertible' | 'not-loadable' | 'not-convertible' | 'unreadable' | 'mixed';

export interface Verdict {
  status: VerdictStatus;
  /** The CLI exit status: 0 loadable/convertible, 1 not (see problems), 2 could not read. */
  exitCode: 0 | 1 | 2;
  /** One line for humans, e.g. "loadable as StableDiffusionXLPipeline (fp16 variant available)". */
  summary: string;
}

export function problem(code: ProblemCode, severity: Severity, component: string | null, message: string, fix: string | null = null): Problem {
  return { code, severity, component, message, fix };
}

export function hasErrors(problems: readonly Problem[]): boolean {
  return problems.some((p) => p.severity === 'error');
}
