/**
 * UNet2DConditionModel (diffusers 0.31) as an ONNX graph, built from unet/config.json and the
 * UNet safetensors weights: SD 1.x, SD 2.x and SDXL (base and refiner).
 *
 *   time         t (0-d, [1] or [batch]) → float32 → Expand to [batch] → sinusoidal embedding
 *                of width block_out_channels[0] (flip_sin_to_cos, freq_shift; frequencies
 *                exp(-ln(10000)·i / (half - freq_shift)) rounded like torch's float32 math) →
 *                time_embedding.linear_1 → SiLU → linear_2 = emb
 *   SDXL         addition_embed_type 'text_time': every time_ids value → sinusoidal embedding of
 *                width addition_time_embed_dim → [batch, n_ids·width] → concat after text_embeds →
 *                add_embedding.linear_1 → SiLU → linear_2, added to emb
 *   conv_in      then down blocks: (ResnetBlock2D [+ Transformer2DModel]) × layers_per_block,
 *                then a stride-2 conv (padding 1) except in the last block; every output is kept
 *                as a skip connection (conv_in's output first)
 *   mid          resnet → transformer → resnet (UNetMidBlock2DCrossAttn)
 *   up blocks    (concat [h, skip popped from the end] on channels → resnet [+ transformer]) ×
 *                (layers_per_block + 1), then nearest upsampling to the next skip's size + conv
 *                (= ×2 when the sides divide, diffusers' forward_upsample_size otherwise)
 *   out          GroupNorm(norm_num_groups, norm_eps) → SiLU → conv_out
 *
 * ResnetBlock2D: GroupNorm(norm_eps) → SiLU → conv1 → + time_emb_proj(SiLU(emb))[:, :, None, None]
 * → GroupNorm → SiLU → conv2, plus x (1×1 conv_shortcut when channels change), divided by the
 * output scale factor when it is not 1.
 *
 * Transformer2DModel: GroupNorm(norm_num_groups, eps 1e-6) → proj_in (1×1 conv, or Linear after
 * flattening when use_linear_projection) → BasicTransformerBlock × n → proj_out → + residual.
 * BasicTransformerBlock: h += attn1(LN1(h)) (self); h += attn2(LN2(h), encoder_hidden_states);
 * h += ff(LN3(h)), LayerNorm eps 1e-5; attention: to_q/to_k/to_v (no bias), softmax(QKᵀ/√d)·V,
 * to_out.0 (bias); ff: GEGLU (ff.net.0.proj → a, gate halves → a·gelu(gate), exact gelu) →
 * ff.net.2.
 *
 * Heads: diffusers names the per-level head COUNT `attention_head_dim` (num_attention_heads =
 * num_attention_heads ?? attention_head_dim), so heads = that value and the head width is
 * channels / heads (SD 1.5: 8 heads of 40, 80, 160; SD 2.x/SDXL: heads of 64). The mid block uses
 * the last level's value; up blocks use the values reversed.
 *
 * Float16: weights and activations in float16; the sinusoidal embeddings are computed in float32
 * and cast (as diffusers does); attention scores and softmax run in float32 (`upcastAttention`,
 * default on in float16: SD 2.x overflows otherwise), GroupNorm/LayerNorm kernels accumulate in
 * float32.
 *
 * Class labels (num_class_embeds set, class_embed_type null, e.g. the x4 upscaler's noise level):
 * an int64 input class_labels [batch_size] picks rows of class_embedding.weight (Gather), added to
 * emb. only_cross_attention (per block): attn1 of that block's transformers attends to
 * encoder_hidden_states instead of itself. Neither changes a graph whose config does not ask.
 *
 * I/O (both dialects): sample [batch_size, in_channels, height, width], timestep,
 * encoder_hidden_states [batch_size, sequence_length, cross_attention_dim]; SDXL adds
 * text_embeds [batch_size, 1280] and time_ids [batch_size, n_ids] → out_sample (like sample).
 * timestep: 'optimum' → the graph's float type with no declared shape, so a 0-d scalar (what
 * optimum-onnx's pipeline sends) and a [1] tensor (what diffusers.js sends) both load;
 * 'diffusers' → [steps] of the graph's float type (OnnxStableDiffusionPipeline reads the type from
 * the session and sends shape [1] while the batch is 2: the graph broadcasts it).
 * Height and width are dynamic; any size works (odd sides included).
 */
import { ErrorCode, fail } from '../errors.js';
import { Graph, type FloatType, type TensorType, type Value, type WeightSource } from './graph.js';

