import { convertCommand } from './convert.js';
import { inspect } from './inspect.js';
import { scan } from './scan.js';
import type { CommandModule } from './types.js';

export const commands: CommandModule<never>[] = [convertCommand, inspect, scan] as CommandModule<never>[];
