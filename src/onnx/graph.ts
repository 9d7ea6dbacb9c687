/**
 * A small, typed ONNX graph builder. Every exported component (text encoders, VAE, UNet) is built
 * with it; `encode.ts` turns a finished Graph into `model.onnx` (+ external data).
 *
 * API (stable; other component builders rely on it)
 * ------------------------------------------------
 *   const g = new Graph({ name: 'unet', floatType: 'float16', weights });   // weights: WeightSource
 *
 *   Values      `Value` = { name, type }: a tensor of the graph. `type` is its element type
 *               ('float32' | 'float16' | 'int64' | 'int32' | 'bool'), tracked by every helper.
 *   I/O         g.input(name, type, dims)            dims: number (static) | string (dim_param)
 *               g.output(value, name, type?, dims?)  adds an Identity when the name differs;
 *                                                    casts when `type` differs from value.type
 *   Weights     g.weight(key, { transpose?, reshape?, type? })
 *                 an initializer named `key` whose bytes are read lazily from `weights` (a
 *                 Diffusers safetensors key) at encode time; float weights become `type`
 *                 (default g.floatType). `transpose` (2-D only) turns a torch Linear weight
 *                 [out, in] into the MatMul operand [in, out]; `reshape` only relabels dims
 *                 (same element count). g.hasWeight(key) tells whether a key exists.
 *   Constants   g.constFloat(values, dims?, type?)  g.constInt64(values, dims?)
 *               g.scalar(like, v)   a 0-d float constant of like.type (for Add/Mul/Pow ...)
 *   Raw op      g.op(opType, inputs, attrs?, { outType?, outputs?, domain? })  one output
 *               g.opN(..., count)  several outputs.  inputs: Value | null (null = omitted)
 *               attrs (see Attr): integer number → INT, {f: x} → FLOAT (always use this for
 *               floats, even 1.0), string → STRING, number[] → INTS, {floats} → FLOATS,
 *               {tensor} → TENSOR.
 *   Op helpers  add sub mul div matmul pow sqrt exp erf sin cos sigmoid softmax neg
 *               reshape(x, number[] | Value) transpose(x, perm) concat(xs, axis)
 *               slice(x, starts, ends, axes, steps?) gather(x, idx, axis) unsqueeze/squeeze
 *               shape(x, start?, end?) cast(x, type) reduceMean(x, axes, keepdims)
 *               equal where expand argMax clip(x, min?, max?) pad(x, pads, mode?, value?)
 *               resizeNearest(x, scale) conv(x, w, b?, {strides, pads, group, dilations})
 *               gemm layerNorm(x, scale, bias, eps, axis) instanceNorm trilu range less
 *   NN helpers  (weights addressed by Diffusers key prefix, e.g. 'down_blocks.0.resnets.0.conv1')
 *               linear(x, prefix, { bias? })          MatMul(x, W^T) + b
 *               conv2d(x, prefix, { stride?, pad?, bias? })  'prefix.weight' / 'prefix.bias'
 *               layerNormW(x, prefix, eps)            LayerNormalization over the last axis
 *               groupNorm(x, prefix, groups, eps)     see below
 *               silu(x)  gelu(x) (exact, erf)  quickGelu(x)
 *               attention(q, k, v, heads, headDim, { mask?, upcast? })  q: [B, Sq, C],
 *                 k/v: [B, Sk, C] → [B, Sq, C]; upcast = QKᵀ and softmax in float32
 *   Precision   weights follow g.floatType; an fp32 island inside an fp16 graph is
 *               g.cast(x, 'float32') → ops → g.cast(y, 'float16') (weight(..., {type}) and the
 *               NN helpers follow the activation's type, so helpers work inside islands).
 *   Scoping     g.scoped(prefix, () => ...)  prefixes node/value names, e.g. 'text_model.layers.0'
 *
 * GroupNorm: opset 17 has no GroupNormalization and GroupNormalization-18 (per-group scale) was
 * redefined in opset 21, so it is written as Reshape [N, G, -1] → InstanceNormalization (unit
 * scale, zero bias) → Reshape to the input shape → Mul gamma[C,1,1] → Add beta[C,1,1]. ORT's CPU,
 * CUDA, DirectML and CoreML EPs all run InstanceNormalization, and its kernels accumulate in fp32.
 *
 * Names: initializers keep their Diffusers key (transposed weights too: one use per key); node
 * outputs are `<scope>/<OpType>_<n>`; graph inputs/outputs use the consumer names.
 * The builder does no shape inference: callers pass static dims where they need them.
 */