/** The fields of a diffusers UNet2DConditionModel config this builder reads. */
export interface UnetConfig {
  in_channels?: number;
  out_channels?: number;
  block_out_channels: number[];
  layers_per_block?: number | number[];
  down_block_types: string[];
  up_block_types: string[];
  mid_block_type?: string | null;
  attention_head_dim?: number | number[];
  num_attention_heads?: number | number[] | null;
  transformer_layers_per_block?: number | (number | number[])[];
  reverse_transformer_layers_per_block?: (number | number[])[] | null;
  cross_attention_dim?: number | number[];
  use_linear_projection?: boolean;
  upcast_attention?: boolean;
  only_cross_attention?: boolean | boolean[];
  dual_cross_attention?: boolean;
  flip_sin_to_cos?: boolean;
  freq_shift?: number;
  norm_num_groups?: number;
  norm_eps?: number;
  act_fn?: string;
  center_input_sample?: boolean;
  mid_block_scale_factor?: number;
  resnet_out_scale_factor?: number;
  resnet_time_scale_shift?: string;
  resnet_skip_time_act?: boolean;
  time_embedding_type?: string;
  time_embedding_dim?: number | null;
  time_embedding_act_fn?: string | null;
  timestep_post_act?: string | null;
  time_cond_proj_dim?: number | null;
  class_embed_type?: string | null;
  class_embeddings_concat?: boolean;
  num_class_embeds?: number | null;
  addition_embed_type?: string | null;
  addition_time_embed_dim?: number | null;
  projection_class_embeddings_input_dim?: number | null;
  encoder_hid_dim?: number | null;
  encoder_hid_dim_type?: string | null;
  attention_type?: string;
  conv_in_kernel?: number;
  conv_out_kernel?: number;
  downsample_padding?: number;
}

export type UnetLayout = 'optimum' | 'diffusers';

export interface UnetGraphOptions {
  readonly floatType: FloatType;
  readonly layout: UnetLayout;
  /** True for SDXL pipelines; the config's addition_embed_type decides the extra inputs. */
  readonly isXL?: boolean;
  /** Element type of `timestep` (default: the graph's float type, as both exporters write it). */
  readonly timestepType?: 'float32' | 'float16' | 'int64';
  /** Attention scores and softmax in float32 (default: in float16 graphs always). */
  readonly upcastAttention?: boolean;
  /** Width of SDXL `text_embeds` (default 1280: the pooled text_encoder_2 projection). */
  readonly textEmbedsDim?: number;
  readonly name?: string;
}

const TRANSFORMER_GROUPNORM_EPS = 1e-6;
const LAYERNORM_EPS = 1e-5;

function unsupported(what: string): never {
  return fail(ErrorCode.E_ONNX_EXPORT, undefined, `UNet ${what} is not supported by the ONNX exporter.`);
}

function perLevel<T>(v: T | readonly T[] | null | undefined, n: number, name: string, fallback?: T): T[] {
  if (v === null || v === undefined) {
    if (fallback === undefined) fail(ErrorCode.E_CONFIG, undefined, `UNet config has no ${name}.`);
    return new Array<T>(n).fill(fallback);
  }
  if (Array.isArray(v)) {
    if (v.length !== n) fail(ErrorCode.E_CONFIG, undefined, `UNet config ${name} has ${v.length} entries for ${n} blocks.`);
    return [...(v as readonly T[])];
  }
  return new Array<T>(n).fill(v as T);
}

/** Transformer depth of layer j from a per-block spec: an int, or a per-layer list. */
function depthAt(spec: number | number[], j: number): number {
  const d = Array.isArray(spec) ? spec[j] : spec;
  if (!Number.isInteger(d) || d < 0) {
    fail(ErrorCode.E_CONFIG, undefined, `UNet config transformer_layers_per_block gives no depth for layer ${j} (an asymmetric UNet needs reverse_transformer_layers_per_block).`);
  }
  return d;
}

