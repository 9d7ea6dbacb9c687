/**
 * Inpainting, as Diffusers 0.31's StableDiffusionInpaintPipeline runs it (one image per prompt,
 * `generator=torch.Generator("cpu").manual_seed(seed)`, no `padding_mask_crop`):
 *
 * Preprocessing: the image as for img2img (`2 * (x / 255) - 1`, NCHW); the mask converted to
 * grayscale as PIL's `convert("L")` does (`(19595 R + 38470 G + 7471 B + 32768) >> 16`), scaled to
 * [0, 1] and binarized (`< 0.5` → 0, else 1): white (1) is repainted, black (0) kept. The image
 * and mask must already have the generation size (no resizing here).
 *
 * Latents (`prepare_latents`, then `prepare_mask_latents`), random draws in this order:
 *   1. 4-channel UNets, or strength < 1: image_latents = VAE posterior sample of the image
 *      (one draw) x scaling_factor;
 *   2. noise (one draw); latents = noise x init_noise_sigma when strength == 1, else
 *      `scheduler.add_noise(image_latents, noise, first timestep)`;
 *   3. masked_image = image x (mask < 0.5); masked_image_latents = its VAE posterior sample (one
 *      draw) x scaling_factor; mask resized to the latent size with nearest interpolation
 *      (`F.interpolate` default: source pixel floor(i * H / h)).
 *
 * 9-channel UNets: every step the UNet gets cat([scaled latents, mask, masked_image_latents], dim=1)
 * (each duplicated for the guidance batch). The decoded image is returned as it is: Diffusers does
 * not paste the original pixels back (only with padding_mask_crop), so pixels outside the mask are
 * the model's reconstruction, not copies of the input.
 *
 * 4-channel UNets (legacy blending): after each scheduler step i,
 *   latents = (1 - mask) * init_latents_proper + mask * latents,
 * with init_latents_proper = `scheduler.add_noise(image_latents, noise, timesteps[i + 1])` (the
 * timestep the latents are at after the step; the same noise as step 2), and image_latents
 * unnoised after the last step. The masked-image latents are still computed (and their draw
 * taken) as Diffusers does, though unused.
 *
 * `inpaintPrepare` is shared with SDXL inpainting (sdxl.ts, StableDiffusionXLInpaintPipeline),
 * whose latent preparation is the same; only its conditioning, default strength (0.9999) and
 * decoder input differ.
 */
import { ErrorCode, fail } from '../errors.js';
import { generate, preprocessImage, sampleLatents, type GenerateOptions, type GenerateResult, type PrepareContext, type PreparedLatents, type RgbImage } from './pipeline.js';
import { concat0, expectShape, f32, type Tensor } from './tensor.js';

/** PIL `Image.convert("L")` of one RGB pixel (ITU-R 601-2 luma, fixed point). */
export function luma8(r: number, g: number, b: number): number {
  return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >>> 16;
}

/** The mask as Diffusers' mask processor gives it: `[1, 1, H, W]`, values 0 or 1. */
export function preprocessMask(mask: RgbImage, height: number, width: number): Tensor {
  if (mask.height !== height || mask.width !== width) {
    fail(ErrorCode.E_USAGE, undefined, `mask is ${mask.width}x${mask.height} (expected ${width}x${height}, the image size; resize it first).`);
  }
  if (mask.data.length !== height * width * 3) fail(ErrorCode.E_PIPELINE, undefined, `mask has ${mask.data.length} bytes (expected ${height * width * 3}).`);
  const out = new Float32Array(height * width);
  for (let p = 0; p < out.length; p++) {
    const v = f32(luma8(mask.data[p * 3], mask.data[p * 3 + 1], mask.data[p * 3 + 2]) / 255);
    out[p] = v < 0.5 ? 0 : 1;
  }
  return { data: out, shape: [1, 1, height, width] };
}

/** `image * (mask < 0.5)`: the image with the area to repaint zeroed. */
export function maskImage(image: Tensor, mask: Tensor): Tensor {
  const [, c, h, w] = image.shape;
  expectShape(mask, [1, 1, h, w], 'mask');
  const out = new Float32Array(image.data.length);
  const plane = h * w;
  for (let ch = 0; ch < c; ch++) for (let p = 0; p < plane; p++) out[ch * plane + p] = mask.data[p] < 0.5 ? image.data[ch * plane + p] : 0;
  return { data: out, shape: [...image.shape] };
}

/** `F.interpolate(mask, size=(h, w))` (mode "nearest"): `[1, 1, H, W]` → `[1, 1, h, w]`. */
export function resizeMaskNearest(mask: Tensor, h: number, w: number): Tensor {
  const [, , H, W] = mask.shape;
  const sy = H / h;
  const sx = W / w;
  const out = new Float32Array(h * w);
  for (let y = 0; y < h; y++) {
    const srcY = Math.min(Math.floor(y * f32(sy)), H - 1);
    for (let x = 0; x < w; x++) out[y * w + x] = mask.data[srcY * W + Math.min(Math.floor(x * f32(sx)), W - 1)];
  }
  return { data: out, shape: [1, 1, h, w] };
}

