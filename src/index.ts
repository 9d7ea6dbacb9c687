/** Public library API of ckpt2diffusers: re-exports only. */
export * from './errors.js';
export * from './dtypes.js';
export * as limits from './limits.js';
export type * from './formats/tensor-source.js';
