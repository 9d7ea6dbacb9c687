/**
 * The library's ONNX export entry, loaded on first use: importing ckpt2diffusers loads neither the
 * protobuf schema nor the graph builders until an export is asked for.
 */
import type { ExportOnnxOptions, ExportOnnxResult } from './onnx/export.js';

export async function exportOnnx(diffusersDir: string, outDir: string, options?: ExportOnnxOptions): Promise<ExportOnnxResult> {
  const { exportOnnx: run } = await import('./onnx/export.js');
  return run(diffusersDir, outDir, options);
}