import type { DType } from '../dtypes.js';
import { ErrorCode, fail } from '../errors.js';

export type TensorType = 'float32' | 'float16' | 'int64' | 'int32' | 'bool';
export type FloatType = 'float32' | 'float16';
/** A dimension: a fixed size, or a symbolic name (dynamic axis, `dim_param`). */
export type Dim = number | string;

/** ONNX TensorProto.DataType codes. */
export const ONNX_ELEM_TYPE: Readonly<Record<TensorType, number>> = {
  float32: 1,
  int32: 6,
  int64: 7,
  bool: 9,
  float16: 10,
};

/** The safetensors dtype holding the bytes of each ONNX element type. */
export const TENSOR_TYPE_DTYPE: Readonly<Record<TensorType, DType>> = {
  float32: 'F32',
  float16: 'F16',
  int64: 'I64',
  int32: 'I32',
  bool: 'BOOL',
};

export interface Value {
  readonly name: string;
  readonly type: TensorType;
}

/** Where weight bytes come from (a Diffusers component's safetensors file(s)). */
export interface WeightSource {
  info(key: string): { readonly dtype: DType; readonly shape: readonly number[]; readonly byteLength: number } | undefined;
  /** The tensor's bytes in its own dtype, C order, little-endian, in bounded chunks. */
  readChunks(key: string): AsyncIterable<Uint8Array>;
  /** The whole tensor (used only for transposed weights, at most one Linear weight at a time). */
  readTensor(key: string): Promise<Uint8Array>;
}

/** How an initializer's bytes are produced at encode time. */
export type InitializerData =
  | { readonly kind: 'bytes'; readonly dtype: DType; readonly bytes: Uint8Array }
  | { readonly kind: 'weight'; readonly dtype: DType; readonly key: string; readonly transpose: boolean; readonly source: WeightSource };

export interface Initializer {
  readonly name: string;
  /** Element type stored in the model; source floats are cast to it while streaming. */
  readonly type: TensorType;
  readonly dims: readonly number[];
  readonly data: InitializerData;
}

export type Attr =
  | number
  | string
  | readonly number[]
  | { readonly f: number }
  | { readonly floats: readonly number[] }
  | { readonly tensor: { readonly type: TensorType; readonly dims: readonly number[]; readonly bytes: Uint8Array } };

export interface GraphNode {
  readonly opType: string;
  readonly domain: string;
  readonly name: string;
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
  readonly attrs: Readonly<Record<string, Attr>>;
}

export interface GraphIO {
  readonly name: string;
  readonly type: TensorType;
  /** null: no shape at all, so the input takes any rank (e.g. a timestep sent as 0-d or [1]). */
  readonly dims: readonly Dim[] | null;
}

export interface GraphOptions {
  name: string;
  /** Element type of float weights and of float constants made with constFloat's default. */
  floatType?: FloatType;
  weights?: WeightSource;
}

export interface OpOptions {
  /** Output element type; default: the first input's type. */
  outType?: TensorType;
  domain?: string;
}

const FLOAT_DTYPES: ReadonlySet<DType> = new Set<DType>(['F32', 'F16', 'BF16', 'F64']);

export class Graph {
  readonly name: string;
  readonly floatType: FloatType;
  readonly weights: WeightSource | undefined;
  readonly nodes: GraphNode[] = [];
  readonly inputs: GraphIO[] = [];
  readonly outputs: GraphIO[] = [];
  readonly initializers: Initializer[] = [];
  private readonly initializerByName = new Map<string, Value>();
  private readonly usedNames = new Set<string>();
  private counter = 0;
  private scopes: string[] = [];

  constructor(options: GraphOptions) {
    this.name = options.name;
    this.floatType = options.floatType ?? 'float32';
    this.weights = options.weights;
  }

  // ---------------------------------------------------------------- naming

  /** Runs `fn` with node/value names prefixed by `prefix` (nested scopes join with '/'). */
  scoped<T>(prefix: string, fn: () => T): T {
    this.scopes.push(prefix);
    try {
      return fn();
    } finally {
      this.scopes.pop();
    }
  }

  /** A fresh, unique name `<scope>/<base>_<n>`. */
  freshName(base: string): string {
    const scope = this.scopes.join('/');
    for (;;) {
      const name = `${scope ? scope + '/' : ''}${base}_${this.counter++}`;
      if (!this.usedNames.has(name)) {
        this.usedNames.add(name);
        return name;
      }
    }
  }

