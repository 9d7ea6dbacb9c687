/** onnxruntime execution providers by the CLI's names (kept apart so that naming them loads no runtime). */
export const PROVIDERS = ['cpu', 'cuda', 'dml', 'coreml'] as const;
export type Provider = (typeof PROVIDERS)[number];
