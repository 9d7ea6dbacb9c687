/**
 * PNG in and out (pngjs). Writing rounds like Diffusers' `numpy_to_pil`:
 * `(image * 255).round().astype("uint8")`, the product in float32 and the rounding half to even.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { PNG } from 'pngjs';
import { ErrorCode, fail } from '../errors.js';
import type { RgbImage } from './pipeline.js';
import { f32, roundHalfEven, type Tensor } from './tensor.js';

/** One image of a `[N, H, W, 3]` (or `[H, W, 3]`) float32 tensor in [0, 1] as 8-bit RGB. */
export function imageToRgb8(image: Tensor, index = 0): RgbImage {
  const shape = image.shape.length === 3 ? [1, ...image.shape] : image.shape;
  const [n, height, width, c] = shape;
  if (shape.length !== 4 || c !== 3 || index < 0 || index >= n) {
    fail(ErrorCode.E_IMAGE, undefined, `image tensor has shape [${image.shape.join(', ')}] (expected [N, H, W, 3] with N > ${index}).`);
  }
  const size = height * width * 3;
  const data = new Uint8Array(size);
  const src = image.data.subarray(index * size, (index + 1) * size);
  for (let i = 0; i < size; i++) data[i] = Math.min(255, Math.max(0, roundHalfEven(f32(src[i] * 255))));
  return { data, width, height };
}

/** PNG bytes (8-bit RGB, no alpha) of an RGB image. */
export function encodePng(img: RgbImage): Buffer {
  const png = new PNG({ width: img.width, height: img.height, colorType: 2, inputColorType: 2, inputHasAlpha: false, bitDepth: 8 });
  png.data = Buffer.from(img.data.buffer, img.data.byteOffset, img.data.byteLength);
  return PNG.sync.write(png, { colorType: 2, inputColorType: 2, inputHasAlpha: false });
}

/** Decodes PNG bytes to 8-bit RGB (alpha dropped, 16-bit and palette images converted by pngjs). */
export function decodePng(bytes: Uint8Array, file?: string): RgbImage {
  let png: PNG;
  try {
    png = PNG.sync.read(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  } catch (cause) {
    fail(ErrorCode.E_IMAGE, file, 'not a readable PNG image.', { cause });
  }
  const { width, height } = png;
  const data = new Uint8Array(width * height * 3);
  for (let p = 0; p < width * height; p++) {
    data[p * 3] = png.data[p * 4];
    data[p * 3 + 1] = png.data[p * 4 + 1];
    data[p * 3 + 2] = png.data[p * 4 + 2];
  }
  return { data, width, height };
}

/** Writes image `index` of a `[N, H, W, 3]` float32 tensor in [0, 1] as a PNG file. */
export async function writePng(path: string, image: Tensor, index = 0): Promise<void> {
  await writeFile(path, encodePng(imageToRgb8(image, index)));
}

export async function readPng(path: string): Promise<RgbImage> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (cause) {
    fail(ErrorCode.E_IO, path, 'cannot read the image file.', { cause });
  }
  return decodePng(bytes, path);
}
