/**
 * Config against weights, from headers only: each check of the class's table row
 * (mappings/diffusers-classes.json "checks") compares a config value with a tensor dimension, a
 * tensor rank or a count of numbered blocks.
 */
import type { TensorInfo } from '../formats/tensor-source.js';
import type { ConfigCheck } from './classes.js';

export interface CheckFailure {
  config: string;
  /** The value in config.json (or the class default when the key is absent). */
  configValue: unknown;
  /** What the weights say. */
  weightsValue: number | boolean;
  /** Where the weights say it, e.g. `conv_in.weight [32, 4, 3, 3] dim 1`. */
  evidence: string;
}

/** Reads `name`, `name[0]` or `name.length` from a config object. */
export function configValue(config: Record<string, unknown>, path: string): unknown {
  const m = /^([A-Za-z0-9_]+)(?:\[(\d+)\]|\.(length))?$/.exec(path);
  if (!m) return undefined;
  const v = config[m[1]];
  if (m[2] !== undefined) return Array.isArray(v) ? v[Number(m[2])] : undefined;
  if (m[3] !== undefined) return Array.isArray(v) ? v.length : undefined;
  return v;
}

function shapeText(t: TensorInfo): string {
  return `[${t.shape.join(', ')}]`;
}

/** What the weights say for one check, or undefined when the tensors do not tell. */
function fromWeights(check: ConfigCheck, byName: ReadonlyMap<string, TensorInfo>, names: readonly string[]): { value: number | boolean; evidence: string } | undefined {
  if (check.countOf) {
    const re = new RegExp(check.countOf);
    const seen = new Set<string>();
    for (const n of names) {
      const m = re.exec(n);
      if (m) seen.add(m[1]);
    }
    if (seen.size === 0) return undefined;
    return { value: seen.size, evidence: `${seen.size} distinct blocks matching /${check.countOf}/` };
  }
  let tensor: TensorInfo | undefined;
  if (check.tensor) tensor = byName.get(check.tensor);
  else if (check.tensorPattern) {
    const re = new RegExp(check.tensorPattern);
    const name = names.find((n) => re.test(n));
    tensor = name ? byName.get(name) : undefined;
  }
  if (!tensor) return undefined;
  if (check.rank) {
    const hit = Object.entries(check.rank).find(([, r]) => r === tensor.shape.length);
    if (!hit) return undefined;
    return { value: hit[0] === 'true', evidence: `${tensor.name} ${shapeText(tensor)} is ${tensor.shape.length}-D` };
  }
  if (check.dim === undefined) return undefined;
  const dim = tensor.shape[check.dim];
  if (dim === undefined) return undefined;
  const factor = check.factor ?? 1;
  if (dim % factor !== 0) return { value: dim / factor, evidence: `${tensor.name} ${shapeText(tensor)} dim ${check.dim} = ${dim}` };
  return { value: dim / factor, evidence: `${tensor.name} ${shapeText(tensor)} dim ${check.dim} = ${dim}${factor !== 1 ? ` (= ${factor} x ${dim / factor})` : ''}` };
}

export function runConfigChecks(checks: readonly ConfigCheck[], config: Record<string, unknown>, tensors: readonly TensorInfo[]): CheckFailure[] {
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const names = tensors.map((t) => t.name).sort();
  const failures: CheckFailure[] = [];
  for (const check of checks) {
    let expected = configValue(config, check.config);
    if (expected === undefined || expected === null) expected = check.default;
    if (typeof expected !== 'number' && typeof expected !== 'boolean') continue;
    const found = fromWeights(check, byName, names);
    if (!found || found.value === expected) continue;
    failures.push({ config: check.config, configValue: expected, weightsValue: found.value, evidence: found.evidence });
  }
  return failures;
}

/** What the weights say a config value is (for pipeline-level checks), else the config value. */
export function weightsOrConfig(checks: readonly ConfigCheck[], key: string, config: Record<string, unknown> | undefined, tensors: readonly TensorInfo[]): number | undefined {
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const names = tensors.map((t) => t.name).sort();
  for (const check of checks) {
    if (check.config !== key) continue;
    const found = fromWeights(check, byName, names);
    if (found && typeof found.value === 'number') return found.value;
  }
  const v = config ? configValue(config, key) : undefined;
  if (typeof v === 'number') return v;
  const d = checks.find((c) => c.config === key)?.default;
  return typeof d === 'number' ? d : undefined;
}