  private claim(name: string): void {
    if (this.usedNames.has(name)) fail(ErrorCode.E_ONNX_EXPORT, undefined, `ONNX graph "${this.name}": the name "${name}" is used twice.`);
    this.usedNames.add(name);
  }

  // ---------------------------------------------------------------- I/O

  input(name: string, type: TensorType, dims: readonly Dim[] | null): Value {
    this.claim(name);
    this.inputs.push({ name, type, dims: dims ? [...dims] : null });
    return { name, type };
  }

  /** Declares `value` as graph output `name` (Identity / Cast inserted when needed). */
  output(value: Value, name: string, type: TensorType = value.type, dims: readonly Dim[] = []): Value {
    let v = value;
    if (v.type !== type) v = this.cast(v, type);
    this.claim(name);
    this.nodes.push({ opType: 'Identity', domain: '', name: `${name}_output`, inputs: [v.name], outputs: [name], attrs: {} });
    this.outputs.push({ name, type, dims: [...dims] });
    return { name, type };
  }

  // ---------------------------------------------------------------- initializers

  hasWeight(key: string): boolean {
    return this.weights?.info(key) !== undefined;
  }

  /** Shape of a weight in the source file (before transpose/reshape). */
  weightShape(key: string): readonly number[] {
    return this.weightInfo(key).shape;
  }

  private weightInfo(key: string): { readonly dtype: DType; readonly shape: readonly number[]; readonly byteLength: number } {
    const info = this.weights?.info(key);
    if (!info) fail(ErrorCode.E_MISSING_TENSOR, undefined, `ONNX graph "${this.name}" needs weight "${key}", which the component does not have.`, { data: { tensor: key } });
    return info;
  }

  /** An initializer named `key` streamed from the weight source at encode time. */
  weight(key: string, options: { transpose?: boolean; reshape?: readonly number[]; type?: TensorType } = {}): Value {
    const info = this.weightInfo(key);
    const transpose = options.transpose ?? false;
    const isFloat = FLOAT_DTYPES.has(info.dtype);
    const type: TensorType = options.type ?? (isFloat ? this.floatType : dtypeToTensorType(info.dtype));
    let name = key;
    if (transpose) name = `${key}.T`;
    if (type !== (isFloat ? this.floatType : type)) name = `${name}.${type}`;
    if (options.reshape) name = `${name}.r${options.reshape.join('x')}`;
    const existing = this.initializerByName.get(name);
    if (existing) return existing;
    let dims = [...info.shape];
    if (transpose) {
      if (dims.length !== 2) fail(ErrorCode.E_ONNX_EXPORT, undefined, `weight "${key}" has shape [${dims.join(', ')}]; only 2-D weights can be transposed.`);
      dims = [dims[1], dims[0]];
    }
    if (options.reshape) {
      const a = dims.reduce((p, d) => p * d, 1);
      const b = options.reshape.reduce((p, d) => p * d, 1);
      if (a !== b) fail(ErrorCode.E_SHAPE_MISMATCH, undefined, `weight "${key}" [${dims.join(', ')}] cannot be relabelled as [${options.reshape.join(', ')}].`);
      dims = [...options.reshape];
    }
    this.claim(name);
    this.initializers.push({ name, type, dims, data: { kind: 'weight', dtype: info.dtype, key, transpose, source: this.weights! } });
    const v: Value = { name, type };
    this.initializerByName.set(name, v);
    return v;
  }

  /** An initializer holding `bytes` of `dtype` (cast to `type` when they differ). */
  constant(type: TensorType, dims: readonly number[], bytes: Uint8Array, dtype: DType = TENSOR_TYPE_DTYPE[type], name?: string): Value {
    const n = name ?? this.freshName('const');
    if (name) this.claim(name);
    this.initializers.push({ name: n, type, dims: [...dims], data: { kind: 'bytes', dtype, bytes } });
    return { name: n, type };
  }

  /** A float constant (values written as F32, stored as `type`, default floatType). */
  constFloat(values: readonly number[], dims: readonly number[] = [values.length], type: FloatType = this.floatType): Value {
    const bytes = new Uint8Array(new Float32Array(values).buffer);
    return this.constant(type, dims, bytes, 'F32');
  }

  constInt64(values: readonly number[], dims: readonly number[] = [values.length]): Value {
    const bytes = new Uint8Array(new BigInt64Array(values.map((v) => BigInt(v))).buffer);
    return this.constant('int64', dims, bytes);
  }

