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

  it('an entry lives until its expiry, to the millisecond, and a fraction of a second counts as a whole one', () => {
    const guard = new ReplayGuard(10);
    guard.admit('whole', 61_000, 0);
    guard.admit('fraction', 60_001, 0);
    for (const jti of ['whole', 'fraction']) expect(code(() => guard.admit(jti, 200_000, 60_999))).toBe('UNAUTHORIZED');
    for (const jti of ['whole', 'fraction']) expect(code(() => guard.admit(jti, 200_000, 61_000))).toBe('admitted');
  });

  it('an entry dated far ahead, first in, keeps no expired entry behind it counted', () => {
    const guard = new ReplayGuard(3);
    guard.admit('future', 121_000, 0); // a credential dated 60 s ahead, admitted first
    guard.admit('now-1', 61_000, 0);
    guard.admit('now-2', 62_000, 1_000);
    expect(code(() => guard.admit('next', 70_000, 9_000))).toBe('BUSY');
    // Each expired entry frees its place when it expires, though the far one is still live ahead of it.
    expect(code(() => guard.admit('next', 122_000, 61_000))).toBe('admitted');
    expect(code(() => guard.admit('next-2', 122_000, 61_999))).toBe('BUSY');
    expect(code(() => guard.admit('next-2', 123_000, 62_000))).toBe('admitted');
    expect(guard.size).toBe(3);
    expect(code(() => guard.admit('future', 200_000, 62_000))).toBe('UNAUTHORIZED');
  });

  it('entries expire in the order of their expiries, whatever the order they came in', () => {
    const guard = new ReplayGuard(100);
    for (let i = 100; i >= 1; i--) guard.admit(`jti-${i}`, i * 1000, 0); // the last to expire first
    for (let t = 1; t <= 100; t++) {
      expect(code(() => guard.admit(`jti-${t}`, 500_000, t * 1000 - 1))).toBe('UNAUTHORIZED');
      expect(code(() => guard.admit(`later-${t}`, 500_000, t * 1000))).toBe('admitted'); // full: only the expired place is freed
      expect(guard.size).toBe(100);
    }
    expect(code(() => guard.admit('one-more', 500_000, 400_000))).toBe('BUSY');
  });

  it('a jti admitted again after it expired is remembered for its new life, and counted once', () => {
    const guard = new ReplayGuard(2);
    guard.admit('again', 2_000, 1_000);
    guard.admit('other', 3_000, 1_000);
    expect(code(() => guard.admit('again', 5_000, 2_000))).toBe('admitted');
    expect(guard.size).toBe(2);
    // Purges as other entries expire leave it until its new expiry.
    expect(code(() => guard.admit('third', 6_000, 3_000))).toBe('admitted');
    expect(code(() => guard.admit('again', 9_000, 4_999))).toBe('UNAUTHORIZED');
    expect(code(() => guard.admit('fourth', 9_000, 4_999))).toBe('BUSY');
    expect(code(() => guard.admit('fourth', 9_000, 5_000))).toBe('admitted');
    expect(guard.size).toBe(2);
  });
});
