/**
 * The state-dict layout (key names, shapes, order) of original CompVis/Stability Stable Diffusion
 * checkpoints, generated from architecture parameters. Used to build synthetic checkpoints of any
 * size for tests and benchmarks: with the tiny parameters of the project's fixtures it reproduces
 * their key lists exactly (tested), with the SD 1.5 / SD 2.x parameters it gives the real files'.
 *
 * Module order follows the original model classes (ldm.modules.diffusionmodules.openaimodel
 * UNetModel, ldm.modules.diffusionmodules.model Encoder/Decoder, transformers CLIPTextModel,
 * open_clip TextTransformer), because torch's state_dict() walks modules in registration order.
 *
 * SDXL checkpoints (Stability's SGM DiffusionEngine) use the same building blocks in another
 * arrangement: a UNet with `label_emb` vector conditioning and a transformer depth per level,
 * the denoiser's `sigmas` buffer, text encoders as `conditioner.embedders.N`, then the VAE
 * (sgmCheckpointTensors; SDXL_BASE_LAYOUT / SDXL_REFINER_LAYOUT are the released models).
 */

export type LayoutDType = 'F32' | 'F16' | 'I64' | 'I32';

export interface LayoutTensor {
  name: string;
  shape: number[];
  /** Set for tensors whose dtype does not follow the checkpoint's float dtype. */
  dtype?: LayoutDType;
}

export interface UnetLayout {
  modelChannels: number;
  channelMult: number[];
  numResBlocks: number;
  /** Level indices (0 = full resolution) that hold a spatial transformer. */
  attentionLevels: number[];
  contextDim: number;
  /** Transformer blocks per attention; a list gives one per level (SGM). */
  transformerDepth: number | number[];
  /** Mid-block transformer depth; SGM defaults it to the last level's depth. */
  transformerDepthMiddle?: number;
  /** SD2-style linear proj_in/proj_out instead of 1x1 convs. */
  linearProjection: boolean;
  inChannels: number;
  outChannels: number;
  /** SGM `adm_in_channels`: a `label_emb` (Linear, SiLU, Linear) vector embedding of this input width. */
  admInChannels?: number;
  /** Integer `num_classes`: a `label_emb` nn.Embedding(numClasses, 4 * modelChannels) (x4 upscaler noise levels). */
  numClasses?: number;
  /** `disable_self_attentions` per level: attn1 attends to the context instead (x4 upscaler). */
  disableSelfAttention?: boolean[];
}

export interface VaeLayout {
  ch: number;
  chMult: number[];
  numResBlocks: number;
  zChannels: number;
  embedDim: number;
}

export type TextEncoderLayout =
  | { kind: 'clip-l'; width: number; layers: number; vocab: number; positions: number; positionIds: boolean }
  | { kind: 'openclip'; width: number; layers: number; vocab: number; positions: number; projectionDim: number };

export interface CheckpointLayout {
  unet: UnetLayout;
  vae: VaeLayout;
  textEncoder: TextEncoderLayout;
  /** LatentDiffusion's registered schedule buffers (betas, alphas_cumprod, ...). */
  scheduleBuffers: boolean;
  /** LitEma copies of the UNet parameters plus decay/num_updates. */
  ema: boolean;
}

const SCHEDULE_BUFFERS = [
  'betas',
  'alphas_cumprod',
  'alphas_cumprod_prev',
  'sqrt_alphas_cumprod',
  'sqrt_one_minus_alphas_cumprod',
  'log_one_minus_alphas_cumprod',
  'sqrt_recip_alphas_cumprod',
  'sqrt_recipm1_alphas_cumprod',
  'posterior_variance',
  'posterior_log_variance_clipped',
  'posterior_mean_coef1',
  'posterior_mean_coef2',
];

type Emit = (name: string, shape: number[], dtype?: LayoutDType) => void;

function linear(emit: Emit, prefix: string, out: number, inp: number, bias = true): void {
  emit(`${prefix}.weight`, [out, inp]);
  if (bias) emit(`${prefix}.bias`, [out]);
}

function conv(emit: Emit, prefix: string, out: number, inp: number, k: number): void {
  emit(`${prefix}.weight`, [out, inp, k, k]);
  emit(`${prefix}.bias`, [out]);
}

function norm(emit: Emit, prefix: string, ch: number): void {
  emit(`${prefix}.weight`, [ch]);
  emit(`${prefix}.bias`, [ch]);
}