function checkConfig(c: UnetConfig): void {
  const act = c.act_fn ?? 'silu';
  if (act !== 'silu' && act !== 'swish') unsupported(`act_fn "${act}"`);
  if ((c.time_embedding_type ?? 'positional') !== 'positional') unsupported(`time_embedding_type "${c.time_embedding_type}"`);
  if (c.time_embedding_act_fn) unsupported(`time_embedding_act_fn "${c.time_embedding_act_fn}"`);
  if (c.timestep_post_act) unsupported(`timestep_post_act "${c.timestep_post_act}"`);
  if (c.time_cond_proj_dim) unsupported('time_cond_proj_dim (LCM timestep_cond)');
  if (c.class_embed_type) unsupported(`class_embed_type "${c.class_embed_type}"`);
  if (c.num_class_embeds !== undefined && c.num_class_embeds !== null && (!Number.isInteger(c.num_class_embeds) || c.num_class_embeds < 1)) {
    fail(ErrorCode.E_CONFIG, undefined, `UNet config num_class_embeds ${String(c.num_class_embeds)} is not a positive integer.`);
  }
  if (c.class_embeddings_concat) unsupported('class_embeddings_concat');
  if (c.addition_embed_type && c.addition_embed_type !== 'text_time') unsupported(`addition_embed_type "${c.addition_embed_type}"`);
  if (c.encoder_hid_dim || c.encoder_hid_dim_type) unsupported('encoder_hid_proj');
  if ((c.attention_type ?? 'default') !== 'default') unsupported(`attention_type "${c.attention_type}"`);
  if ((c.resnet_time_scale_shift ?? 'default') !== 'default') unsupported(`resnet_time_scale_shift "${c.resnet_time_scale_shift}"`);
  if (c.resnet_skip_time_act) unsupported('resnet_skip_time_act');
  if (c.dual_cross_attention) unsupported('dual_cross_attention');
  const known = new Set(['CrossAttnDownBlock2D', 'DownBlock2D', 'CrossAttnUpBlock2D', 'UpBlock2D']);
  for (const t of [...c.down_block_types, ...c.up_block_types]) if (!known.has(t)) unsupported(`block type "${t}"`);
  const mid = c.mid_block_type === undefined ? 'UNetMidBlock2DCrossAttn' : c.mid_block_type;
  if (mid !== null && mid !== 'UNetMidBlock2DCrossAttn') unsupported(`mid_block_type "${mid}"`);
  if (c.up_block_types.length !== c.down_block_types.length || c.block_out_channels.length !== c.down_block_types.length) {
    fail(ErrorCode.E_CONFIG, undefined, 'UNet config: down_block_types, up_block_types and block_out_channels differ in length.');
  }
}

/**
 * Sinusoidal frequencies of diffusers' get_timestep_embedding, computed with float32 rounding at
 * each step like torch (exponent = -ln(10000)·arange(half) / (half - shift); exp).
 */
export function timestepFrequencies(dim: number, shift: number, maxPeriod = 10000): number[] {
  const half = Math.floor(dim / 2);
  const f = Math.fround;
  const logp = f(-Math.log(maxPeriod));
  const denom = f(half - shift);
  return Array.from({ length: half }, (_, i) => f(Math.exp(f(f(logp * i) / denom))));
}

class UnetBuilder {
  readonly groups: number;
  readonly eps: number;
  readonly upcast: boolean;
  readonly linearProj: boolean;

  constructor(
    readonly g: Graph,
    readonly config: UnetConfig,
    upcast: boolean,
  ) {
    this.groups = config.norm_num_groups ?? 32;
    this.eps = config.norm_eps ?? 1e-5;
    this.upcast = upcast;
    this.linearProj = config.use_linear_projection ?? false;
  }

  /** [N] float32 timesteps → [N, dim] sinusoidal embedding (float32). */
  sinusoid(t: Value, dim: number): Value {
    const g = this.g;
    const flip = this.config.flip_sin_to_cos ?? true;
    const shift = this.config.freq_shift ?? 0;
    const freqs = g.constFloat(timestepFrequencies(dim, shift), [1, Math.floor(dim / 2)], 'float32');
    const arg = g.mul(g.unsqueeze(t, [1]), freqs);
    const sin = g.sin(arg);
    const cos = g.cos(arg);
    let emb = g.concat(flip ? [cos, sin] : [sin, cos], 1);
    if (dim % 2 === 1) emb = g.pad(emb, [0, 0, 0, 1]);
    return emb;
  }

  /** TimestepEmbedding: linear_1 → SiLU → linear_2. */
  mlp(x: Value, prefix: string): Value {
    const g = this.g;
    return g.linear(g.silu(g.linear(x, `${prefix}.linear_1`)), `${prefix}.linear_2`);
  }

