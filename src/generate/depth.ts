/**
 * Depth-conditioned image-to-image, as Diffusers 0.31's StableDiffusionDepth2ImgPipeline runs it
 * with a given `depth_map` (its MiDaS / DPT depth estimator is not part of a converted folder, so
 * the depth map comes from the caller; one image per prompt, `torch.Generator("cpu")`):
 *
 *   - depth map `[1, 1, Hd, Wd]` (any size; from a grey PNG: PIL "L" luma / 255) resized to the
 *     latent size `(height // f, width // f)` with `F.interpolate(mode="bicubic",
 *     align_corners=False)`, then normalised to [-1, 1]: `2 * (d - min) / (max - min) - 1`;
 *   - latents as img2img: schedule cut by strength (default 0.8), VAE posterior sample of the image
 *     (one draw) x scaling_factor, noised to the first timestep (a second draw);
 *   - every step the UNet gets cat([scaled latents, depth], dim=1) (5 channels for SD 2 depth),
 *     the depth duplicated for the guidance batch; ordinary 2-way classifier-free guidance.
 */
import { ErrorCode, fail } from '../errors.js';
import { concatChannels, luma8 } from './inpaint.js';
import { generate, preprocessImage, sampleLatents, type GenerateOptions, type GenerateResult, type PrepareContext, type PreparedLatents, type RgbImage } from './pipeline.js';
import { concat0, expectShape, f32, type Tensor } from './tensor.js';

/** Diffusers' default strength of StableDiffusionDepth2ImgPipeline. */
export const DEPTH_DEFAULT_STRENGTH = 0.8;

/** A grey depth PNG as a `[1, 1, H, W]` tensor in [0, 1] (PIL "L" conversion of RGB, / 255). */
export function depthFromImage(img: RgbImage): Tensor {
  const n = img.width * img.height;
  if (img.data.length !== n * 3) fail(ErrorCode.E_PIPELINE, undefined, `depth image has ${img.data.length} bytes (expected ${n * 3}).`);
  const out = new Float32Array(n);
  for (let p = 0; p < n; p++) out[p] = f32(luma8(img.data[p * 3], img.data[p * 3 + 1], img.data[p * 3 + 2]) / 255);
  return { data: out, shape: [1, 1, img.height, img.width] };
}

/** Keys' cubic convolution weights with A = -0.75 (PyTorch's bicubic) for fraction t. */
function cubicWeights(t: number): [number, number, number, number] {
  const A = -0.75;
  const near = (x: number) => ((A + 2) * x - (A + 3)) * x * x + 1;
  const far = (x: number) => ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
  return [far(t + 1), near(t), near(1 - t), far(2 - t)];
}

/** `F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False)` of a `[1, 1, H, W]` tensor (borders clamped). */
export function resizeBicubic(x: Tensor, h: number, w: number): Tensor {
  const [, , H, W] = x.shape;
  const sy = H / h;
  const sx = W / w;
  const taps = (n: number, size: number, scale: number) =>
    Array.from({ length: n }, (_, i) => {
      const src = (i + 0.5) * scale - 0.5;
      const i0 = Math.floor(src);
      const idx = [-1, 0, 1, 2].map((d) => Math.min(Math.max(i0 + d, 0), size - 1));
      return { idx, wts: cubicWeights(src - i0) };
    });
  const ty = taps(h, H, sy);
  const tx = taps(w, W, sx);
  const out = new Float32Array(h * w);
  for (let y = 0; y < h; y++) {
    for (let xo = 0; xo < w; xo++) {
      let acc = 0;
      for (let a = 0; a < 4; a++) {
        let row = 0;
        for (let b = 0; b < 4; b++) row += tx[xo].wts[b] * x.data[ty[y].idx[a] * W + tx[xo].idx[b]];
        acc += ty[y].wts[a] * row;
      }
      out[y * w + xo] = f32(acc);
    }
  }
  return { data: out, shape: [1, 1, h, w] };
}

/** The depth conditioning `[1, 1, h, w]`: resized to the latent size, normalised to [-1, 1]. */
export function prepareDepthMap(depth: Tensor, h: number, w: number): Tensor {
  if (depth.shape.length !== 4 || depth.shape[0] !== 1 || depth.shape[1] !== 1) fail(ErrorCode.E_PIPELINE, undefined, `depth map has shape [${depth.shape.join(', ')}] (expected [1, 1, H, W]).`);
  const r = resizeBicubic(depth, h, w);
  let min = Infinity;
  let max = -Infinity;
  for (const v of r.data) {
    if (v < min) min = v;
    if (v > max) max = v;
  }
  if (!(max > min)) fail(ErrorCode.E_USAGE, undefined, 'the depth map is flat (one value everywhere): it cannot be normalised to [-1, 1] (Diffusers would divide by zero).');
  const range = f32(max - min);
  return { data: r.data.map((v) => f32(f32(f32(2 * f32(v - min)) / range) - 1)), shape: r.shape };
}

export interface DepthOptions extends Omit<GenerateOptions, 'initImage' | 'prepare'> {
  /** The init image (height x width). */
  readonly image: RgbImage;
  /** The depth map: a grey image (any size) or a `[1, 1, H, W]` tensor; larger is nearer, as MiDaS gives it. */
  readonly depth: RgbImage | Tensor;
  /** Default 0.8. */
  readonly strength?: number;
}

/** The `prepare` hook of a depth-to-image run (see the module comment). */
export function depthPrepare(o: Pick<DepthOptions, 'image' | 'depth'>): (ctx: PrepareContext) => Promise<PreparedLatents> {
  return async (ctx) => {
    const channels = ctx.latentShape[1];
    const [, , h, w] = ctx.latentShape;
    const depthIn = 'shape' in o.depth ? o.depth : depthFromImage(o.depth);
    const depth = prepareDepthMap(depthIn, h, w);
    ctx.trace('depth.depth_map', depth);
    const encode = ctx.models.vaeEncode ?? fail(ErrorCode.E_PIPELINE, undefined, 'depth-to-image needs a VAE encoder (models.vaeEncode).');
    const pixels = preprocessImage(o.image, ctx.height, ctx.width);
    ctx.trace('depth.image_preprocessed', pixels);
    const moments = await encode(pixels);
    expectShape(moments, [1, 2 * channels, h, w], 'VAE encoder moments');
    const imageLatents = sampleLatents(moments.data, ctx.draw(), ctx.scalingFactor);
    ctx.trace('depth.image_latents', { data: imageLatents, shape: [...ctx.latentShape] });
    const latents: Tensor = { data: ctx.scheduler.addNoise(imageLatents, ctx.draw(), ctx.timesteps[0]), shape: [...ctx.latentShape] };
    const depthB = ctx.guidance ? concat0([depth, depth]) : depth;
    return { latents, unetSample: (scaled) => concatChannels([scaled, depthB]) };
  };
}

/** Runs one depth-to-image generation (the UNet takes latent channels + 1). */
export async function generateDepth(o: DepthOptions): Promise<GenerateResult> {
  const { image, depth, ...rest } = o;
  const strength = o.strength ?? DEPTH_DEFAULT_STRENGTH;
  return generate({ ...rest, height: o.height ?? image.height, width: o.width ?? image.width, strength, prepare: depthPrepare({ image, depth }) });
}