/** openaimodel.ResBlock: in_layers (GroupNorm, SiLU, conv), emb_layers, out_layers, skip. */
function resBlock(emit: Emit, p: string, inCh: number, outCh: number, embDim: number): void {
  norm(emit, `${p}.in_layers.0`, inCh);
  conv(emit, `${p}.in_layers.2`, outCh, inCh, 3);
  linear(emit, `${p}.emb_layers.1`, outCh, embDim);
  norm(emit, `${p}.out_layers.0`, outCh);
  conv(emit, `${p}.out_layers.3`, outCh, outCh, 3);
  if (inCh !== outCh) conv(emit, `${p}.skip_connection`, outCh, inCh, 1);
}

function depthAt(u: UnetLayout, level: number): number {
  return typeof u.transformerDepth === 'number' ? u.transformerDepth : u.transformerDepth[level];
}

function middleDepth(u: UnetLayout): number {
  return u.transformerDepthMiddle ?? depthAt(u, u.channelMult.length - 1);
}

/** attention.SpatialTransformer with BasicTransformerBlocks (attn1, ff, attn2, norm1..3). */
function spatialTransformer(emit: Emit, p: string, ch: number, u: UnetLayout, depth: number, noSelfAttention = false): void {
  norm(emit, `${p}.norm`, ch);
  const proj = (name: string) => (u.linearProjection ? linear(emit, name, ch, ch) : conv(emit, name, ch, ch, 1));
  proj(`${p}.proj_in`);
  for (let d = 0; d < depth; d++) {
    const b = `${p}.transformer_blocks.${d}`;
    attention(emit, `${b}.attn1`, ch, noSelfAttention ? u.contextDim : ch);
    linear(emit, `${b}.ff.net.0.proj`, ch * 8, ch); // GEGLU: inner dim 4*ch, projected to 2*inner
    linear(emit, `${b}.ff.net.2`, ch, ch * 4);
    attention(emit, `${b}.attn2`, ch, u.contextDim);
    for (const n of ['norm1', 'norm2', 'norm3']) norm(emit, `${b}.${n}`, ch);
  }
  proj(`${p}.proj_out`);
}

function attention(emit: Emit, p: string, ch: number, ctx: number): void {
  linear(emit, `${p}.to_q`, ch, ch, false);
  linear(emit, `${p}.to_k`, ch, ctx, false);
  linear(emit, `${p}.to_v`, ch, ctx, false);
  linear(emit, `${p}.to_out.0`, ch, ch);
}

/** time_embed and the class / vector embedding (label_emb), as UNetModel registers them first. */
function embeddings(emit: Emit, u: UnetLayout): number {
  const C = u.modelChannels;
  const embDim = C * 4;
  linear(emit, 'time_embed.0', embDim, C);
  linear(emit, 'time_embed.2', embDim, embDim);
  if (u.numClasses !== undefined) emit('label_emb.weight', [u.numClasses, embDim]);
  if (u.admInChannels !== undefined) {
    linear(emit, 'label_emb.0.0', embDim, u.admInChannels);
    linear(emit, 'label_emb.0.2', embDim, embDim);
  }
  return embDim;
}

/**
 * input_blocks (conv_in, ResBlocks with their transformers, downsamplers); `afterBlock` sees the
 * output width of every input block in order (a ControlNet adds one zero conv per block).
 */
function inputBlocks(emit: Emit, u: UnetLayout, embDim: number): number[] {
  const C = u.modelChannels;
  conv(emit, 'input_blocks.0.0', C, u.inChannels, 3);
  const skipChannels = [C];
  let ch = C;
  let block = 1;
  u.channelMult.forEach((mult, level) => {
    for (let j = 0; j < u.numResBlocks; j++) {
      resBlock(emit, `input_blocks.${block}.0`, ch, mult * C, embDim);
      ch = mult * C;
      if (u.attentionLevels.includes(level)) {
        spatialTransformer(emit, `input_blocks.${block}.1`, ch, u, depthAt(u, level), u.disableSelfAttention?.[level] === true);
      }
      skipChannels.push(ch);
      block += 1;
    }
    if (level !== u.channelMult.length - 1) {
      conv(emit, `input_blocks.${block}.0.op`, ch, ch, 3);
      skipChannels.push(ch);
      block += 1;
    }
  });
  return skipChannels;
}

function middleBlock(emit: Emit, u: UnetLayout, ch: number, embDim: number): void {
  resBlock(emit, 'middle_block.0', ch, ch, embDim);
  spatialTransformer(emit, 'middle_block.1', ch, u, middleDepth(u));
  resBlock(emit, 'middle_block.2', ch, ch, embDim);
}

