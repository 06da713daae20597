import { describe, expect, it } from 'vitest';
import { KmsError } from '../../../shared/errors.js';
import { ReplayGuard } from '../../../shared/sealed/replay.js';

const code = (f: () => void) => {
  try {
    f();
  } catch (error) {
    return (error as KmsError).code;
  }
  return 'admitted';
};

describe('ReplayGuard', () => {
  it('admits a jti once while it lives, and again after it expired', () => {
    const guard = new ReplayGuard(10);
    expect(code(() => guard.admit('a'.repeat(16), 2_000, 1_000))).toBe('admitted');
    expect(code(() => guard.admit('a'.repeat(16), 2_000, 1_500))).toBe('UNAUTHORIZED');
    expect(code(() => guard.admit('a'.repeat(16), 4_000, 2_000))).toBe('admitted');
  });

  it('when full of live entries it sheds new requests instead of forgetting one', () => {
    const guard = new ReplayGuard(2);
    guard.admit('one', 10_000, 0);
    guard.admit('two', 10_000, 0);
    expect(code(() => guard.admit('three', 10_000, 1))).toBe('BUSY');
    expect(code(() => guard.admit('one', 10_000, 1))).toBe('UNAUTHORIZED');
    // Once entries expire they make room.
    expect(code(() => guard.admit('three', 20_000, 10_000))).toBe('admitted');
    expect(guard.size).toBe(1);
  });
});