/** cat([a, b, ...], dim=1) of `[B, Ci, h, w]` tensors with the same B, h, w. */
export function concatChannels(parts: readonly Tensor[]): Tensor {
  const [b, , h, w] = parts[0].shape;
  const plane = h * w;
  const cs = parts.map((p) => {
    if (p.shape[0] !== b || p.shape[2] !== h || p.shape[3] !== w) fail(ErrorCode.E_PIPELINE, undefined, `cannot concatenate [${p.shape.join(', ')}] to [${parts[0].shape.join(', ')}] on the channel axis.`);
    return p.shape[1];
  });
  const total = cs.reduce((a, c) => a + c, 0);
  const out = new Float32Array(b * total * plane);
  for (let n = 0; n < b; n++) {
    let at = n * total * plane;
    parts.forEach((p, i) => {
      const size = cs[i] * plane;
      out.set(p.data.subarray(n * size, (n + 1) * size), at);
      at += size;
    });
  }
  return { data: out, shape: [b, total, h, w] };
}

/** `(1 - mask) * init + mask * latents`, float32, the `[1, 1, h, w]` mask broadcast over channels. */
export function blendLatents(init: Float32Array, latents: Float32Array, mask: Tensor, channels: number): Float32Array {
  const plane = mask.data.length;
  const out = new Float32Array(latents.length);
  for (let c = 0; c < channels; c++) {
    for (let p = 0; p < plane; p++) {
      const m = mask.data[p];
      const i = c * plane + p;
      out[i] = f32(f32(f32(1 - m) * init[i]) + f32(m * latents[i]));
    }
  }
  return out;
}

export interface InpaintOptions extends Omit<GenerateOptions, 'initImage' | 'prepare'> {
  /** The image to inpaint (height x width). */
  readonly image: RgbImage;
  /** The mask (height x width): white is repainted. */
  readonly mask: RgbImage;
  /** The UNet's in_channels: 9 (inpainting UNet) or 4 (legacy blending). */
  readonly unetInChannels: number;
  /** Default 1 (Diffusers' default for inpainting). */
  readonly strength?: number;
}

/** The `prepare` hook of an inpainting run (see the module comment). */
export function inpaintPrepare(o: Pick<InpaintOptions, 'image' | 'mask' | 'unetInChannels' | 'strength'>): (ctx: PrepareContext) => Promise<PreparedLatents> {
  return async (ctx) => {
    const channels = ctx.latentShape[1];
    const [, , h, w] = ctx.latentShape;
    const nine = o.unetInChannels === 2 * channels + 1;
    if (!nine && o.unetInChannels !== channels) {
      fail(ErrorCode.E_PIPELINE, undefined, `a UNet with ${o.unetInChannels} input channels cannot inpaint ${channels}-channel latents (expected ${channels} or ${2 * channels + 1}).`);
    }
    const encode = ctx.models.vaeEncode ?? fail(ErrorCode.E_PIPELINE, undefined, 'inpainting needs a VAE encoder (models.vaeEncode).');
    const image = preprocessImage(o.image, ctx.height, ctx.width);
    const maskFull = preprocessMask(o.mask, ctx.height, ctx.width);
    ctx.trace('inpaint.image_preprocessed', image);
    ctx.trace('inpaint.mask_preprocessed', maskFull);
    const momentsShape = [1, 2 * channels, h, w];
    const strength = o.strength ?? 1;
    const strengthMax = strength === 1;

    // prepare_latents
    let imageLatents: Float32Array | undefined;
    if (!nine || !strengthMax) {
      const moments = await encode(image);
      expectShape(moments, momentsShape, 'VAE encoder moments');
      imageLatents = sampleLatents(moments.data, ctx.draw(), ctx.scalingFactor);
      ctx.trace('inpaint.image_latents', { data: imageLatents, shape: [...ctx.latentShape] });
    }
    const noise = ctx.draw();
    const sigma = f32(ctx.scheduler.initNoiseSigma);
    const latents: Tensor = {
      data: strengthMax ? noise.map((x) => f32(x * sigma)) : ctx.scheduler.addNoise(imageLatents as Float32Array, noise, ctx.timesteps[0]),
      shape: [...ctx.latentShape],
    };

    // prepare_mask_latents
    const masked = maskImage(image, maskFull);
    const maskedMoments = await encode(masked);
    expectShape(maskedMoments, momentsShape, 'VAE encoder moments (masked image)');
    const maskedLatents: Tensor = { data: sampleLatents(maskedMoments.data, ctx.draw(), ctx.scalingFactor), shape: [...ctx.latentShape] };
    const mask = resizeMaskNearest(maskFull, h, w);
    ctx.trace('inpaint.mask', mask);
    ctx.trace('inpaint.masked_image_latents', maskedLatents);

    if (nine) {
      const batch = ctx.guidance ? 2 : 1;
      const maskB = batch === 2 ? concat0([mask, mask]) : mask;
      const maskedB = batch === 2 ? concat0([maskedLatents, maskedLatents]) : maskedLatents;
      return {
        latents,
        unetSample: (scaled) => concatChannels([scaled, maskB, maskedB]),
      };
    }
    const init = imageLatents as Float32Array;
    const timesteps = ctx.timesteps;
    return {
      latents,
      afterStep: (current, i) => {
        const proper = i < timesteps.length - 1 ? ctx.scheduler.addNoise(init, noise, timesteps[i + 1]) : init;
        return { data: blendLatents(proper, current.data, mask, channels), shape: current.shape };
      },
    };
  };
}

/** Runs one inpainting generation (9-channel UNet, or a 4-channel UNet with latent blending). */
export async function generateInpaint(o: InpaintOptions): Promise<GenerateResult> {
  const { image, mask, unetInChannels, ...rest } = o;
  return generate({
    ...rest,
    height: o.height ?? image.height,
    width: o.width ?? image.width,
    strength: o.strength ?? 1,
    prepare: inpaintPrepare({ image, mask, unetInChannels, strength: o.strength ?? 1 }),
  });
}
