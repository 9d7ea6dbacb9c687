import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { memoryIO } from '../../src/cli/io.js';
import { loadPackagedBpe, tokenizerFiles } from '../../src/diffusers/tokenizer.js';
import { isCkptError } from '../../src/errors.js';
import { basicClean, ClipTokenizer } from '../../src/generate/tokenizer.js';
import { sharedFixture } from '../helpers/paths.js';

interface TokenizerCase {
  prompt: string;
  pad: string;
  ids: number[];
}
const fixture = JSON.parse(readFileSync(sharedFixture('tokenizer/clip-tokenizer.json'), 'utf8')) as { max_length: number; cases: TokenizerCase[] };

/** A Diffusers tokenizer folder: golden sd1-pipe JSON files plus vocab.json / merges.txt from the packaged BPE. */
let folder: string;
let sd2Folder: string;
beforeAll(async () => {
  folder = mkdtempSync(join(tmpdir(), 'c2d-tok-'));
  sd2Folder = mkdtempSync(join(tmpdir(), 'c2d-tok2-'));
  const bpe = await loadPackagedBpe();
  for (const [dir, kind] of [[folder, 'clip-l'], [sd2Folder, 'openclip']] as const) {
    for (const [name, content] of tokenizerFiles(kind, { bpe })) writeFileSync(join(dir, name), content);
  }
  // The golden's own tokenizer_config.json for the SD 1 folder.
  const golden = sharedFixture('golden/sd1-pipe/diffusers/tokenizer/tokenizer_config.json');
  writeFileSync(join(folder, 'tokenizer_config.json'), readFileSync(golden));
});
afterAll(() => {
  rmSync(folder, { recursive: true, force: true });
  rmSync(sd2Folder, { recursive: true, force: true });
});

describe('CLIP tokenizer vs transformers CLIPTokenizer (clip-tokenizer.json)', () => {
  it('covers both pad styles', () => {
    expect(new Set(fixture.cases.map((c) => c.pad))).toEqual(new Set(['<|endoftext|>', '!']));
    expect(fixture.max_length).toBe(77);
  });

  for (const c of fixture.cases) {
    it(`${JSON.stringify(c.prompt)} with pad ${c.pad} (packaged BPE)`, async () => {
      const tok = await ClipTokenizer.packaged({ padToken: c.pad });
      expect(tok.encode(c.prompt).ids).toEqual(c.ids);
    });
  }

  it('gives the same ids from tokenizer folders (pad from tokenizer_config.json)', async () => {
    const sd1 = await ClipTokenizer.fromFolder(folder);
    const sd2 = await ClipTokenizer.fromFolder(sd2Folder);
    expect(sd1.padToken).toBe('<|endoftext|>');
    expect(sd2.padToken).toBe('!');
    for (const c of fixture.cases) expect((c.pad === '!' ? sd2 : sd1).encode(c.prompt).ids).toEqual(c.ids);
  });
});

describe('CLIP tokenizer details', () => {
  it('truncates to 75 prompt tokens between start and end tokens', async () => {
    const tok = await ClipTokenizer.packaged();
    const enc = tok.encode(Array.from({ length: 100 }, (_, i) => `word${i % 10}`).join(' '));
    expect(enc.ids).toHaveLength(77);
    expect(enc.ids[0]).toBe(49406);
    expect(enc.ids[76]).toBe(49407);
    expect(enc.truncated).toBe(true);
    expect(enc.promptTokens).toBeGreaterThan(75);
    expect(tok.encode('a cat').truncated).toBe(false);
  });

  it('cleans text like BasicTokenizer without accent stripping or punctuation splitting', () => {
    expect(basicClean('  Café\u00a0AU\tlait\u0000\u200b ')).toBe('café au lait');
    expect(basicClean('東京タワー')).toBe('東 京 タワー');
    expect(basicClean('Hello,World!!')).toBe('hello,world!!');
    // NFC: e + combining acute becomes é.
    expect(basicClean('cafe\u0301')).toBe('café');
  });

  it('keeps special tokens written in the prompt as single ids', async () => {
    const tok = await ClipTokenizer.packaged();
    expect(tok.encode('a <|endoftext|> b').ids.slice(0, 5)).toEqual([49406, 320, 49407, 321, 49407]);
  });

  it('refuses a pad token outside the vocabulary', async () => {
    const e = await ClipTokenizer.packaged({ padToken: '<pad-not-there>' }).catch((err: unknown) => err);
    expect(isCkptError(e) && e.code).toBe('E_TOKENIZER');
  });
});

describe('ckpt2diffusers tokenize', () => {
  it('prints the 77 ids as JSON', async () => {
    const c = fixture.cases.find((x) => x.pad === '!' && x.prompt.includes('!!')) as TokenizerCase;
    const io = memoryIO();
    expect(await main(['tokenize', c.prompt, '--pad', '!', '--json'], io)).toBe(0);
    expect(JSON.parse(io.out)).toEqual(c.ids);
  });

  it('reads a tokenizer folder and prints ids and tokens as text', async () => {
    const io = memoryIO();
    expect(await main(['tokenize', 'a photo of a cat', '--tokenizer', folder], io)).toBe(0);
    const [ids, tokens] = io.out.split('\n');
    expect(ids.split(' ').map(Number)).toEqual(fixture.cases[0].ids);
    expect(tokens).toBe('tokens: <|startoftext|> a</w> photo</w> of</w> a</w> cat</w> <|endoftext|>');
  });
});
