import { batchCommand } from './batch.js';
import { convertCommand } from './convert.js';
import { exportOnnxCommand } from './export-onnx.js';
import { inspect } from './inspect.js';
import { scan } from './scan.js';
import { tokenizeCommand } from './tokenize.js';
import { toSingleFileCommand } from './to-single-file.js';
import type { CommandModule } from './types.js';

export const commands: CommandModule<never>[] = [convertCommand, batchCommand, inspect, scan, exportOnnxCommand, tokenizeCommand, toSingleFileCommand] as CommandModule<never>[];