  resnet(x: Value, temb: Value, p: string, outScale = 1): Value {
    const g = this.g;
    let h = g.silu(g.groupNorm(x, `${p}.norm1`, this.groups, this.eps));
    h = g.conv2d(h, `${p}.conv1`);
    if (g.hasWeight(`${p}.time_emb_proj.weight`)) {
      const t = g.unsqueeze(g.linear(g.silu(temb), `${p}.time_emb_proj`), [2, 3]);
      h = g.add(h, t);
    }
    h = g.silu(g.groupNorm(h, `${p}.norm2`, this.groups, this.eps));
    h = g.conv2d(h, `${p}.conv2`);
    const sc = g.hasWeight(`${p}.conv_shortcut.weight`) ? g.conv2d(x, `${p}.conv_shortcut`, { pad: 0 }) : x;
    let out = g.add(sc, h);
    if (outScale !== 1) out = g.div(out, g.scalar(out, outScale));
    return out;
  }

  attention(x: Value, context: Value, p: string, heads: number): Value {
    const g = this.g;
    const inner = g.weightShape(`${p}.to_q.weight`)[0];
    if (inner % heads !== 0) fail(ErrorCode.E_ONNX_EXPORT, undefined, `${p}: ${inner} channels do not split into ${heads} heads.`);
    const q = g.linear(x, `${p}.to_q`);
    const k = g.linear(context, `${p}.to_k`);
    const v = g.linear(context, `${p}.to_v`);
    const a = g.attention(q, k, v, heads, inner / heads, { upcast: this.upcast });
    return g.linear(a, `${p}.to_out.0`);
  }

  /** GEGLU feed-forward: proj → (a, gate) halves → a·gelu(gate) → ff.net.2. */
  feedForward(x: Value, p: string): Value {
    const g = this.g;
    const twice = g.weightShape(`${p}.net.0.proj.weight`)[0];
    const inner = twice / 2;
    const proj = g.linear(x, `${p}.net.0.proj`);
    const a = g.slice(proj, [0], [inner], [-1]);
    const gate = g.slice(proj, [inner], [twice], [-1]);
    return g.linear(g.mul(a, g.gelu(gate)), `${p}.net.2`);
  }

  transformerBlock(h: Value, context: Value, p: string, heads: number, onlyCross = false): Value {
    const g = this.g;
    const n1 = g.layerNormW(h, `${p}.norm1`, LAYERNORM_EPS);
    h = g.add(this.attention(n1, onlyCross ? context : n1, `${p}.attn1`, heads), h);
    h = g.add(this.attention(g.layerNormW(h, `${p}.norm2`, LAYERNORM_EPS), context, `${p}.attn2`, heads), h);
    return g.add(this.feedForward(g.layerNormW(h, `${p}.norm3`, LAYERNORM_EPS), `${p}.ff`), h);
  }

  /** Transformer2DModel (continuous input) with `depth` BasicTransformerBlocks. */
  transformer(x: Value, context: Value, p: string, heads: number, depth: number, onlyCross = false): Value {
    const g = this.g;
    const shape = g.shape(x);
    const inner = g.weightShape(`${p}.proj_in.weight`)[0];
    const n = g.groupNorm(x, `${p}.norm`, this.groups, TRANSFORMER_GROUPNORM_EPS);
    let h: Value;
    if (this.linearProj) {
      const c = g.weightShape(`${p}.proj_in.weight`)[1];
      h = g.linear(g.transpose(g.reshape(n, [0, c, -1]), [0, 2, 1]), `${p}.proj_in`);
    } else {
      h = g.transpose(g.reshape(g.conv2d(n, `${p}.proj_in`, { pad: 0 }), [0, inner, -1]), [0, 2, 1]);
    }
    for (let j = 0; j < depth; j++) h = g.scoped(`tb${j}`, () => this.transformerBlock(h, context, `${p}.transformer_blocks.${j}`, heads, onlyCross));
    let out: Value;
    if (this.linearProj) {
      out = g.reshape(g.transpose(g.linear(h, `${p}.proj_out`), [0, 2, 1]), shape);
    } else {
      const innerShape = g.concat([g.shape(x, 0, 1), g.constInt64([inner]), g.shape(x, 2, 4)], 0);
      out = g.conv2d(g.reshape(g.transpose(h, [0, 2, 1]), innerShape), `${p}.proj_out`, { pad: 0 });
    }
    return g.add(out, x);
  }

  /** Nearest-neighbour resize of NCHW `x` to the spatial size of `like` (torch interpolate size=). */
  upsampleTo(x: Value, like: Value): Value {
    const g = this.g;
    const sizes = g.concat([g.shape(x, 0, 2), g.shape(like, 2, 4)], 0);
    return g.op('Resize', [x, null, null, sizes], { mode: 'nearest', coordinate_transformation_mode: 'asymmetric', nearest_mode: 'floor' });
  }
}