export function unetTensors(u: UnetLayout, prefix = 'model.diffusion_model.'): LayoutTensor[] {
  const out: LayoutTensor[] = [];
  const emit: Emit = (name, shape, dtype) => out.push({ name: prefix + name, shape, ...(dtype ? { dtype } : {}) });
  const C = u.modelChannels;
  const embDim = embeddings(emit, u);
  const skipChannels = inputBlocks(emit, u, embDim);
  let ch = skipChannels[skipChannels.length - 1];
  middleBlock(emit, u, ch, embDim);
  let block = 0;
  [...u.channelMult.keys()].reverse().forEach((level) => {
    const mult = u.channelMult[level];
    for (let j = 0; j <= u.numResBlocks; j++) {
      const skip = skipChannels.pop()!;
      resBlock(emit, `output_blocks.${block}.0`, ch + skip, mult * C, embDim);
      ch = mult * C;
      let sub = 1;
      if (u.attentionLevels.includes(level)) {
        spatialTransformer(emit, `output_blocks.${block}.${sub++}`, ch, u, depthAt(u, level), u.disableSelfAttention?.[level] === true);
      }
      if (level !== 0 && j === u.numResBlocks) conv(emit, `output_blocks.${block}.${sub}.conv`, ch, ch, 3);
      block += 1;
    }
  });
  norm(emit, 'out.0', ch);
  conv(emit, 'out.2', u.outChannels, ch, 3);
  return out;
}

/** model.ResnetBlock of the autoencoder: norm1, conv1, norm2, conv2, nin_shortcut. */
function vaeResnet(emit: Emit, p: string, inCh: number, outCh: number): void {
  norm(emit, `${p}.norm1`, inCh);
  conv(emit, `${p}.conv1`, outCh, inCh, 3);
  norm(emit, `${p}.norm2`, outCh);
  conv(emit, `${p}.conv2`, outCh, outCh, 3);
  if (inCh !== outCh) conv(emit, `${p}.nin_shortcut`, outCh, inCh, 1);
}

function vaeMid(emit: Emit, p: string, ch: number): void {
  vaeResnet(emit, `${p}.block_1`, ch, ch);
  norm(emit, `${p}.attn_1.norm`, ch);
  for (const n of ['q', 'k', 'v', 'proj_out']) conv(emit, `${p}.attn_1.${n}`, ch, ch, 1);
  vaeResnet(emit, `${p}.block_2`, ch, ch);
}

export function vaeTensors(v: VaeLayout, prefix = 'first_stage_model.'): LayoutTensor[] {
  const out: LayoutTensor[] = [];
  const emit: Emit = (name, shape, dtype) => out.push({ name: prefix + name, shape, ...(dtype ? { dtype } : {}) });
  const levels = v.chMult.length;
  conv(emit, 'encoder.conv_in', v.ch, 3, 3);
  let ch = v.ch;
  v.chMult.forEach((mult, level) => {
    for (let j = 0; j < v.numResBlocks; j++) {
      vaeResnet(emit, `encoder.down.${level}.block.${j}`, ch, v.ch * mult);
      ch = v.ch * mult;
    }
    if (level !== levels - 1) conv(emit, `encoder.down.${level}.downsample.conv`, ch, ch, 3);
  });
  vaeMid(emit, 'encoder.mid', ch);
  norm(emit, 'encoder.norm_out', ch);
  conv(emit, 'encoder.conv_out', 2 * v.zChannels, ch, 3);
  decoderTensors(emit, v);
  conv(emit, 'quant_conv', 2 * v.embedDim, 2 * v.zChannels, 1);
  conv(emit, 'post_quant_conv', v.zChannels, v.embedDim, 1);
  return out;
}

/** The decoder builds its up levels from the lowest resolution but stores them as up.0 .. up.N-1. */
function decoderTensors(emit: Emit, v: VaeLayout): void {
  const levels = v.chMult.length;
  const topCh = v.ch * v.chMult[levels - 1];
  conv(emit, 'decoder.conv_in', topCh, v.zChannels, 3);
  vaeMid(emit, 'decoder.mid', topCh);
  const ups: LayoutTensor[][] = [];
  let ch = topCh;
  for (let level = levels - 1; level >= 0; level--) {
    const level_out: LayoutTensor[] = [];
    const e: Emit = (name, shape) => level_out.push({ name, shape });
    for (let j = 0; j <= v.numResBlocks; j++) {
      vaeResnet(e, `decoder.up.${level}.block.${j}`, ch, v.ch * v.chMult[level]);
      ch = v.ch * v.chMult[level];
    }
    if (level !== 0) conv(e, `decoder.up.${level}.upsample.conv`, ch, ch, 3);
    ups[level] = level_out;
  }
  for (const level of ups) for (const t of level) emit(t.name, t.shape);
  norm(emit, 'decoder.norm_out', ch);
  conv(emit, 'decoder.conv_out', 3, ch, 3);
}

