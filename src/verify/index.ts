/**
 * `verify(folder, options)`: checks a converted Diffusers folder.
 *
 *   with `source`       every output tensor against the checkpoint it came from (weights.ts)
 *   with `generation`   a test generation through the ONNX graphs with its checks (generation.ts)
 *
 * Verdict: 'failed' when a weight, config or generation check failed, 'warnings' when only
 * warnings were raised, else 'clean'. Importing this module loads no onnxruntime: sessions are
 * opened only when a generation runs.
 */
import { ErrorCode, fail } from '../errors.js';
import type { Verdict } from './checks.js';
import { runGeneration, type GenerationOptions, type GenerationReport, type GenerationRun } from './generation.js';
import { verifyWeights, type VerifyWeightsOptions, type VerifyWeightsReport } from './weights.js';

export interface VerifyOptions extends VerifyWeightsOptions {
  /** The checkpoint the folder was converted from: check every tensor and config. */
  source?: string;
  /** Run a test generation with these options. */
  generation?: GenerationOptions;
}

export interface VerifyReport {
  readonly folder: string;
  readonly weights?: VerifyWeightsReport;
  readonly generation?: GenerationReport;
  readonly verdict: Verdict;
  readonly ok: boolean;
}

export async function verify(folder: string, options: VerifyOptions): Promise<VerifyReport & { readonly run?: GenerationRun }> {
  if (!options.source && !options.generation) {
    fail(ErrorCode.E_USAGE, undefined, 'nothing to verify: give the source checkpoint (--source) and/or a prompt (--prompt).');
  }
  const weights = options.source ? await verifyWeights(folder, options.source, options) : undefined;
  const run = options.generation ? await runGeneration(folder, options.generation) : undefined;
  const generation = run?.report;
  const verdict: Verdict = (weights && !weights.ok) || generation?.verdict === 'failed' ? 'failed' : generation?.verdict === 'warnings' ? 'warnings' : 'clean';
  return { folder, weights, generation, verdict, ok: verdict !== 'failed', run };
}

export { verifyWeights, jsonDifferences } from './weights.js';
export type { VerifyWeightsOptions, VerifyWeightsReport, ComponentWeightsReport, ConfigDifference } from './weights.js';
export { runGeneration, readFolderInfo } from './generation.js';
export type { GenerationOptions, GenerationReport, GenerationRun, GenerationTimings, FolderInfo } from './generation.js';
export { ensureOnnxFolder, onnxCacheDir, isOnnxFolder, ONNX_CACHE_FOLDER } from './onnx-cache.js';
export type { OnnxCacheOptions, OnnxFolder } from './onnx-cache.js';
export { verdictOf, statsOf, finiteCheck, flatImageCheck, latentStatsCheck } from './checks.js';
export type { Check, CheckStatus, Verdict, Stats } from './checks.js';
export { runPredictionProbe, predictionCheck, probeDecision, V_PREDICTION_THRESHOLD, PROBE_TIMESTEP } from './probe.js';
export type { ProbeResult, ProbeSuggestion, ProbeOptions } from './probe.js';
export { PROVIDERS } from './providers.js';
export type { Provider } from './providers.js';
