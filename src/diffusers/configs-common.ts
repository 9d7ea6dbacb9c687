/**
 * What every config builder shares: the reference versions and the value types Python's json
 * module writes.
 */
import { type PyFloat, pyFloat } from '../formats/python-json.js';
import type { YamlNumber } from '../mapping/original-config.js';

/** The Diffusers release whose converter output the config builders reproduce. */
export const DIFFUSERS_VERSION = '0.31.0';
/** The transformers release the reference text-encoder configs were written with. */
export const TRANSFORMERS_VERSION = '4.44.0.dev0';

/** A config value: what Python's json module can write. */
export type ConfigValue = string | number | boolean | null | PyFloat | readonly ConfigValue[] | { readonly [key: string]: ConfigValue };
export type ConfigObject = Record<string, ConfigValue>;

/** A YAML number as Python would hold it: floats print as floats even when integral. */
export function pyNumber(n: YamlNumber): number | PyFloat {
  return n.kind === 'float' ? pyFloat(n.value) : n.value;
}
