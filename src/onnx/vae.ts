/**
 * AutoencoderKL (diffusers) encoder and decoder as ONNX graphs, built from vae/config.json and
 * the VAE safetensors weights.
 *
 * Encoder: conv_in → down blocks (ResnetBlock2D × layers_per_block, then, except in the last
 * block, Pad(0,1,0,1) + Conv stride 2) → mid block (resnet, single-head attention over H·W,
 * resnet) → GroupNorm → SiLU → conv_out → quant_conv (when use_quant_conv) = moments
 * [B, 2·latent, h, w]. mean, logvar = split(moments); logvar = clip(logvar, -30, 20);
 * std = exp(0.5·logvar).
 *
 * Decoder: post_quant_conv (when use_post_quant_conv) → conv_in → mid block → up blocks
 * (layers_per_block + 1 resnets, then, except in the last block, nearest ×2 + conv) → GroupNorm →
 * SiLU → conv_out.
 *
 * ResnetBlock2D: GroupNorm(eps 1e-6) → SiLU → conv1 → GroupNorm → SiLU → conv2, plus x (through
 * the 1×1 conv_shortcut when channels change). Attention: GroupNorm → to_q/to_k/to_v (Linear over
 * channels) → softmax(QKᵀ/√C)·V → to_out.0, plus the residual.
 *
 * Encoder outputs, per dialect:
 *   'parameters'  latent_parameters = moments (Optimum: the pipeline splits mean/logvar itself)
 *   'sample'      latent_sample = mean + std·ε, ε = RandomNormalLike(mean) (mean 0, scale 1,
 *                 a fresh draw per run; OnnxStableDiffusionPipeline's vae_encoder)
 *   'noise-input' latent_sample = mean + std·noise with `noise` a graph input (same subgraph as
 *                 'sample' with ε supplied: deterministic, for tests and reproducible img2img)
 *   'mean-std'    latent_mean and latent_std (checks)
 */
import { ErrorCode, fail } from '../errors.js';
import { Graph, type FloatType, type TensorType, type Value, type WeightSource } from './graph.js';

export interface VaeConfig {
  in_channels?: number;
  out_channels?: number;
  latent_channels?: number;
  block_out_channels: number[];
  layers_per_block: number;
  norm_num_groups?: number;
  act_fn?: string;
  use_quant_conv?: boolean;
  use_post_quant_conv?: boolean;
  mid_block_add_attention?: boolean;
}

export type VaeEncoderOutput = 'parameters' | 'sample' | 'noise-input' | 'mean-std';

export interface VaeGraphOptions {
  /** Precision of the computation and weights. */
  floatType?: FloatType;
  /** Element type of the graph inputs/outputs (default floatType); differs when a fp16 pipeline keeps the VAE in fp32. */
  ioType?: FloatType;
  name?: string;
}

const EPS = 1e-6;

function checkConfig(config: VaeConfig): void {
  if ((config.act_fn ?? 'silu') !== 'silu') fail(ErrorCode.E_ONNX_EXPORT, undefined, `VAE act_fn "${config.act_fn}" is not supported (silu).`);
  if (!Array.isArray(config.block_out_channels) || config.block_out_channels.length === 0) fail(ErrorCode.E_ONNX_EXPORT, undefined, 'VAE config has no block_out_channels.');
}

class VaeBuilder {
  constructor(
    readonly g: Graph,
    readonly groups: number,
  ) {}

  resnet(x: Value, p: string): Value {
    const g = this.g;
    let h = g.silu(g.groupNorm(x, `${p}.norm1`, this.groups, EPS));
    h = g.conv2d(h, `${p}.conv1`);
    h = g.silu(g.groupNorm(h, `${p}.norm2`, this.groups, EPS));
    h = g.conv2d(h, `${p}.conv2`);
    const sc = g.hasWeight(`${p}.conv_shortcut.weight`) ? g.conv2d(x, `${p}.conv_shortcut`, { pad: 0 }) : x;
    return g.add(sc, h);
  }

  attention(x: Value, p: string): Value {
    const g = this.g;
    const names = g.hasWeight(`${p}.to_q.weight`)
      ? { q: 'to_q', k: 'to_k', v: 'to_v', o: 'to_out.0' }
      : { q: 'query', k: 'key', v: 'value', o: 'proj_attn' };
    const c = g.weightShape(`${p}.${names.q}.weight`)[0];
    const shape = g.shape(x);
    const h = g.groupNorm(x, `${p}.group_norm`, this.groups, EPS);
    const seq = g.transpose(g.reshape(h, [0, c, -1]), [0, 2, 1]); // [B, HW, C]
    const q = g.linear(seq, `${p}.${names.q}`);
    const k = g.linear(seq, `${p}.${names.k}`);
    const v = g.linear(seq, `${p}.${names.v}`);
    // diffusers upcasts the VAE attention softmax (upcast_softmax=True): computed in float32.
    const a = g.linear(g.attention(q, k, v, 1, c, { upcast: true }), `${p}.${names.o}`);
    const back = g.reshape(g.transpose(a, [0, 2, 1]), shape);
    return g.add(back, x);
  }