/** `prefix`: where the encoder sits (LatentDiffusion's cond_stage_model by default). */
export function textEncoderTensors(t: TextEncoderLayout, prefix?: string): LayoutTensor[] {
  return t.kind === 'clip-l' ? clipTensors(t, prefix ?? 'cond_stage_model.transformer.') : openClipTensors(t, prefix ?? 'cond_stage_model.model.');
}

function clipTensors(t: Extract<TextEncoderLayout, { kind: 'clip-l' }>, prefix: string): LayoutTensor[] {
  const out: LayoutTensor[] = [];
  const emit: Emit = (name, shape, dtype) => out.push({ name: prefix + 'text_model.' + name, shape, ...(dtype ? { dtype } : {}) });
  const D = t.width;
  if (t.positionIds) emit('embeddings.position_ids', [1, t.positions], 'I64');
  emit('embeddings.token_embedding.weight', [t.vocab, D]);
  emit('embeddings.position_embedding.weight', [t.positions, D]);
  for (let n = 0; n < t.layers; n++) {
    const p = `encoder.layers.${n}`;
    for (const proj of ['k_proj', 'v_proj', 'q_proj', 'out_proj']) linear(emit, `${p}.self_attn.${proj}`, D, D);
    norm(emit, `${p}.layer_norm1`, D);
    linear(emit, `${p}.mlp.fc1`, 4 * D, D);
    linear(emit, `${p}.mlp.fc2`, D, 4 * D);
    norm(emit, `${p}.layer_norm2`, D);
  }
  norm(emit, 'final_layer_norm', D);
  return out;
}

function openClipTensors(t: Extract<TextEncoderLayout, { kind: 'openclip' }>, prefix: string): LayoutTensor[] {
  const out: LayoutTensor[] = [];
  const emit: Emit = (name, shape, dtype) => out.push({ name: prefix + name, shape, ...(dtype ? { dtype } : {}) });
  const D = t.width;
  emit('positional_embedding', [t.positions, D]);
  emit('text_projection', [D, t.projectionDim]);
  emit('logit_scale', []);
  // open_clip registers the transformer before token_embedding and ln_final.
  for (let n = 0; n < t.layers; n++) {
    const p = `transformer.resblocks.${n}`;
    norm(emit, `${p}.ln_1`, D);
    emit(`${p}.attn.in_proj_weight`, [3 * D, D]);
    emit(`${p}.attn.in_proj_bias`, [3 * D]);
    linear(emit, `${p}.attn.out_proj`, D, D);
    norm(emit, `${p}.ln_2`, D);
    linear(emit, `${p}.mlp.c_fc`, 4 * D, D);
    linear(emit, `${p}.mlp.c_proj`, D, 4 * D);
  }
  emit('token_embedding.weight', [t.vocab, D]);
  norm(emit, 'ln_final', D);
  return out;
}

/** LitEma names each shadow parameter by the UNet key with `model.` dropped and all dots removed. */
function emaTensors(unet: LayoutTensor[]): LayoutTensor[] {
  const copies = unet.map((t) => ({ ...t, name: 'model_ema.' + t.name.split('.').slice(1).join('') }));
  return [{ name: 'model_ema.decay', shape: [] }, { name: 'model_ema.num_updates', shape: [], dtype: 'I32' as const }, ...copies];
}

/** Every tensor of a full LatentDiffusion state dict, in torch's state_dict() order. */
export function checkpointTensors(layout: CheckpointLayout): LayoutTensor[] {
  const unet = unetTensors(layout.unet);
  return [
    ...(layout.scheduleBuffers ? SCHEDULE_BUFFERS.map((name) => ({ name, shape: [1000] })) : []),
    ...unet,
    ...(layout.ema ? emaTensors(unet) : []),
    ...vaeTensors(layout.vae),
    ...textEncoderTensors(layout.textEncoder),
  ];
}