  /** A 0-d float constant of `like`'s element type. */
  scalar(like: Value | FloatType, value: number): Value {
    const type = typeof like === 'string' ? like : like.type;
    if (type !== 'float32' && type !== 'float16') return this.constant(type, [], scalarBytes(type, value));
    return this.constFloat([value], [], type);
  }

  // ---------------------------------------------------------------- raw ops

  op(opType: string, inputs: readonly (Value | null)[], attrs: Readonly<Record<string, Attr>> = {}, options: OpOptions = {}): Value {
    return this.opN(opType, inputs, 1, attrs, options)[0];
  }

  opN(opType: string, inputs: readonly (Value | null)[], outputs: number, attrs: Readonly<Record<string, Attr>> = {}, options: OpOptions = {}): Value[] {
    const first = inputs.find((v): v is Value => v !== null);
    const type = options.outType ?? first?.type ?? this.floatType;
    const base = this.freshName(opType);
    const outs = Array.from({ length: outputs }, (_, i) => (i === 0 ? base : `${base}:${i}`));
    for (const o of outs.slice(1)) this.usedNames.add(o);
    this.nodes.push({ opType, domain: options.domain ?? '', name: base, inputs: inputs.map((v) => v?.name ?? ''), outputs: outs, attrs });
    return outs.map((name) => ({ name, type }));
  }

  // ---------------------------------------------------------------- op helpers

  add(a: Value, b: Value): Value { return this.op('Add', [a, b]); }
  sub(a: Value, b: Value): Value { return this.op('Sub', [a, b]); }
  mul(a: Value, b: Value): Value { return this.op('Mul', [a, b]); }
  div(a: Value, b: Value): Value { return this.op('Div', [a, b]); }
  matmul(a: Value, b: Value): Value { return this.op('MatMul', [a, b]); }
  pow(a: Value, b: Value): Value { return this.op('Pow', [a, b]); }
  sqrt(x: Value): Value { return this.op('Sqrt', [x]); }
  exp(x: Value): Value { return this.op('Exp', [x]); }
  erf(x: Value): Value { return this.op('Erf', [x]); }
  sin(x: Value): Value { return this.op('Sin', [x]); }
  cos(x: Value): Value { return this.op('Cos', [x]); }
  neg(x: Value): Value { return this.op('Neg', [x]); }
  sigmoid(x: Value): Value { return this.op('Sigmoid', [x]); }
  softmax(x: Value, axis = -1): Value { return this.op('Softmax', [x], { axis }); }
  transpose(x: Value, perm: readonly number[]): Value { return this.op('Transpose', [x], { perm }); }
  concat(xs: readonly Value[], axis: number): Value { return this.op('Concat', xs, { axis }); }
  equal(a: Value, b: Value): Value { return this.op('Equal', [a, b], {}, { outType: 'bool' }); }
  less(a: Value, b: Value): Value { return this.op('Less', [a, b], {}, { outType: 'bool' }); }
  where(cond: Value, a: Value, b: Value): Value { return this.op('Where', [cond, a, b], {}, { outType: a.type }); }
  expand(x: Value, shape: Value): Value { return this.op('Expand', [x, shape]); }
  cast(x: Value, to: TensorType): Value {
    if (x.type === to) return x;
    return this.op('Cast', [x], { to: ONNX_ELEM_TYPE[to] }, { outType: to });
  }
  range(start: Value, limit: Value, delta: Value): Value { return this.op('Range', [start, limit, delta]); }
  trilu(x: Value, upper: boolean, k?: Value): Value { return this.op('Trilu', k ? [x, k] : [x], { upper: upper ? 1 : 0 }); }

  reshape(x: Value, shape: readonly number[] | Value): Value {
    const s = Array.isArray(shape) ? this.constInt64(shape as readonly number[]) : (shape as Value);
    return this.op('Reshape', [x, s]);
  }

  /** Shape(x)[start:end] as int64 (opset 15+ start/end attributes). */
  shape(x: Value, start?: number, end?: number): Value {
    const attrs: Record<string, Attr> = {};
    if (start !== undefined) attrs.start = start;
    if (end !== undefined) attrs.end = end;
    return this.op('Shape', [x], attrs, { outType: 'int64' });
  }

  slice(x: Value, starts: readonly number[], ends: readonly number[], axes: readonly number[], steps?: readonly number[]): Value {
    const ins = [x, this.constInt64(starts), this.constInt64(ends), this.constInt64(axes)];
    if (steps) ins.push(this.constInt64(steps));
    return this.op('Slice', ins);
  }

