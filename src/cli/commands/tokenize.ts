import type { Argv } from 'yargs';
import { ClipTokenizer } from '../../generate/tokenizer.js';
import type { CliIO } from '../io.js';
import type { CommandModule } from './types.js';

interface TokenizeArgs {
  text: string;
  tokenizer?: string;
  pad?: string;
  json: boolean;
}

/** Prints the token ids a Diffusers pipeline feeds its CLIP text encoder for TEXT. */
export const tokenizeCommand: CommandModule<TokenizeArgs> = {
  command: 'tokenize <text>',
  describe: 'Print the 77 CLIP token ids of a prompt, exactly as transformers\' CLIPTokenizer gives them',
  builder: (y: Argv) =>
    y
      .positional('text', { type: 'string', describe: 'the prompt', demandOption: true })
      .option('tokenizer', { type: 'string', describe: 'a Diffusers tokenizer folder (vocab.json, merges.txt, tokenizer_config.json); default: the bundled CLIP BPE' })
      .option('pad', { type: 'string', describe: 'pad token ("<|endoftext|>" for SD 1.x / SDXL tokenizer, "!" for SD 2.x / SDXL tokenizer_2)' })
      .option('json', { type: 'boolean', default: false, describe: 'print the ids as a JSON array on stdout' }),
  async run(args: TokenizeArgs, io: CliIO): Promise<number> {
    const options = args.pad === undefined ? {} : { padToken: args.pad };
    const tokenizer = args.tokenizer ? await ClipTokenizer.fromFolder(args.tokenizer, options) : await ClipTokenizer.packaged(options);
    const enc = tokenizer.encode(String(args.text));
    if (enc.truncated) {
      io.stderr(`note: the prompt has ${enc.promptTokens} tokens; only the first ${tokenizer.maxLength - 2} are kept.\n`);
    }
    if (args.json) {
      io.stdout(JSON.stringify(enc.ids) + '\n');
    } else {
      io.stdout(`${enc.ids.join(' ')}\n`);
      io.stdout(`tokens: ${enc.tokens.join(' ')}\n`);
    }
    return 0;
  },
};