/** The architecture of the released SD 1.x checkpoints (v1-inference.yaml). */
export const SD15_LAYOUT: CheckpointLayout = {
  unet: {
    modelChannels: 320,
    channelMult: [1, 2, 4, 4],
    numResBlocks: 2,
    attentionLevels: [0, 1, 2],
    contextDim: 768,
    transformerDepth: 1,
    linearProjection: false,
    inChannels: 4,
    outChannels: 4,
  },
  vae: { ch: 128, chMult: [1, 2, 4, 4], numResBlocks: 2, zChannels: 4, embedDim: 4 },
  textEncoder: { kind: 'clip-l', width: 768, layers: 12, vocab: 49408, positions: 77, positionIds: true },
  scheduleBuffers: true,
  ema: false,
};

/** The architecture of the released SD 2.x checkpoints (v2-inference(-v).yaml). */
export const SD2_LAYOUT: CheckpointLayout = {
  unet: { ...SD15_LAYOUT.unet, contextDim: 1024, linearProjection: true },
  vae: SD15_LAYOUT.vae,
  textEncoder: { kind: 'openclip', width: 1024, layers: 24, vocab: 49408, positions: 77, projectionDim: 1024 },
  scheduleBuffers: true,
  ema: false,
};

// ------------------------------------------------------------------------------------------------
// SGM (SDXL)
// ------------------------------------------------------------------------------------------------

export interface SgmCheckpointLayout {
  /** `admInChannels` set: SDXL's label_emb. */
  unet: UnetLayout;
  vae: VaeLayout;
  /**
   * `conditioner.embedders` with weights, by index: CLIP-L in transformers layout sits at
   * `embedders.N.transformer.`, OpenCLIP at `embedders.N.model.` (the size/crop embedders that
   * follow have no weights).
   */
  embedders: TextEncoderLayout[];
  /** DiscreteDenoiser's `denoiser.sigmas` buffer (1000 entries). */
  denoiserSigmas: boolean;
  /** LitEma copies of the UNet, stored after the VAE (DiffusionEngine registers model_ema last). */
  ema: boolean;
  /** ComfyUI's empty marker tensors `v_pred` / `ztsnr`, appended as its savers do. */
  markers?: ('v_pred' | 'ztsnr')[];
}

/** Every tensor of an SGM DiffusionEngine state dict (model, denoiser, conditioner, first stage, EMA). */
export function sgmCheckpointTensors(layout: SgmCheckpointLayout): LayoutTensor[] {
  const unet = unetTensors(layout.unet);
  const embedders = layout.embedders.flatMap((e, i) =>
    textEncoderTensors(e, `conditioner.embedders.${i}.${e.kind === 'clip-l' ? 'transformer' : 'model'}.`),
  );
  return [
    ...unet,
    ...(layout.denoiserSigmas ? [{ name: 'denoiser.sigmas', shape: [1000] }] : []),
    ...embedders,
    ...vaeTensors(layout.vae),
    ...(layout.ema ? emaTensors(unet) : []),
    ...(layout.markers ?? []).map((name) => ({ name, shape: [0] })),
  ];
}

/** SGM architecture parameters under their YAML names, as the fixtures' case.json records them. */
export interface SgmParams {
  readonly unet: {
    readonly adm_in_channels: number;
    readonly model_channels: number;
    readonly attention_resolutions: readonly number[];
    readonly num_res_blocks: number;
    readonly channel_mult: readonly number[];
    readonly transformer_depth: number | readonly number[];
    readonly context_dim: number;
    readonly in_channels?: number;
  };
  readonly vae: { readonly ch: number; readonly ch_mult: readonly number[]; readonly num_res_blocks: number; readonly z_channels: number; readonly embed_dim: number };
  /** `te` (CLIP-L, embedder 0) is absent for a refiner; `te2` is OpenCLIP (embedder 1, or 0 without `te`). */
  readonly text_encoders: {
    readonly te?: { readonly width: number; readonly layers: number; readonly vocab_size: number };
    readonly te2: { readonly width: number; readonly layers: number; readonly vocab_size: number; readonly embed_dim: number };
  };
  readonly ema_copies?: boolean;
}