  gather(x: Value, indices: Value, axis = 0): Value { return this.op('Gather', [x, indices], { axis }); }
  unsqueeze(x: Value, axes: readonly number[]): Value { return this.op('Unsqueeze', [x, this.constInt64(axes)]); }
  squeeze(x: Value, axes: readonly number[]): Value { return this.op('Squeeze', [x, this.constInt64(axes)]); }

  /** ReduceMean with axes as an attribute (opset ≤ 17 form). */
  reduceMean(x: Value, axes: readonly number[], keepdims = true): Value {
    return this.op('ReduceMean', [x], { axes, keepdims: keepdims ? 1 : 0 });
  }

  argMax(x: Value, axis: number, keepdims = false): Value {
    return this.op('ArgMax', [x], { axis, keepdims: keepdims ? 1 : 0 }, { outType: 'int64' });
  }

  clip(x: Value, min?: number, max?: number): Value {
    return this.op('Clip', [x, min === undefined ? null : this.scalar(x, min), max === undefined ? null : this.scalar(x, max)]);
  }

  /** Pad with ONNX pads order [x1_begin, x2_begin, ..., x1_end, x2_end, ...]. */
  pad(x: Value, pads: readonly number[], mode: 'constant' | 'reflect' | 'edge' = 'constant', value = 0): Value {
    return this.op('Pad', [x, this.constInt64(pads), this.scalar(x, value)], { mode });
  }

  /** Nearest-neighbour upsampling of the two spatial axes of an NCHW tensor by `scale`. */
  resizeNearest(x: Value, scale: number): Value {
    const scales = this.constFloat([1, 1, scale, scale], [4], 'float32');
    return this.op('Resize', [x, null, scales], { mode: 'nearest', coordinate_transformation_mode: 'asymmetric', nearest_mode: 'floor' });
  }

  conv(x: Value, w: Value, b: Value | null, opts: { strides?: readonly number[]; pads?: readonly number[]; group?: number; dilations?: readonly number[] } = {}): Value {
    const attrs: Record<string, Attr> = {};
    if (opts.strides) attrs.strides = opts.strides;
    if (opts.pads) attrs.pads = opts.pads;
    if (opts.group) attrs.group = opts.group;
    if (opts.dilations) attrs.dilations = opts.dilations;
    return this.op('Conv', b ? [x, w, b] : [x, w], attrs);
  }

  gemm(a: Value, b: Value, c: Value | null, opts: { transA?: boolean; transB?: boolean; alpha?: number; beta?: number } = {}): Value {
    const attrs: Record<string, Attr> = {};
    if (opts.transA) attrs.transA = 1;
    if (opts.transB) attrs.transB = 1;
    if (opts.alpha !== undefined) attrs.alpha = { f: opts.alpha };
    if (opts.beta !== undefined) attrs.beta = { f: opts.beta };
    return this.op('Gemm', c ? [a, b, c] : [a, b], attrs);
  }

  layerNorm(x: Value, scale: Value, bias: Value | null, eps: number, axis = -1): Value {
    return this.op('LayerNormalization', bias ? [x, scale, bias] : [x, scale], { axis, epsilon: { f: eps } });
  }

  instanceNorm(x: Value, scale: Value, bias: Value, eps: number): Value {
    return this.op('InstanceNormalization', [x, scale, bias], { epsilon: { f: eps } });
  }

  // ---------------------------------------------------------------- NN helpers (Diffusers keys)

  /** torch Linear: x @ W^T (+ b). W is `${prefix}.weight` [out, in]. */
  linear(x: Value, prefix: string, options: { bias?: boolean } = {}): Value {
    const w = this.weight(`${prefix}.weight`, { transpose: true, type: x.type });
    let y = this.matmul(x, w);
    const useBias = options.bias ?? this.hasWeight(`${prefix}.bias`);
    if (useBias) y = this.add(y, this.weight(`${prefix}.bias`, { type: x.type }));
    return y;
  }

  /** torch Conv2d with `${prefix}.weight` [out, in, kh, kw] and optional bias; symmetric `pad`. */
  conv2d(x: Value, prefix: string, options: { stride?: number; pad?: number; pads?: readonly number[]; bias?: boolean } = {}): Value {
    const w = this.weight(`${prefix}.weight`, { type: x.type });
    const [, , kh, kw] = this.weightShape(`${prefix}.weight`);
    const ph = options.pad ?? Math.floor(kh / 2);
    const pw = options.pad ?? Math.floor(kw / 2);
    const pads = options.pads ?? [ph, pw, ph, pw];
    const useBias = options.bias ?? this.hasWeight(`${prefix}.bias`);
    const stride = options.stride ?? 1;
    return this.conv(x, w, useBias ? this.weight(`${prefix}.bias`, { type: x.type }) : null, { strides: [stride, stride], pads });
  }

