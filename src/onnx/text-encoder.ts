/**
 * CLIP text encoders (transformers CLIPTextModel / CLIPTextModelWithProjection) as ONNX graphs,
 * built from the component's config.json and safetensors weights.
 *
 *   embeddings   token_embedding[input_ids] + position_embedding[0:seq]
 *   layers ×N    pre-LN: h += out_proj(attn(LN1(h)), causal mask);  h += fc2(act(fc1(LN2(h))))
 *                act = quick_gelu (x·σ(1.702x)) or gelu (exact, erf) per `hidden_act`
 *   final        last_hidden_state = final_layer_norm(h)
 *   pooled       last_hidden_state at argmax(input_ids) when eos_token_id == 2 (the legacy rule
 *                of transformers 4.44, used by every SD checkpoint), else at the first
 *                input_ids == eos_token_id
 *   projection   text_embeds = pooled @ text_projectionᵀ (WithProjection only)
 *   hidden       `hidden_states.i` (i = 0..N): embeddings, then the output of each layer, before
 *                the final layer norm (so `hidden_states.{N-1}` is the penultimate state SDXL uses)
 *
 * Inputs/outputs (Optimum names): input_ids int64 (Optimum) or int32 (OnnxStableDiffusionPipeline)
 * [batch_size, sequence_length] → last_hidden_state [batch_size, sequence_length, hidden],
 * pooler_output [batch_size, hidden] (CLIPTextModel) or text_embeds [batch_size, projection_dim]
 * (WithProjection, first), optionally hidden_states.0..N.
 * The causal mask is built in-graph from the sequence length (Range/Less/Where), so any length
 * up to max_position_embeddings works.
 */
import { ErrorCode, fail } from '../errors.js';
import { Graph, type FloatType, type Value, type WeightSource } from './graph.js';

export interface ClipTextConfig {
  architectures?: string[];
  hidden_size: number;
  intermediate_size: number;
  num_attention_heads: number;
  num_hidden_layers: number;
  max_position_embeddings: number;
  hidden_act: string;
  layer_norm_eps: number;
  eos_token_id?: number;
  projection_dim?: number;
}

export interface TextEncoderGraphOptions {
  floatType?: FloatType;
  idsType?: 'int64' | 'int32';
  /** Emit hidden_states.0..N (SDXL pipelines read the penultimate one). */
  hiddenStates?: boolean;
  /** Override the config's architectures (true: CLIPTextModelWithProjection). */
  withProjection?: boolean;
  name?: string;
}

export function isWithProjection(config: ClipTextConfig, weights: WeightSource): boolean {
  if (config.architectures?.includes('CLIPTextModelWithProjection')) return true;
  if (config.architectures?.includes('CLIPTextModel')) return false;
  return weights.info('text_projection.weight') !== undefined;
}

export function buildTextEncoderGraph(config: ClipTextConfig, weights: WeightSource, options: TextEncoderGraphOptions = {}): Graph {
  const H = config.hidden_size;
  const heads = config.num_attention_heads;
  if (H % heads !== 0) fail(ErrorCode.E_ONNX_EXPORT, undefined, `text encoder hidden_size ${H} is not a multiple of num_attention_heads ${heads}.`);
  const act = config.hidden_act;
  if (act !== 'quick_gelu' && act !== 'gelu') fail(ErrorCode.E_ONNX_EXPORT, undefined, `text encoder hidden_act "${act}" is not supported (quick_gelu, gelu).`);
  const withProjection = options.withProjection ?? isWithProjection(config, weights);
  const g = new Graph({ name: options.name ?? 'text_encoder', floatType: options.floatType ?? 'float32', weights });
  const eps = config.layer_norm_eps;
  const prefix = weights.info('text_model.embeddings.token_embedding.weight') ? 'text_model' : '';
  const k = (s: string): string => (prefix ? `${prefix}.${s}` : s);

  const ids = g.input('input_ids', options.idsType ?? 'int64', ['batch_size', 'sequence_length']);
  const ids64 = g.cast(ids, 'int64');

  // Embeddings
  const seqLen = g.shape(ids64, 1, 2); // [1]
  let h = g.scoped('embeddings', () => {
    const tok = g.gather(g.weight(k('embeddings.token_embedding.weight')), ids64, 0);
    const posTable = g.weight(k('embeddings.position_embedding.weight'));
    const pos = g.op('Slice', [posTable, g.constInt64([0]), seqLen, g.constInt64([0])]);
    return g.add(tok, pos);
  });

  // Causal mask [S, S]: 0 on and below the diagonal, the float minimum above it.
  const mask = g.scoped('causal_mask', () => {
    const n = g.squeeze(seqLen, [0]);
    const r = g.range(g.constInt64([0], []), n, g.constInt64([1], []));
    const above = g.less(g.unsqueeze(r, [1]), g.unsqueeze(r, [0]));
    const min = g.floatType === 'float16' ? -65504 : -3.4028234663852886e38;
    return g.where(above, g.scalar(g.floatType, min), g.scalar(g.floatType, 0));
  });

  const hidden: Value[] = [h];
  const headDim = H / heads;
  for (let i = 0; i < config.num_hidden_layers; i++) {
    const p = k(`encoder.layers.${i}`);
    h = g.scoped(`layers.${i}`, () => {
      const x = g.layerNormW(h, `${p}.layer_norm1`, eps);
      const q = g.linear(x, `${p}.self_attn.q_proj`);
      const kk = g.linear(x, `${p}.self_attn.k_proj`);
      const v = g.linear(x, `${p}.self_attn.v_proj`);
      const a = g.linear(g.attention(q, kk, v, heads, headDim, { mask }), `${p}.self_attn.out_proj`);
      const h1 = g.add(h, a);
      const y = g.linear(g.layerNormW(h1, `${p}.layer_norm2`, eps), `${p}.mlp.fc1`);
      const yAct = act === 'quick_gelu' ? g.quickGelu(y) : g.gelu(y);
      return g.add(h1, g.linear(yAct, `${p}.mlp.fc2`));
    });
    hidden.push(h);
  }
  const last = g.layerNormW(h, k('final_layer_norm'), eps);

  // Pooled output: the hidden state at the end-of-text token of each row.
  const pooled = g.scoped('pool', () => {
    const eos = config.eos_token_id ?? 2;
    const score = eos === 2 ? g.cast(ids64, 'float32') : g.cast(g.equal(ids64, g.constInt64([eos], [])), 'float32');
    const idx = g.argMax(score, 1, true); // [B, 1]
    return g.op('GatherND', [last, idx], { batch_dims: 1 });
  });

  if (withProjection) {
    const embeds = g.matmul(pooled, g.weight('text_projection.weight', { transpose: true }));
    const proj = g.weightShape('text_projection.weight')[0];
    g.output(embeds, 'text_embeds', g.floatType, ['batch_size', proj]);
    g.output(last, 'last_hidden_state', g.floatType, ['batch_size', 'sequence_length', H]);
  } else {
    g.output(last, 'last_hidden_state', g.floatType, ['batch_size', 'sequence_length', H]);
    g.output(pooled, 'pooler_output', g.floatType, ['batch_size', H]);
  }
  if (options.hiddenStates) {
    hidden.forEach((v, i) => g.output(v, `hidden_states.${i}`, g.floatType, ['batch_size', 'sequence_length', H]));
  }
  return g;
}
