/**
 * Schedulers from a Diffusers `scheduler_config.json`: PNDM, DDIM, Euler and Euler ancestral, with
 * the class named by `_class_name` or chosen by the caller (Diffusers' `from_config`: keys another
 * class does not know are ignored, missing ones take the chosen class's defaults).
 */
import { ErrorCode, fail } from '../../errors.js';
import type { Scheduler, SchedulerClassName, SchedulerConfigJson } from './common.js';
import { DdimScheduler } from './ddim.js';
import { EulerAncestralDiscreteScheduler, EulerDiscreteScheduler } from './euler.js';
import { PndmScheduler } from './pndm.js';

export type { Scheduler, SchedulerClassName, SchedulerConfigJson, StepContext, PredictionType, TimestepSpacing } from './common.js';
export { PndmScheduler } from './pndm.js';
export { DdimScheduler } from './ddim.js';
export { EulerDiscreteScheduler, EulerAncestralDiscreteScheduler } from './euler.js';

export const SCHEDULER_CLASSES: readonly SchedulerClassName[] = ['PNDMScheduler', 'DDIMScheduler', 'EulerDiscreteScheduler', 'EulerAncestralDiscreteScheduler'];

/** Short names accepted besides the class names. */
const ALIASES: Record<string, SchedulerClassName> = {
  pndm: 'PNDMScheduler',
  ddim: 'DDIMScheduler',
  euler: 'EulerDiscreteScheduler',
  euler_a: 'EulerAncestralDiscreteScheduler',
  'euler-a': 'EulerAncestralDiscreteScheduler',
  euler_ancestral: 'EulerAncestralDiscreteScheduler',
};

export function resolveSchedulerName(name: string): SchedulerClassName {
  if ((SCHEDULER_CLASSES as readonly string[]).includes(name)) return name as SchedulerClassName;
  const alias = ALIASES[name.toLowerCase()];
  if (alias) return alias;
  fail(ErrorCode.E_SCHEDULER, undefined, `scheduler "${name}" is not supported (expected one of ${SCHEDULER_CLASSES.join(', ')}, or pndm/ddim/euler/euler_a).`);
}

/**
 * Builds a scheduler from a scheduler_config.json object. `className` overrides the config's
 * `_class_name` (as `SomeScheduler.from_config(pipe.scheduler.config)` does).
 */
export function createScheduler(config: SchedulerConfigJson, className?: string): Scheduler {
  if (typeof config !== 'object' || config === null || Array.isArray(config)) {
    fail(ErrorCode.E_SCHEDULER, undefined, 'scheduler config is not a JSON object.');
  }
  const name = className ?? config._class_name;
  if (typeof name !== 'string') fail(ErrorCode.E_SCHEDULER, undefined, 'scheduler config has no _class_name and no scheduler class was given.');
  switch (resolveSchedulerName(name)) {
    case 'PNDMScheduler':
      return new PndmScheduler(config);
    case 'DDIMScheduler':
      return new DdimScheduler(config);
    case 'EulerDiscreteScheduler':
      return new EulerDiscreteScheduler(config);
    case 'EulerAncestralDiscreteScheduler':
      return new EulerAncestralDiscreteScheduler(config);
  }
}
