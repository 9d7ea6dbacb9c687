/**
 * PipelineModels (src/generate/pipeline.ts) backed by onnxruntime sessions over an ONNX pipeline
 * folder as exportOnnx writes it (either layout), or as optimum-cli writes it:
 *
 *   text_encoder/model.onnx   input_ids (int64 or int32, as the session declares) → last_hidden_state
 *                             (SDXL: also hidden_states.0..N, the penultimate one read by encodeTextXL;
 *                             absent from the SDXL refiner layout, which has text_encoder_2 alone)
 *   text_encoder_2/model.onnx SDXL only: input_ids → text_embeds, hidden_states.0..N
 *   unet/model.onnx           sample, timestep, encoder_hidden_states → out_sample; the timestep is
 *                             sent with the element type and rank the session declares (0-d
 *                             scalar, [1], or [batch] when its one dim is the sample's batch dim);
 *                             extra inputs (SDXL text_embeds / time_ids, the x4 upscaler's int64
 *                             class_labels) as the session declares their element type
 *   vae_decoder/model.onnx    latent_sample → sample
 *   vae_encoder/model.onnx    sample → latent_parameters (moments) — optional (img2img only; SDXL:
 *                             float32 from the default fp32 export, as force_upcast asks)
 *
 * float16 graphs get float16 inputs and give float16 outputs; both are converted here, so the
 * pipeline always sees float32. Loaded through src/onnx/runtime.ts, the only onnxruntime importer.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { bf16BitsToF32Bits, f16BitsToF32Bits, f32BitsToF16Bits } from '../diffusers/cast.js';
import { CkptError, ErrorCode, fail } from '../errors.js';
import type { PipelineModels } from '../generate/pipeline.js';
import type { SdxlTextEncoderOutput } from '../generate/sdxl.js';
import type { Tensor } from '../generate/tensor.js';
import { createSession, loadOnnxRuntime, type OnnxRuntime, type OrtSession, type OrtTensor } from '../onnx/runtime.js';

import type { Provider } from './providers.js';

const ORT_PROVIDER: Record<Provider, string> = { cpu: 'cpu', cuda: 'cuda', dml: 'dml', coreml: 'coreml' };

interface InputMeta {
  readonly name: string;
  readonly type: string;
  readonly shape: readonly (number | string)[];
}

function inputMeta(session: OrtSession, name: string): InputMeta | undefined {
  const list = (session as unknown as { inputMetadata?: readonly (InputMeta & { isTensor?: boolean })[] }).inputMetadata;
  return list?.find((m) => m.name === name);
}

function toHalf(data: Float32Array): Uint16Array {
  const u = new Uint32Array(data.buffer, data.byteOffset, data.length);
  const out = new Uint16Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = f32BitsToF16Bits(u[i]);
  return out;
}

function toFloat32(t: OrtTensor): Float32Array {
  if (t.type === 'float32') return t.data as Float32Array;
  const type = t.type as string;
  if (type === 'float16' || type === 'bfloat16') {
    const raw = t.data as Uint16Array;
    const out = new Float32Array(raw.length);
    const u = new Uint32Array(out.buffer);
    const conv = type === 'float16' ? f16BitsToF32Bits : bf16BitsToF32Bits;
    for (let i = 0; i < raw.length; i++) u[i] = conv(raw[i]);
    return out;
  }
  if (t.type === 'float64') return Float32Array.from(t.data as Float64Array);
  return fail(ErrorCode.E_ONNX_RUNTIME, undefined, `model output has element type ${t.type} (expected a float type).`);
}

/** One ONNX component. */
class Component {
  constructor(
    readonly name: string,
    readonly session: OrtSession,
    private readonly ort: OnnxRuntime,
  ) {}

  /** A float tensor for input `name`, in the element type the session wants. */
  floatInput(name: string, data: Float32Array, dims: readonly number[]): OrtTensor {
    const type = inputMeta(this.session, name)?.type ?? 'float32';
    if (type === 'float16') return new this.ort.Tensor('float16', toHalf(data), dims as number[]);
    if (type === 'float64') return new this.ort.Tensor('float64', Float64Array.from(data), dims as number[]);
    return new this.ort.Tensor('float32', data, dims as number[]);
  }

  async run(feeds: Record<string, OrtTensor>, output: string): Promise<Tensor> {
    let res: Record<string, OrtTensor>;
    try {
      res = (await this.session.run(feeds)) as Record<string, OrtTensor>;
    } catch (e) {
      throw new CkptError(ErrorCode.E_ONNX_RUNTIME, `${this.name}: onnxruntime failed to run the model (${(e as Error).message}).`, { cause: e });
    }
    const t = res[output] ?? res[this.session.outputNames[0]];
    if (!t) fail(ErrorCode.E_ONNX_RUNTIME, undefined, `${this.name}: the model has no output ${output}.`);
    return { data: toFloat32(t), shape: [...t.dims] };
  }

