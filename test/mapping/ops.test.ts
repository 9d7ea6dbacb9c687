/** The closed op set: parsing from table data and output shapes. */
import { describe, expect, test } from 'vitest';
import { isCkptError } from '../../src/errors.js';
import { formatOp, opOutputShape, parseOp } from '../../src/mapping/ops.js';
import type { TensorOp } from '../../src/mapping/plan-types.js';

const split = (index: number, parts = 3): TensorOp => ({ op: 'split', axis: 0, index, parts });

describe('opOutputShape', () => {
  test.each<[TensorOp, number[], number[]]>([
    [{ op: 'copy' }, [320, 4, 3, 3], [320, 4, 3, 3]],
    [{ op: 'copy' }, [], []],
    [{ op: 'squeeze' }, [512, 512, 1, 1], [512, 512]],
    [{ op: 'squeeze' }, [512, 512, 1], [512, 512]],
    [{ op: 'squeeze' }, [512, 512], [512, 512]],
    [split(0), [3072, 1024], [1024, 1024]],
    [split(2), [3072], [1024]],
    [{ op: 'transpose' }, [1280, 768], [768, 1280]],
  ])('%j of %j is %j', (op, shape, expected) => {
    expect(opOutputShape(op, shape, 'x')).toEqual(expected);
  });

  test.each<[TensorOp, number[]]>([
    [{ op: 'squeeze' }, [512, 512, 3, 3]],
    [{ op: 'squeeze' }, [512]],
    [split(0), [100, 4]],
    [split(0), []],
    [{ op: 'transpose' }, [2, 3, 4]],
    [{ op: 'transpose' }, [5]],
  ])('%j of %j is E_SHAPE_MISMATCH', (op, shape) => {
    try {
      opOutputShape(op, shape, 'first_stage_model.encoder.mid.attn_1.q.weight');
      expect.unreachable();
    } catch (e) {
      expect(isCkptError(e) && e.code).toBe('E_SHAPE_MISMATCH');
      expect((e as Error).message).toContain('first_stage_model.encoder.mid.attn_1.q.weight');
    }
  });
});

describe('parseOp', () => {
  test.each<[unknown, TensorOp]>([
    [undefined, { op: 'copy' }],
    ['squeeze', { op: 'squeeze' }],
    ['transpose', { op: 'transpose' }],
    [{ op: 'split', axis: 0, index: 1, parts: 3 }, split(1)],
  ])('%j', (raw, op) => {
    expect(parseOp(raw)).toEqual(op);
  });

  test.each([['split'], ['drop'], [3], [{ op: 'split', axis: 0, index: 0, parts: 1 }], [{ op: 'split', axis: 0, index: -1, parts: 3 }]])('%j is rejected with a message', (raw) => {
    expect(typeof parseOp(raw)).toBe('string');
  });

  test('formatOp', () => {
    expect([{ op: 'copy' }, { op: 'squeeze' }, split(1), { op: 'transpose' }].map((o) => formatOp(o as TensorOp))).toEqual(['copy', 'squeeze', 'split:1/3', 'transpose']);
  });
});