  mid(x: Value, p: string, withAttention: boolean): Value {
    let h = this.resnet(x, `${p}.resnets.0`);
    if (withAttention && this.g.hasWeight(`${p}.attentions.0.group_norm.weight`)) h = this.attention(h, `${p}.attentions.0`);
    return this.resnet(h, `${p}.resnets.1`);
  }
}

/** The VAE encoder graph: `sample` [batch, in_channels, height, width] → see VaeEncoderOutput. */
export function buildVaeEncoderGraph(config: VaeConfig, weights: WeightSource, output: VaeEncoderOutput, options: VaeGraphOptions = {}): Graph {
  checkConfig(config);
  const floatType = options.floatType ?? 'float32';
  const ioType: TensorType = options.ioType ?? floatType;
  const g = new Graph({ name: options.name ?? 'vae_encoder', floatType, weights });
  const b = new VaeBuilder(g, config.norm_num_groups ?? 32);
  const inCh = config.in_channels ?? 3;
  const latent = config.latent_channels ?? 4;
  const input = g.input('sample', ioType, ['batch_size', inCh, 'height', 'width']);
  let h = g.conv2d(g.cast(input, floatType), 'encoder.conv_in');
  const n = config.block_out_channels.length;
  for (let i = 0; i < n; i++) {
    h = g.scoped(`down.${i}`, () => {
      let x = h;
      for (let j = 0; j < config.layers_per_block; j++) x = b.resnet(x, `encoder.down_blocks.${i}.resnets.${j}`);
      if (i < n - 1) x = g.conv2d(g.pad(x, [0, 0, 0, 0, 0, 0, 1, 1]), `encoder.down_blocks.${i}.downsamplers.0.conv`, { stride: 2, pad: 0 });
      return x;
    });
  }
  h = g.scoped('mid', () => b.mid(h, 'encoder.mid_block', config.mid_block_add_attention ?? true));
  h = g.conv2d(g.silu(g.groupNorm(h, 'encoder.conv_norm_out', b.groups, EPS)), 'encoder.conv_out');
  if ((config.use_quant_conv ?? true) && g.hasWeight('quant_conv.weight')) h = g.conv2d(h, 'quant_conv', { pad: 0 });
  const dims = ['batch_size', latent, 'latent_height', 'latent_width'];

  if (output === 'parameters') {
    g.output(h, 'latent_parameters', ioType, ['batch_size', 2 * latent, 'latent_height', 'latent_width']);
    return g;
  }
  const mean = g.slice(h, [0], [latent], [1]);
  const logvar = g.clip(g.slice(h, [latent], [2 * latent], [1]), -30, 20);
  const std = g.exp(g.mul(logvar, g.scalar(logvar, 0.5)));
  if (output === 'mean-std') {
    g.output(mean, 'latent_mean', ioType, dims);
    g.output(std, 'latent_std', ioType, dims);
    return g;
  }
  let noise: Value;
  if (output === 'noise-input') {
    noise = g.cast(g.input('noise', ioType, dims), floatType);
  } else {
    // RandomNormalLike draws in float32 (portable across EPs), then follows the graph's type.
    noise = g.cast(g.op('RandomNormalLike', [g.cast(mean, 'float32')], { mean: { f: 0 }, scale: { f: 1 } }), floatType);
  }
  g.output(g.add(mean, g.mul(std, noise)), 'latent_sample', ioType, dims);
  return g;
}

/** The VAE decoder graph: `latent_sample` [batch, latent, h, w] → `sample` [batch, out, 8h, 8w]. */
export function buildVaeDecoderGraph(config: VaeConfig, weights: WeightSource, options: VaeGraphOptions = {}): Graph {
  checkConfig(config);
  const floatType = options.floatType ?? 'float32';
  const ioType: TensorType = options.ioType ?? floatType;
  const g = new Graph({ name: options.name ?? 'vae_decoder', floatType, weights });
  const b = new VaeBuilder(g, config.norm_num_groups ?? 32);
  const latent = config.latent_channels ?? 4;
  const input = g.input('latent_sample', ioType, ['batch_size', latent, 'latent_height', 'latent_width']);
  let h = g.cast(input, floatType);
  if ((config.use_post_quant_conv ?? true) && g.hasWeight('post_quant_conv.weight')) h = g.conv2d(h, 'post_quant_conv', { pad: 0 });
  h = g.conv2d(h, 'decoder.conv_in');
  h = g.scoped('mid', () => b.mid(h, 'decoder.mid_block', config.mid_block_add_attention ?? true));
  const n = config.block_out_channels.length;
  for (let i = 0; i < n; i++) {
    h = g.scoped(`up.${i}`, () => {
      let x = h;
      for (let j = 0; j < config.layers_per_block + 1; j++) x = b.resnet(x, `decoder.up_blocks.${i}.resnets.${j}`);
      if (i < n - 1) x = g.conv2d(g.resizeNearest(x, 2), `decoder.up_blocks.${i}.upsamplers.0.conv`);
      return x;
    });
  }
  h = g.conv2d(g.silu(g.groupNorm(h, 'decoder.conv_norm_out', b.groups, EPS)), 'decoder.conv_out');
  g.output(h, 'sample', ioType, ['batch_size', config.out_channels ?? 3, 'height', 'width']);
  return g;
}
