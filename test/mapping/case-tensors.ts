/**
 * TensorInfo lists for the shared fixture cases, built from `case.json` (every state-dict key with
 * its dtype and shape), so config and prediction logic can be tested without reading checkpoints.
 */
import { readFileSync } from 'node:fs';
import { DTYPES, type DType, dtypeBytes, numelOf } from '../../src/dtypes.js';
import type { TensorInfo } from '../../src/formats/tensor-source.js';
import { sharedFixture } from '../helpers/paths.js';

interface CaseJson {
  readonly global_step?: number;
  readonly state_dict_keys: Record<string, [string, number[]]>;
}

export function readCase(name: string): CaseJson {
  return JSON.parse(readFileSync(sharedFixture(`cases/${name}/case.json`), 'utf8')) as CaseJson;
}

function dtypeFromTorch(torchName: string): DType {
  const found = (Object.keys(DTYPES) as DType[]).find((d) => DTYPES[d].torch === torchName);
  if (!found) throw new Error(`unknown torch dtype ${torchName}`);
  return found;
}

export function caseTensors(name: string): TensorInfo[] {
  return Object.entries(readCase(name).state_dict_keys).map(([key, [dtype, shape]]) => {
    const d = dtypeFromTorch(dtype);
    return { name: key, dtype: d, shape, byteLength: numelOf(shape) * dtypeBytes(d) };
  });
}

/** Lightning extras as a reader would expose them. */
export function caseExtras(name: string): Record<string, unknown> {
  const step = readCase(name).global_step;
  return step === undefined ? {} : { global_step: step };
}

export function caseYamlText(name: string): string {
  return readFileSync(sharedFixture(`cases/${name}/original_config.yaml`), 'utf8');
}

export function goldenText(rel: string): string {
  return readFileSync(sharedFixture(`golden/${rel}`), 'utf8');
}