  /** Every output, as float32. */
  async runAll(feeds: Record<string, OrtTensor>): Promise<Record<string, Tensor>> {
    let res: Record<string, OrtTensor>;
    try {
      res = (await this.session.run(feeds)) as Record<string, OrtTensor>;
    } catch (e) {
      throw new CkptError(ErrorCode.E_ONNX_RUNTIME, `${this.name}: onnxruntime failed to run the model (${(e as Error).message}).`, { cause: e });
    }
    const out: Record<string, Tensor> = {};
    for (const [name, t] of Object.entries(res)) out[name] = { data: toFloat32(t), shape: [...t.dims] };
    return out;
  }

  release(): Promise<void> {
    return this.session.release();
  }
}

export interface OnnxPipelineModels extends PipelineModels {
  /**
   * SDXL text encoders (0: text_encoder, 1: text_encoder_2): `hidden_states[-2]` (the output
   * `hidden_states.{N-1}` of N layers) and, for text_encoder_2, `text_embeds`.
   */
  encodeTextXL(which: 0 | 1, ids: Int32Array): Promise<SdxlTextEncoderOutput>;
  /** Number of UNet calls so far. */
  readonly unetCalls: number;
  /** Input and output names of each session, for reports. */
  readonly describe: Record<string, { inputs: string[]; outputs: string[] }>;
  /** Milliseconds spent creating the sessions. */
  readonly loadMs: number;
  release(): Promise<void>;
}

export interface OnnxModelsOptions {
  provider?: Provider;
  /** Components to load (default all present). */
  components?: readonly ('text_encoder' | 'text_encoder_2' | 'unet' | 'vae_decoder' | 'vae_encoder')[];
}