/** The layout of an SGM checkpoint from its YAML-style parameters (linear transformers, as every SDXL). */
export function sgmLayout(p: SgmParams): SgmCheckpointLayout {
  const { unet: u, text_encoders: te } = p;
  const embedders: TextEncoderLayout[] = [];
  if (te.te) embedders.push({ kind: 'clip-l', width: te.te.width, layers: te.te.layers, vocab: te.te.vocab_size, positions: 77, positionIds: true });
  embedders.push({ kind: 'openclip', width: te.te2.width, layers: te.te2.layers, vocab: te.te2.vocab_size, positions: 77, projectionDim: te.te2.embed_dim });
  return {
    unet: {
      modelChannels: u.model_channels,
      channelMult: [...u.channel_mult],
      numResBlocks: u.num_res_blocks,
      // attention_resolutions are downsampling factors 1, 2, 4, ...: level l has factor 2^l.
      attentionLevels: u.channel_mult.map((_, l) => l).filter((l) => u.attention_resolutions.includes(2 ** l)),
      contextDim: u.context_dim,
      transformerDepth: typeof u.transformer_depth === 'number' ? u.transformer_depth : [...u.transformer_depth],
      linearProjection: true,
      inChannels: u.in_channels ?? 4,
      outChannels: 4,
      admInChannels: u.adm_in_channels,
    },
    vae: { ch: p.vae.ch, chMult: [...p.vae.ch_mult], numResBlocks: p.vae.num_res_blocks, zChannels: p.vae.z_channels, embedDim: p.vae.embed_dim },
    embedders,
    denoiserSigmas: true,
    ema: p.ema_copies === true,
  };
}

const SDXL_VAE: VaeLayout = { ch: 128, chMult: [1, 2, 4, 4], numResBlocks: 2, zChannels: 4, embedDim: 4 };
const OPENCLIP_BIGG: TextEncoderLayout = { kind: 'openclip', width: 1280, layers: 32, vocab: 49408, positions: 77, projectionDim: 1280 };

/** Stability's SDXL base 1.0 (sd_xl_base.yaml): no attention at full resolution, depths [0, 2, 10]. */
export const SDXL_BASE_LAYOUT: SgmCheckpointLayout = {
  unet: {
    modelChannels: 320,
    channelMult: [1, 2, 4],
    numResBlocks: 2,
    attentionLevels: [1, 2],
    contextDim: 2048,
    transformerDepth: [0, 2, 10],
    linearProjection: true,
    inChannels: 4,
    outChannels: 4,
    admInChannels: 2816,
  },
  vae: SDXL_VAE,
  embedders: [{ kind: 'clip-l', width: 768, layers: 12, vocab: 49408, positions: 77, positionIds: true }, OPENCLIP_BIGG],
  denoiserSigmas: true,
  ema: false,
};

/** Stability's SDXL refiner 1.0 (sd_xl_refiner.yaml): 384 channels, 4 levels, depth 4, bigG only. */
export const SDXL_REFINER_LAYOUT: SgmCheckpointLayout = {
  unet: {
    modelChannels: 384,
    channelMult: [1, 2, 4, 4],
    numResBlocks: 2,
    attentionLevels: [1, 2],
    contextDim: 1280,
    transformerDepth: 4,
    linearProjection: true,
    inChannels: 4,
    outChannels: 4,
    admInChannels: 2560,
  },
  vae: SDXL_VAE,
  embedders: [OPENCLIP_BIGG],
  denoiserSigmas: true,
  ema: false,
};

// ------------------------------------------------------------------------------------------------
// ControlNet, x4 upscaler, SD 2.1 unCLIP
// ------------------------------------------------------------------------------------------------

export interface ControlNetLayout {
  /** The UNet it controls (only the down half and middle block are built; `admInChannels` for SDXL). */
  unet: UnetLayout;
  /** `hint_channels`: channels of the conditioning image. */
  hintChannels: number;
  /** Output widths of the hint encoder's conv_in and of its three strided convs (16, 32, 96, 256 in cldm.py). */
  hintWidths: [number, number, number, number];
  /** `control_model.` for ControlNet 1.1 files, '' for bare ones. */
  prefix: string;
}

/**
 * cldm.cldm.ControlNet in state_dict order: time_embed (and label_emb), input_blocks, zero_convs
 * (one 1x1 conv per input block), input_hint_block (8 convs at even indices, SiLU between),
 * middle_block, middle_block_out.
 */
