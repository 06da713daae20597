import { describe, expect, it } from 'vitest';
import { onceSucceeded } from '../../shared/once.js';

describe('onceSucceeded', () => {
  it('runs its loader once and shares the result, concurrent callers included', async () => {
    let runs = 0;
    const load = onceSucceeded(async () => ++runs);
    expect(await Promise.all([load(), load(), load()])).toEqual([1, 1, 1]);
    expect(await load()).toBe(1);
    expect(runs).toBe(1);
  });

  it('does not keep a failure: the next call runs the loader again', async () => {
    let runs = 0;
    const load = onceSucceeded(async () => {
      if (++runs === 1) throw new Error('down');
      return runs;
    });
    await expect(load()).rejects.toThrow('down');
    expect(await load()).toBe(2);
    expect(await load()).toBe(2);
  });

  it('answers a loader that throws at once with a rejected promise', async () => {
    const load = onceSucceeded((): Promise<number> => {
      throw new Error('at once');
    });
    const answer = load();
    expect(answer).toBeInstanceOf(Promise);
    await expect(answer).rejects.toThrow('at once');
  });
});
