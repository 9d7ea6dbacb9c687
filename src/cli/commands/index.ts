import { batchCommand } from './batch.js';
import { convertCommand } from './convert.js';
import { exportOnnxCommand } from './export-onnx.js';
import { inspect } from './inspect.js';
import { scan } from './scan.js';
import { tokenizeCommand } from './tokenize.js';
import { toSingleFileCommand } from './to-single-file.js';
import { verifyCommand } from './verify.js';
import { generateCommand } from './generate.js';
import type { CommandModule } from './types.js';

export const commands: CommandModule<never>[] = [convertCommand, batchCommand, inspect, scan, exportOnnxCommand, tokenizeCommand, toSingleFileCommand, verifyCommand, generateCommand] as CommandModule<never>[];