export function controlNetTensors(c: ControlNetLayout): LayoutTensor[] {
  const out: LayoutTensor[] = [];
  const emit: Emit = (name, shape, dtype) => out.push({ name: c.prefix + name, shape, ...(dtype ? { dtype } : {}) });
  const embDim = embeddings(emit, c.unet);
  const widths = inputBlocks(emit, c.unet, embDim);
  widths.forEach((w, i) => conv(emit, `zero_convs.${i}.0`, w, w, 1));
  const [w0, w1, w2, w3] = c.hintWidths;
  const hint: [number, number][] = [
    [w0, c.hintChannels],
    [w0, w0],
    [w1, w0],
    [w1, w1],
    [w2, w1],
    [w2, w2],
    [w3, w2],
    [c.unet.modelChannels, w3],
  ];
  hint.forEach(([o, i], k) => conv(emit, `input_hint_block.${2 * k}`, o, i, 3));
  const ch = widths[widths.length - 1];
  middleBlock(emit, c.unet, ch, embDim);
  conv(emit, 'middle_block_out.0', ch, ch, 1);
  return out;
}

/** Schedule buffers of ldm.modules.diffusionmodules.upscaling.AbstractLowScaleModel.register_schedule. */
const LOW_SCALE_BUFFERS = [
  'betas',
  'alphas_cumprod',
  'alphas_cumprod_prev',
  'sqrt_alphas_cumprod',
  'sqrt_one_minus_alphas_cumprod',
  'log_one_minus_alphas_cumprod',
  'sqrt_recip_alphas_cumprod',
  'sqrt_recipm1_alphas_cumprod',
];

export interface UpscalerLayout {
  /** inChannels 7, `numClasses` (1000), `disableSelfAttention` per level. */
  unet: UnetLayout;
  /** chMult of 3 levels (x4-upscaling.yaml: [1, 2, 4]). */
  vae: VaeLayout;
  textEncoder: Extract<TextEncoderLayout, { kind: 'openclip' }>;
}

/** LatentUpscaleDiffusion: LatentDiffusion's tensors, then low_scale_model's schedule buffers. */
export function upscalerCheckpointTensors(l: UpscalerLayout): LayoutTensor[] {
  return [
    ...checkpointTensors({ unet: l.unet, vae: l.vae, textEncoder: l.textEncoder, scheduleBuffers: true, ema: false }),
    ...LOW_SCALE_BUFFERS.map((name) => ({ name: `low_scale_model.${name}`, shape: [1000] })),
  ];
}

/** Stability's stable-diffusion-x4-upscaler (x4-upscaling.yaml). */
export const X4_UPSCALER_LAYOUT: UpscalerLayout = {
  unet: {
    modelChannels: 256,
    channelMult: [1, 2, 2, 4],
    numResBlocks: 2,
    attentionLevels: [1, 2, 3],
    contextDim: 1024,
    transformerDepth: 1,
    linearProjection: true,
    inChannels: 7,
    outChannels: 4,
    numClasses: 1000,
    disableSelfAttention: [true, true, true, false],
  },
  vae: { ch: 128, chMult: [1, 2, 4], numResBlocks: 2, zChannels: 4, embedDim: 4 },
  textEncoder: { kind: 'openclip', width: 1024, layers: 24, vocab: 49408, positions: 77, projectionDim: 1024 },
};

/** A CLIP vision tower (open_clip / OpenAI VisionTransformer). */
export interface VisionTowerLayout {
  width: number;
  layers: number;
  patch: number;
  imageSize: number;
  /** Output width of `proj` (the image embedding). */
  embedDim: number;
}

/** The CLIP model inside the unCLIP image embedder. */
export interface UnclipEmbedderLayout {
  visual: VisionTowerLayout;
  /** Text-side width of the CLIP model (its remnants are stored next to the vision tower). */
  textWidth: number;
  textVocab: number;
  /** ClipImageEmbedder (OpenAI ViT-L/14, unCLIP-L) keeps its text transformer; FrozenOpenCLIPImageEmbedder (unCLIP-H) deletes it. */
  textLayers?: number;
}

export interface UnclipLayout {
  /** `admInChannels` = 2 x embedDim (image embedding + noise-level embedding). */
  unet: UnetLayout;
  vae: VaeLayout;
  textEncoder: Extract<TextEncoderLayout, { kind: 'openclip' }>;
  embedder: UnclipEmbedderLayout;
  /** noise_augmentor.data_mean / data_std ([1, embedDim]); Stability registers them non-persistent, so real files lack them. */
  normalizerStats?: boolean;
}

function residualBlocks(emit: Emit, prefix: string, width: number, layers: number): void {
  for (let n = 0; n < layers; n++) {
    const p = `${prefix}.resblocks.${n}`;
    norm(emit, `${p}.ln_1`, width);
    emit(`${p}.attn.in_proj_weight`, [3 * width, width]);
    emit(`${p}.attn.in_proj_bias`, [3 * width]);
    linear(emit, `${p}.attn.out_proj`, width, width);
    norm(emit, `${p}.ln_2`, width);
    linear(emit, `${p}.mlp.c_fc`, 4 * width, width);
    linear(emit, `${p}.mlp.c_proj`, width, 4 * width);
  }
}

