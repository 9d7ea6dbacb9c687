/**
 * The only module that loads onnxruntime-node, and only through a dynamic import inside
 * `loadOnnxRuntime()`, so importing the library (or the exporter) never loads native code.
 * onnxruntime-node is used to check and test exports; writing an export does not need it.
 */
import { CkptError, ErrorCode } from '../errors.js';

/** The subset of the onnxruntime-node API this project uses. */
export type OnnxRuntime = typeof import('onnxruntime-node');
export type OrtSession = import('onnxruntime-node').InferenceSession;
export type OrtTensor = import('onnxruntime-node').Tensor;

let cached: Promise<OnnxRuntime> | undefined;

/** Loads onnxruntime-node once; a CkptError E_ONNX_RUNTIME when it is not installed or fails to load. */
export function loadOnnxRuntime(): Promise<OnnxRuntime> {
  cached ??= import('onnxruntime-node').then(
    (m) => ((m as { default?: OnnxRuntime }).default ?? m) as OnnxRuntime,
    (e: unknown) => {
      cached = undefined;
      throw new CkptError(ErrorCode.E_ONNX_RUNTIME, `onnxruntime-node cannot be loaded (${(e as Error).message}).`, {
        hint: 'Install it with `npm install onnxruntime-node` (its CPU binaries ship in the package).',
        cause: e,
      });
    },
  );
  return cached;
}

export interface SessionOptions {
  /** Execution providers in order of preference; default ['cpu']. */
  executionProviders?: readonly string[];
}

/** Opens `modelPath` (external data resolved next to it) with the given execution providers. */
export async function createSession(modelPath: string, options: SessionOptions = {}): Promise<OrtSession> {
  const ort = await loadOnnxRuntime();
  try {
    return await ort.InferenceSession.create(modelPath, { executionProviders: [...(options.executionProviders ?? ['cpu'])] as string[] });
  } catch (e) {
    throw new CkptError(ErrorCode.E_ONNX_RUNTIME, `onnxruntime cannot load the model (${(e as Error).message}).`, { file: modelPath, cause: e });
  }
}