  /** LayerNormalization over the last axis with `${prefix}.weight` / `${prefix}.bias`. */
  layerNormW(x: Value, prefix: string, eps: number): Value {
    return this.layerNorm(x, this.weight(`${prefix}.weight`, { type: x.type }), this.weight(`${prefix}.bias`, { type: x.type }), eps);
  }

  /** torch GroupNorm(groups, C, eps, affine) on NCHW (or NC...) via InstanceNormalization. */
  groupNorm(x: Value, prefix: string, groups: number, eps: number): Value {
    const c = this.weightShape(`${prefix}.weight`)[0];
    const shape = this.shape(x);
    const grouped = this.reshape(x, [0, groups, -1]);
    const ones = this.constFloat(new Array<number>(groups).fill(1), [groups], x.type as FloatType);
    const zeros = this.constFloat(new Array<number>(groups).fill(0), [groups], x.type as FloatType);
    const normed = this.reshape(this.instanceNorm(grouped, ones, zeros, eps), shape);
    const gamma = this.weight(`${prefix}.weight`, { reshape: [c, 1, 1], type: x.type });
    const beta = this.weight(`${prefix}.bias`, { reshape: [c, 1, 1], type: x.type });
    return this.add(this.mul(normed, gamma), beta);
  }

  silu(x: Value): Value { return this.mul(x, this.sigmoid(x)); }

  /** Exact GELU: 0.5·x·(1 + erf(x/√2)). */
  gelu(x: Value): Value {
    const e = this.erf(this.div(x, this.scalar(x, Math.SQRT2)));
    return this.mul(this.mul(x, this.scalar(x, 0.5)), this.add(e, this.scalar(x, 1)));
  }

  /** CLIP's quick_gelu: x·sigmoid(1.702·x). */
  quickGelu(x: Value): Value { return this.mul(x, this.sigmoid(this.mul(x, this.scalar(x, 1.702)))); }

  /**
   * Multi-head scaled dot-product attention. q: [B, Sq, C], k/v: [B, Sk, C] → [B, Sq, C].
   * `mask` (additive, broadcastable to [B, heads, Sq, Sk]) is added to the scores before softmax.
   * `upcast` computes QKᵀ and softmax in float32 (SD 2.x `upcast_attention`, fp16 overflow).
   */
  attention(q: Value, k: Value, v: Value, heads: number, headDim: number, options: { mask?: Value; upcast?: boolean } = {}): Value {
    const split = (t: Value): Value => this.transpose(this.reshape(t, [0, -1, heads, headDim]), [0, 2, 1, 3]);
    let qh = split(q);
    let kT = this.transpose(this.reshape(k, [0, -1, heads, headDim]), [0, 2, 3, 1]);
    const vh = split(v);
    const outType = q.type;
    if (options.upcast) {
      qh = this.cast(qh, 'float32');
      kT = this.cast(kT, 'float32');
    }
    const scale = this.scalar(qh, 1 / Math.sqrt(headDim));
    let scores = this.matmul(this.mul(qh, scale), kT);
    if (options.mask) scores = this.add(scores, this.cast(options.mask, scores.type));
    const probs = this.cast(this.softmax(scores, -1), outType);
    const ctx = this.matmul(probs, vh);
    return this.reshape(this.transpose(ctx, [0, 2, 1, 3]), [0, -1, heads * headDim]);
  }
}

function dtypeToTensorType(d: DType): TensorType {
  switch (d) {
    case 'F32':
      return 'float32';
    case 'F16':
      return 'float16';
    case 'I64':
      return 'int64';
    case 'I32':
      return 'int32';
    case 'BOOL':
      return 'bool';
    default:
      return fail(ErrorCode.E_ONNX_EXPORT, undefined, `no ONNX element type for weights of dtype ${d}.`);
  }
}

function scalarBytes(type: TensorType, value: number): Uint8Array {
  switch (type) {
    case 'int64':
      return new Uint8Array(new BigInt64Array([BigInt(value)]).buffer);
    case 'int32':
      return new Uint8Array(new Int32Array([value]).buffer);
    case 'bool':
      return new Uint8Array([value ? 1 : 0]);
    default:
      return new Uint8Array(new Float32Array([value]).buffer);
  }
}