/**
 * The embedder's CLIP model in state_dict order: its own parameters (positional_embedding,
 * text_projection, logit_scale), then visual (class_embedding, positional_embedding, proj, conv1,
 * ln_pre, transformer, ln_post), the text transformer when kept, token_embedding, ln_final.
 */
function unclipEmbedderTensors(e: UnclipEmbedderLayout, prefix = 'embedder.model.'): LayoutTensor[] {
  const out: LayoutTensor[] = [];
  const emit: Emit = (name, shape, dtype) => out.push({ name: prefix + name, shape, ...(dtype ? { dtype } : {}) });
  const v = e.visual;
  emit('positional_embedding', [77, e.textWidth]);
  emit('text_projection', [e.textWidth, v.embedDim]);
  emit('logit_scale', []);
  emit('visual.class_embedding', [v.width]);
  emit('visual.positional_embedding', [(v.imageSize / v.patch) ** 2 + 1, v.width]);
  emit('visual.proj', [v.width, v.embedDim]);
  emit('visual.conv1.weight', [v.width, 3, v.patch, v.patch]);
  norm(emit, 'visual.ln_pre', v.width);
  residualBlocks(emit, 'visual.transformer', v.width, v.layers);
  norm(emit, 'visual.ln_post', v.width);
  if (e.textLayers !== undefined) residualBlocks(emit, 'transformer', e.textWidth, e.textLayers);
  emit('token_embedding.weight', [e.textVocab, e.textWidth]);
  norm(emit, 'ln_final', e.textWidth);
  return out;
}

/**
 * ImageEmbeddingConditionedLatentDiffusion: LatentDiffusion's tensors, then the embedder and the
 * noise augmentor (CLIPEmbeddingNoiseAugmentation: its schedule buffers).
 */
export function unclipCheckpointTensors(l: UnclipLayout): LayoutTensor[] {
  const E = l.embedder.visual.embedDim;
  return [
    ...checkpointTensors({ unet: l.unet, vae: l.vae, textEncoder: l.textEncoder, scheduleBuffers: true, ema: false }),
    ...unclipEmbedderTensors(l.embedder),
    ...LOW_SCALE_BUFFERS.map((name) => ({ name: `noise_augmentor.${name}`, shape: [1000] })),
    ...(l.normalizerStats ? [{ name: 'noise_augmentor.data_mean', shape: [1, E] }, { name: 'noise_augmentor.data_std', shape: [1, E] }] : []),
  ];
}

const SD21_UNCLIP_UNET: UnetLayout = { ...SD2_LAYOUT.unet, admInChannels: 2048 };

/** sd21-unclip-h (v2-1-stable-unclip-h-inference.yaml): OpenCLIP ViT-H/14 image embedder. */
export const SD21_UNCLIP_H_LAYOUT: UnclipLayout = {
  unet: SD21_UNCLIP_UNET,
  vae: SD2_LAYOUT.vae,
  textEncoder: { kind: 'openclip', width: 1024, layers: 24, vocab: 49408, positions: 77, projectionDim: 1024 },
  embedder: { visual: { width: 1280, layers: 32, patch: 14, imageSize: 224, embedDim: 1024 }, textWidth: 1024, textVocab: 49408 },
};

/** sd21-unclip-l (v2-1-stable-unclip-l-inference.yaml): OpenAI CLIP ViT-L/14 image embedder, text tower kept. */
export const SD21_UNCLIP_L_LAYOUT: UnclipLayout = {
  unet: { ...SD21_UNCLIP_UNET, admInChannels: 1536 },
  vae: SD2_LAYOUT.vae,
  textEncoder: SD21_UNCLIP_H_LAYOUT.textEncoder,
  embedder: { visual: { width: 1024, layers: 24, patch: 14, imageSize: 224, embedDim: 768 }, textWidth: 768, textVocab: 49408, textLayers: 12 },
};

/** lllyasviel's SD 1.5 ControlNet 1.1 (cldm_v15.yaml control_stage_config). */
export const CONTROLNET_SD15_LAYOUT: ControlNetLayout = {
  unet: SD15_LAYOUT.unet,
  hintChannels: 3,
  hintWidths: [16, 32, 96, 256],
  prefix: 'control_model.',
};
