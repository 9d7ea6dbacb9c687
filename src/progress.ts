/**
 * Progress events the library emits through an `onProgress` callback. The library never prints;
 * the CLI decides how (and whether) to render them.
 */

/** A coarse step of a conversion started, e.g. `open`, `plan`, `write unet`, `configs`, `verify`. */
export interface PhaseEvent {
  readonly type: 'phase';
  readonly phase: string;
  /** Optional free text for the renderer (file name, component, counts). */
  readonly detail?: string;
  /** What the phase will process, when known up front (lets a renderer show a fraction). */
  readonly total?: { readonly tensors: number; readonly bytes: number };
}

/** One target tensor was written completely. */
export interface TensorEvent {
  readonly type: 'tensor';
  /** Component folder, e.g. `unet`. */
  readonly component: string;
  /** Target tensor name inside the component. */
  readonly name: string;
  /** Bytes written for this tensor (output dtype). */
  readonly bytes: number;
}

/** One output file was written completely (weights, shard, index, config). */
export interface FileEvent {
  readonly type: 'file';
  readonly path: string;
}

/** Something the user should know about that does not stop the conversion. */
export interface WarningEvent {
  readonly type: 'warning';
  readonly message: string;
  /** Stable code for scripts, when there is one (e.g. `E_FP16_OVERFLOW`). */
  readonly code?: string;
  readonly data?: Readonly<Record<string, unknown>>;
}

export type ProgressEvent = PhaseEvent | TensorEvent | FileEvent | WarningEvent;

export type ProgressCallback = (event: ProgressEvent) => void;
