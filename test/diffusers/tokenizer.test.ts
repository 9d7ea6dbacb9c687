import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type ClipBpe,
  byteSymbols,
  loadPackagedBpe,
  loadTokenizerDir,
  MERGES_COUNT,
  tokenizerFiles,
  VOCAB_SIZE,
} from '../../src/diffusers/tokenizer.js';
import { isCkptError } from '../../src/errors.js';
import { goldenText } from '../mapping/case-tensors.js';

interface LargeFile {
  canonical_sha256: string;
  sha256_as_written: string;
  bytes_as_written: number;
}

const sha256 = (data: string | Uint8Array) => createHash('sha256').update(data).digest('hex');
const asText = (v: string | Uint8Array | undefined) => (typeof v === 'string' ? v : new TextDecoder().decode(v));

/** compare.py's canonical forms: sorted compact JSON (no ASCII escaping); merges without header or blank lines. */
function canonicalVocab(text: string): string {
  const obj = JSON.parse(text) as Record<string, number>;
  const keys = Object.keys(obj).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return '{' + keys.map((k) => `${JSON.stringify(k)}:${obj[k]}`).join(',') + '}';
}
function canonicalMerges(text: string): string {
  return text
    .split('\n')
    .map((l) => l.replace(/\r$/, ''))
    .filter((l) => l && !l.startsWith('#version'))
    .join('\n');
}

async function expectCode(p: Promise<unknown>, code: string): Promise<void> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(isCkptError(e) ? e.code : e).toBe(code);
}

let bpe: ClipBpe;
beforeAll(async () => {
  bpe = await loadPackagedBpe();
});

describe('vocab.json and merges.txt from the packaged BPE', () => {
  for (const name of ['sd1', 'sd1-pipe', 'sd2']) {
    it(`match golden/${name} canonical and as-written sha256`, () => {
      const large = JSON.parse(goldenText(`${name}/diffusers/tokenizer/_large_files.json`)) as Record<string, LargeFile>;
      const files = tokenizerFiles(name === 'sd2' ? 'openclip' : 'clip-l', { bpe });
      const vocab = asText(files.get('vocab.json'));
      const merges = asText(files.get('merges.txt'));
      expect(sha256(canonicalVocab(vocab))).toBe(large['vocab.json'].canonical_sha256);
      expect(sha256(canonicalMerges(merges))).toBe(large['merges.txt'].canonical_sha256);
      expect(sha256(vocab)).toBe(large['vocab.json'].sha256_as_written);
      expect(sha256(merges)).toBe(large['merges.txt'].sha256_as_written);
      expect(Buffer.byteLength(vocab)).toBe(large['vocab.json'].bytes_as_written);
    });
  }

  it('has the CLIP sizes and special ids', () => {
    expect(bpe.source === 'merges' && bpe.merges.length).toBe(MERGES_COUNT);
    const vocab = JSON.parse(asText(tokenizerFiles('clip-l', { bpe }).get('vocab.json'))) as Record<string, number>;
    expect(Object.keys(vocab)).toHaveLength(VOCAB_SIZE);
    expect([vocab['!'], vocab['<|startoftext|>'], vocab['<|endoftext|>'], vocab['a</w>']]).toEqual([0, 49406, 49407, 320]);
  });

  it('byte symbols follow bytes_to_unicode order', () => {
    const s = byteSymbols();
    expect(s).toHaveLength(256);
    expect(new Set(s).size).toBe(256);
    expect([s[0], s[93], s[94], s[188], s[255]]).toEqual(['!', '~', '¡', 'Ā', 'Ń']);
  });
});

describe('special_tokens_map.json and tokenizer_config.json', () => {
  for (const [name, kind] of [
    ['sd1', 'clip-l'],
    ['sd2', 'openclip'],
  ] as const) {
    for (const file of ['special_tokens_map.json', 'tokenizer_config.json']) {
      it(`${name} ${file} equals the golden text`, () => {
        expect(tokenizerFiles(kind, { bpe }).get(file)).toBe(goldenText(`${name}/diffusers/tokenizer/${file}`));
      });
    }
  }

  it('writes exactly the four files', () => {
    expect([...tokenizerFiles('clip-l', { bpe }).keys()].sort()).toEqual(['merges.txt', 'special_tokens_map.json', 'tokenizer_config.json', 'vocab.json']);
  });
});

describe('--tokenizer DIR', () => {
  let dir: string;
  let vocab: string;
  let merges: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'tok-'));
    const files = tokenizerFiles('clip-l', { bpe });
    vocab = asText(files.get('vocab.json'));
    merges = asText(files.get('merges.txt'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const write = (v: string, m: string) => {
    writeFileSync(join(dir, 'vocab.json'), v);
    writeFileSync(join(dir, 'merges.txt'), m);
  };

  it('copies valid CLIP files verbatim (compact vocab, CRLF merges, HF header)', async () => {
    const compactVocab = JSON.stringify(JSON.parse(vocab));
    const hfMerges = merges.replace('#version: 0.2\n', '#version: 0.2 - Trained by `huggingface/tokenizers`\n').replace(/\n/g, '\r\n');
    write(compactVocab, hfMerges);
    const loaded = await loadTokenizerDir(dir);
    const files = tokenizerFiles('openclip', { bpe: loaded });
    expect(Buffer.compare(files.get('vocab.json') as Uint8Array, readFileSync(join(dir, 'vocab.json')))).toBe(0);
    expect(asText(files.get('merges.txt'))).toBe(hfMerges);
    expect(files.get('tokenizer_config.json')).toBe(goldenText('sd2/diffusers/tokenizer/tokenizer_config.json'));
  });

  it('rejects a vocabulary that does not match the merges', async () => {
    write(vocab.replace('"a</w>": 320', '"a</w>": 321'), merges);
    await expectCode(loadTokenizerDir(dir), 'E_TOKENIZER');
  });

  it('rejects a vocabulary with a missing token', async () => {
    const obj = JSON.parse(vocab) as Record<string, number>;
    delete obj['<|endoftext|>'];
    write(JSON.stringify(obj), merges);
    await expectCode(loadTokenizerDir(dir), 'E_TOKENIZER');
  });

  it('rejects truncated merges, bad JSON, non-UTF-8 and a missing file', async () => {
    write(vocab, merges.split('\n').slice(0, 1000).join('\n'));
    await expectCode(loadTokenizerDir(dir), 'E_TOKENIZER');
    write('{not json', merges);
    await expectCode(loadTokenizerDir(dir), 'E_TOKENIZER');
    writeFileSync(join(dir, 'vocab.json'), Buffer.from([0xff, 0xfe, 0x00]));
    await expectCode(loadTokenizerDir(dir), 'E_TOKENIZER');
    await expectCode(loadTokenizerDir(join(dir, 'nope')), 'E_TOKENIZER');
  });
});
