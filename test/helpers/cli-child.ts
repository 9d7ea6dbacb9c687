/**
 * Runs the CLI from the sources in a child process (`node --import tsx test/helpers/cli-child.ts
 * ARGS...`), so tests can send it real signals without a prior build.
 */
import { main } from '../../src/cli/main.js';

process.exitCode = await main(process.argv.slice(2));