/** Opens the sessions of an ONNX pipeline folder. */
export async function openOnnxModels(onnxDir: string, options: OnnxModelsOptions = {}): Promise<OnnxPipelineModels> {
  const t0 = performance.now();
  const ort = await loadOnnxRuntime();
  const provider = options.provider ?? 'cpu';
  const providers = provider === 'cpu' ? ['cpu'] : [ORT_PROVIDER[provider], 'cpu'];
  const wanted = options.components ?? ['text_encoder', 'text_encoder_2', 'unet', 'vae_decoder', 'vae_encoder'];
  const open = async (name: string, required: boolean): Promise<Component | undefined> => {
    const path = join(onnxDir, name, 'model.onnx');
    if (!wanted.includes(name as never)) return undefined;
    if (!existsSync(path)) {
      if (required) fail(ErrorCode.E_ONNX_RUNTIME, path, 'is missing from the ONNX pipeline folder.');
      return undefined;
    }
    return new Component(name, await createSession(path, { executionProviders: providers }), ort);
  };
  const loaded: Component[] = [];
  let te: Component | undefined;
  let te2: Component | undefined;
  let unet: Component | undefined;
  let dec: Component | undefined;
  let enc: Component | undefined;
  try {
    // The SDXL refiner layout has text_encoder_2 alone.
    te = await open('text_encoder', !existsSync(join(onnxDir, 'text_encoder_2', 'model.onnx')));
    if (te) loaded.push(te);
    te2 = await open('text_encoder_2', false);
    if (te2) loaded.push(te2);
    unet = await open('unet', true);
    if (unet) loaded.push(unet);
    dec = await open('vae_decoder', true);
    if (dec) loaded.push(dec);
    enc = await open('vae_encoder', false);
    if (enc) loaded.push(enc);
  } catch (e) {
    await Promise.all(loaded.map((c) => c.release().catch(() => undefined)));
    throw e;
  }
  const describe: Record<string, { inputs: string[]; outputs: string[] }> = {};
  for (const c of loaded) describe[c.name] = { inputs: [...c.session.inputNames], outputs: [...c.session.outputNames] };
  const need = (c: Component | undefined, what: string): Component => c ?? fail(ErrorCode.E_PIPELINE, undefined, `${what} was not loaded.`);

  let unetCalls = 0;
  const idsTensor = (c: Component, ids: Int32Array): OrtTensor => {
    const type = inputMeta(c.session, 'input_ids')?.type ?? 'int64';
    return type === 'int32' ? new ort.Tensor('int32', Int32Array.from(ids), [1, ids.length]) : new ort.Tensor('int64', BigInt64Array.from(ids, (v) => BigInt(v)), [1, ids.length]);
  };
  const models: OnnxPipelineModels = {
    get unetCalls() {
      return unetCalls;
    },
    describe,
    loadMs: performance.now() - t0,
    async encodeText(ids: Int32Array): Promise<Tensor> {
      const c = need(te, 'text_encoder');
      return c.run({ input_ids: idsTensor(c, ids) }, 'last_hidden_state');
    },
    async encodeTextXL(which: 0 | 1, ids: Int32Array): Promise<SdxlTextEncoderOutput> {
      const c = which === 0 ? need(te, 'text_encoder') : need(te2, 'text_encoder_2');
      const hidden = c.session.outputNames.filter((n) => /^hidden_states\.\d+$/.test(n));
      if (hidden.length < 2) {
        fail(ErrorCode.E_ONNX_RUNTIME, undefined, `${c.name}: the graph has no hidden_states.N outputs (SDXL needs the penultimate hidden state).`, { hint: 'Re-export the SDXL folder (--reexport).' });
      }
      const penultimateName = `hidden_states.${hidden.length - 2}`;
      const outputs = await c.runAll({ input_ids: idsTensor(c, ids) });
      const penultimate = outputs[penultimateName] ?? fail(ErrorCode.E_ONNX_RUNTIME, undefined, `${c.name}: no output ${penultimateName}.`);
      if (which === 0) return { penultimate };
      const textEmbeds = outputs.text_embeds ?? fail(ErrorCode.E_ONNX_RUNTIME, undefined, `${c.name}: no text_embeds output (expected CLIPTextModelWithProjection).`);
      return { penultimate, textEmbeds };
    },
    async unet(sample: Tensor, timestep: number, ehs: Tensor, extra?: Readonly<Record<string, Tensor>>): Promise<Tensor> {
      const c = need(unet, 'unet');
      unetCalls++;
      const feeds: Record<string, OrtTensor> = {
        sample: c.floatInput('sample', sample.data, sample.shape),
        timestep: timestepTensor(ort, c, timestep, sample.shape[0]),
        encoder_hidden_states: c.floatInput('encoder_hidden_states', ehs.data, ehs.shape),
      };
      for (const [name, t] of Object.entries(extra ?? {})) {
        // class_labels (the x4 upscaler's noise level) is an int64 index input.
        feeds[name] = inputMeta(c.session, name)?.type === 'int64' ? new ort.Tensor('int64', BigInt64Array.from(t.data, (v) => BigInt(Math.round(v))), t.shape as number[]) : c.floatInput(name, t.data, t.shape);
      }
      return c.run(feeds, 'out_sample');
    },
    async vaeDecode(latents: Tensor): Promise<Tensor> {
      const c = need(dec, 'vae_decoder');
      return c.run({ latent_sample: c.floatInput('latent_sample', latents.data, latents.shape) }, 'sample');
    },
    async release(): Promise<void> {
      await Promise.all(loaded.map((c) => c.release().catch(() => undefined)));
    },
  };
  if (enc) {
    const encoder = enc;
    const outputs = encoder.session.outputNames;
    if (outputs.includes('latent_parameters')) {
      models.vaeEncode = (image: Tensor) => encoder.run({ sample: encoder.floatInput('sample', image.data, image.shape) }, 'latent_parameters');
    } else {
      // OnnxStableDiffusionPipeline's encoder samples inside the graph: its moments are not available.
      models.vaeEncode = () =>
        fail(ErrorCode.E_PIPELINE, join(onnxDir, 'vae_encoder', 'model.onnx'), `outputs ${outputs.join(', ')} (expected latent_parameters, the posterior moments).`, {
          hint: 'Export with the default (optimum) layout for img2img.',
        });
    }
  }
  return models;
}

/** The timestep as the UNet session declares it: element type and rank. */
function timestepTensor(ort: OnnxRuntime, c: Component, t: number, batch: number): OrtTensor {
  const meta = inputMeta(c.session, 'timestep');
  const type = meta?.type ?? 'float32';
  const rank = meta?.shape.length ?? 0;
  let dims: number[] = [];
  if (rank === 1) {
    const d = meta?.shape[0];
    const sampleBatch = inputMeta(c.session, 'sample')?.shape[0];
    dims = [typeof d === 'number' ? d : d !== undefined && d === sampleBatch ? batch : 1];
  } else if (rank > 1) {
    fail(ErrorCode.E_ONNX_RUNTIME, undefined, `unet timestep input has rank ${rank} (expected a scalar or one dim).`);
  }
  const n = dims.length ? dims[0] : 1;
  switch (type) {
    case 'int64':
      return new ort.Tensor('int64', new BigInt64Array(n).fill(BigInt(Math.round(t))), dims);
    case 'int32':
      return new ort.Tensor('int32', new Int32Array(n).fill(Math.round(t)), dims);
    case 'float16':
      return new ort.Tensor('float16', toHalf(new Float32Array(n).fill(t)), dims);
    case 'float64':
      return new ort.Tensor('float64', new Float64Array(n).fill(t), dims);
    default:
      return new ort.Tensor('float32', new Float32Array(n).fill(t), dims);
  }
}
