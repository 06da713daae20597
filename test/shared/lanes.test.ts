/**
 * LaneScheduler (shared/lanes.ts), with jobs that finish when the test says so: the bound on work
 * running at once, the bounded queue of each lane, and the round-robin between lanes. Its users:
 * token checks (test/shared/crypto/token-hash.test.ts) and quotes for public callers
 * (test/functions/tdx-attestation.test.ts).
 */
import { describe, expect, it } from 'vitest';
import { LaneScheduler } from '../../shared/lanes.js';

describe('LaneScheduler: lanes served round-robin, each bounded', () => {
  /** Jobs that finish when the test says so, recording the order in which they started. */
  function harness(runningMax: number, waitingMax: number) {
    const scheduler = new LaneScheduler(['known', 'unknown', 'enroll'] as const, runningMax, waitingMax, 'too busy');
    const started: string[] = [];
    const finishers = new Map<string, () => void>();
    const submit = (lane: 'known' | 'unknown' | 'enroll', id: string) =>
      scheduler.run(lane, () => {
        started.push(id);
        return new Promise<string>((resolve) => finishers.set(id, () => resolve(id)));
      });
    const finish = async (id: string) => {
      finishers.get(id)!();
      // Let the finished job's hand-over run.
      for (let i = 0; i < 5; i++) await Promise.resolve();
    };
    return { scheduler, started, submit, finish };
  }

  it('hands each freed slot to the next lane with work, in turn', async () => {
    const { scheduler, started, submit, finish } = harness(1, 10);
    const jobs = [
      submit('unknown', 'u0'),
      submit('unknown', 'u1'),
      submit('unknown', 'u2'),
      submit('unknown', 'u3'),
      submit('enroll', 'e1'),
      submit('known', 'k1'),
      submit('known', 'k2'),
    ];
    expect(started).toEqual(['u0']);
    expect([scheduler.waiting('unknown'), scheduler.waiting('known'), scheduler.waiting('enroll')]).toEqual([3, 2, 1]);
    for (const id of ['u0', 'k1', 'u1', 'e1', 'k2', 'u2', 'u3']) await finish(id);
    // known, unknown, enroll, known, unknown, then the rest of unknown: queued later, served sooner.
    expect(started).toEqual(['u0', 'k1', 'u1', 'e1', 'k2', 'u2', 'u3']);
    expect(await Promise.all(jobs)).toEqual(['u0', 'u1', 'u2', 'u3', 'e1', 'k1', 'k2']);
  });

  it('bounds each lane on its own: a full lane answers BUSY at once, others still queue; nothing runs beyond the slots', async () => {
    const { scheduler, started, submit, finish } = harness(2, 2);
    const queued = ['u0', 'u1', 'u2', 'u3'].map((id) => submit('unknown', id));
    await expect(submit('unknown', 'u4')).rejects.toMatchObject({ code: 'BUSY', message: 'too busy' });
    expect(started).toEqual(['u0', 'u1']);
    const known = [submit('known', 'k0'), submit('known', 'k1')];
    await expect(submit('known', 'k2')).rejects.toMatchObject({ code: 'BUSY' });
    expect(scheduler.waiting('unknown')).toBe(2);
    expect(scheduler.waiting('known')).toBe(2);
    expect(started).toEqual(['u0', 'u1']);
    // Each finishing run starts exactly one more, alternating lanes.
    await finish('u0');
    expect(started).toEqual(['u0', 'u1', 'k0']);
    await finish('u1');
    expect(started).toEqual(['u0', 'u1', 'k0', 'u2']);
    for (const id of ['k0', 'u2']) await finish(id);
    expect(started).toEqual(['u0', 'u1', 'k0', 'u2', 'k1', 'u3']);
    for (const id of ['k1', 'u3']) await finish(id);
    await Promise.all([...queued, ...known]);
    // Slots free again: the next job starts at once.
    void submit('enroll', 'e0');
    expect(started.at(-1)).toBe('e0');
    await finish('e0');
  });

  it('a failing job frees its slot for the next one', async () => {
    const scheduler = new LaneScheduler(['a', 'b'] as const, 1, 1, 'too busy');
    const failing = scheduler.run('a', () => Promise.reject(new Error('scrypt failed')));
    const next = scheduler.run('b', async () => 'ran');
    await expect(failing).rejects.toThrow('scrypt failed');
    expect(await next).toBe('ran');
  });
});