/**
 * The UNet2DConditionModel graph. Signature of export.ts's BuildUnetGraph:
 * (config, weights, { floatType, layout, isXL }) → Graph.
 */
export function buildUnetGraph(config: Record<string, unknown> | UnetConfig, weights: WeightSource, options: UnetGraphOptions): Graph {
  const c = config as UnetConfig;
  checkConfig(c);
  const floatType = options.floatType;
  const g = new Graph({ name: options.name ?? 'unet', floatType, weights });
  const upcast = options.upcastAttention ?? (floatType === 'float16' || (c.upcast_attention ?? false));
  const b = new UnetBuilder(g, c, upcast);

  const levels = c.block_out_channels.length;
  const inCh = c.in_channels ?? 4;
  const outCh = c.out_channels ?? 4;
  const heads = perLevel<number>(c.num_attention_heads ?? c.attention_head_dim, levels, 'attention_head_dim', 8);
  const layersPerBlock = perLevel<number>(c.layers_per_block, levels, 'layers_per_block', 2);
  const depthDown = perLevel<number | number[]>(c.transformer_layers_per_block, levels, 'transformer_layers_per_block', 1);
  const depthUp = c.reverse_transformer_layers_per_block ? perLevel<number | number[]>(c.reverse_transformer_layers_per_block, levels, 'reverse_transformer_layers_per_block') : [...depthDown].reverse();
  // only_cross_attention: attn1 of the down/up blocks' transformers attends to the context (the
  // mid block's UNetMidBlock2DCrossAttn does not take it); up blocks use the list reversed.
  const onlyCross = perLevel<boolean>(c.only_cross_attention, levels, 'only_cross_attention', false);
  const onlyCrossUp = [...onlyCross].reverse();
  const numClassEmbeds = c.num_class_embeds ?? 0;
  const crossDims = perLevel<number>(c.cross_attention_dim, levels, 'cross_attention_dim', 1280);
  if (new Set(crossDims).size !== 1) unsupported(`cross_attention_dim per block (${crossDims.join(', ')})`);
  const isXL = c.addition_embed_type === 'text_time';
  if (options.isXL && !isXL && g.hasWeight('add_embedding.linear_1.weight')) unsupported('add_embedding without addition_embed_type "text_time"');

  // ---------------------------------------------------------------- inputs
  const sampleIn = g.input('sample', floatType, ['batch_size', inCh, 'height', 'width']);
  const tType: TensorType = options.timestepType ?? floatType;
  const timestepIn = g.input('timestep', tType, options.layout === 'diffusers' ? ['steps'] : null);
  const ehsIn = g.input('encoder_hidden_states', floatType, ['batch_size', 'sequence_length', crossDims[0]]);
  let textEmbedsIn: Value | undefined;
  let timeIdsIn: Value | undefined;
  let nIds = 0;
  if (isXL) {
    const addDim = c.addition_time_embed_dim ?? 256;
    const inDim = g.weightShape('add_embedding.linear_1.weight')[1];
    const textDim = options.textEmbedsDim ?? 1280;
    nIds = (inDim - textDim) / addDim;
    if (!Number.isInteger(nIds) || nIds <= 0) fail(ErrorCode.E_ONNX_EXPORT, undefined, `UNet add_embedding takes ${inDim} features, which is not ${textDim} text features plus n × ${addDim} time-id features.`);
    textEmbedsIn = g.input('text_embeds', floatType, ['batch_size', textDim]);
    timeIdsIn = g.input('time_ids', floatType, ['batch_size', nIds]);
  }
  // num_class_embeds (class_embed_type null): class_embedding = Embedding(num_class_embeds,
  // time_embed_dim) indexed by int64 class_labels [batch], added to the time embedding.
  const classLabelsIn = numClassEmbeds > 0 ? g.input('class_labels', 'int64', ['batch_size']) : undefined;

  // ---------------------------------------------------------------- embeddings
  let sample = sampleIn;
  if (c.center_input_sample) sample = g.sub(g.mul(sample, g.scalar(sample, 2)), g.scalar(sample, 1));
  const emb = g.scoped('time', () => {
    const batch = g.shape(sample, 0, 1);
    const t = g.expand(g.cast(g.reshape(timestepIn, [-1]), 'float32'), batch); // [B]
    let e = b.mlp(g.cast(b.sinusoid(t, c.block_out_channels[0]), floatType), 'time_embedding');
    if (isXL) {
      const addDim = c.addition_time_embed_dim ?? 256;
      const ids = g.cast(g.reshape(timeIdsIn!, [-1]), 'float32'); // [B·n]
      const idsEmb = g.cast(g.reshape(b.sinusoid(ids, addDim), [-1, nIds * addDim]), floatType);
      const aug = b.mlp(g.concat([textEmbedsIn!, idsEmb], 1), 'add_embedding');
      e = g.add(e, aug);
    }
    if (classLabelsIn) {
      const rows = g.weightShape('class_embedding.weight')[0];
      if (rows !== numClassEmbeds) fail(ErrorCode.E_ONNX_EXPORT, undefined, `UNet class_embedding has ${rows} rows but num_class_embeds is ${numClassEmbeds}.`);
      e = g.add(e, g.gather(g.weight('class_embedding.weight', { type: floatType }), classLabelsIn, 0));
    }
    return e;
  });
  const ctx = ehsIn;

  // ---------------------------------------------------------------- down
  let h = g.conv2d(sample, 'conv_in');
  const skips: Value[] = [h];
  for (let i = 0; i < levels; i++) {
    const cross = c.down_block_types[i].startsWith('CrossAttn');
    h = g.scoped(`down${i}`, () => {
      let x = h;
      for (let j = 0; j < layersPerBlock[i]; j++) {
        x = g.scoped(`r${j}`, () => b.resnet(x, emb, `down_blocks.${i}.resnets.${j}`, c.resnet_out_scale_factor ?? 1));
        if (cross) x = g.scoped(`a${j}`, () => b.transformer(x, ctx, `down_blocks.${i}.attentions.${j}`, heads[i], depthAt(depthDown[i], j), onlyCross[i]));
        skips.push(x);
      }
      if (i < levels - 1) {
        const pad = c.downsample_padding ?? 1;
        x = g.conv2d(x, `down_blocks.${i}.downsamplers.0.conv`, { stride: 2, pad });
        skips.push(x);
      }
      return x;
    });
  }

  // ---------------------------------------------------------------- mid
  if (c.mid_block_type !== null) {
    h = g.scoped('mid', () => {
      const scale = c.mid_block_scale_factor ?? 1;
      let x = b.resnet(h, emb, 'mid_block.resnets.0', scale);
      for (let j = 0; g.hasWeight(`mid_block.resnets.${j + 1}.conv1.weight`); j++) {
        x = b.transformer(x, ctx, `mid_block.attentions.${j}`, heads[levels - 1], depthAt(depthDown[levels - 1], j));
        x = b.resnet(x, emb, `mid_block.resnets.${j + 1}`, scale);
      }
      return x;
    });
  }

  // ---------------------------------------------------------------- up
  const headsUp = [...heads].reverse();
  const layersUp = [...layersPerBlock].reverse();
  for (let i = 0; i < levels; i++) {
    const cross = c.up_block_types[i].startsWith('CrossAttn');
    h = g.scoped(`up${i}`, () => {
      let x = h;
      for (let j = 0; j < layersUp[i] + 1; j++) {
        const skip = skips.pop();
        if (!skip) fail(ErrorCode.E_ONNX_EXPORT, undefined, 'UNet up blocks consume more skip connections than the down blocks make.');
        x = g.concat([x, skip], 1);
        x = g.scoped(`r${j}`, () => b.resnet(x, emb, `up_blocks.${i}.resnets.${j}`, c.resnet_out_scale_factor ?? 1));
        if (cross) x = g.scoped(`a${j}`, () => b.transformer(x, ctx, `up_blocks.${i}.attentions.${j}`, headsUp[i], depthAt(depthUp[i], j), onlyCrossUp[i]));
      }
      if (i < levels - 1) x = g.conv2d(b.upsampleTo(x, skips[skips.length - 1]), `up_blocks.${i}.upsamplers.0.conv`);
      return x;
    });
  }
  if (skips.length !== 0) fail(ErrorCode.E_ONNX_EXPORT, undefined, `UNet up blocks leave ${skips.length} skip connection(s) unused.`);

  // ---------------------------------------------------------------- out
  h = g.conv2d(g.silu(g.groupNorm(h, 'conv_norm_out', b.groups, b.eps)), 'conv_out');
  g.output(h, 'out_sample', floatType, ['batch_size', outCh, 'height', 'width']);
  return g;
}
