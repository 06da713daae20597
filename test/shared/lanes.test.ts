/**
 * LaneScheduler (shared/lanes.ts), with jobs that finish when the test says so: the bound on work
 * running at once, the bounded queue of each lane, the round-robin between lanes, and within a lane
 * between keys, each key bounded too. Its users:
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
  describe('jobs with a key: served in turn per key within their lane, each key bounded', () => {
    /** One lane, jobs keyed by the part of their id before the dot (`m.0` is key `m`). */
    function keyed(runningMax: number, waitingMax: number, keyWaitingMax: number) {
      const scheduler = new LaneScheduler(['known', 'unknown'] as const, runningMax, waitingMax, 'too busy', keyWaitingMax);
      const started: string[] = [];
      const finishers = new Map<string, () => void>();
      const submit = (id: string, lane: 'known' | 'unknown' = 'known') =>
        scheduler.run(
          lane,
          () => {
            started.push(id);
            return new Promise<string>((resolve) => finishers.set(id, () => resolve(id)));
          },
          lane === 'known' ? id.split('.')[0] : undefined,
        );
      const finish = async (id: string) => {
        finishers.get(id)!();
        for (let i = 0; i < 5; i++) await Promise.resolve();
      };
      return { scheduler, started, submit, finish };
    }

    it('a key with one job waiting is served after at most one job of each other key waiting', async () => {
      const { started, submit, finish } = keyed(1, 20, 10);
      // m floods first; a, then b, then a second job of a, arrive after m's.
      const jobs = ['m.0', 'm.1', 'm.2', 'm.3', 'm.4', 'a.0', 'b.0', 'a.1'].map((id) => submit(id));
      expect(started).toEqual(['m.0']);
      for (const id of ['m.0', 'm.1', 'a.0', 'b.0', 'm.2', 'a.1', 'm.3', 'm.4']) await finish(id);
      // m, a, b in turn, each one job; a key with nothing left drops out of the turn.
      expect(started).toEqual(['m.0', 'm.1', 'a.0', 'b.0', 'm.2', 'a.1', 'm.3', 'm.4']);
      await Promise.all(jobs);
    });

    it("a key's cap answers BUSY to that key only: other keys are still admitted while the lane has room", async () => {
      const { scheduler, started, submit, finish } = keyed(1, 6, 2);
      const admitted = [submit('m.0'), submit('m.1'), submit('m.2')];
      await expect(submit('m.3')).rejects.toMatchObject({ code: 'BUSY', message: 'too busy' });
      expect(scheduler.waiting('known', 'm')).toBe(2);
      // Other keys fill the lane's remaining room; then the lane itself is full, for every key.
      admitted.push(submit('a.0'), submit('b.0'), submit('b.1'), submit('c.0'));
      expect(scheduler.waiting('known')).toBe(6);
      await expect(submit('d.0')).rejects.toMatchObject({ code: 'BUSY' });
      // Jobs without a key, in another lane, are bounded by their lane alone.
      const unkeyed = ['u.0', 'u.1', 'u.2', 'u.3'].map((id) => submit(id, 'unknown'));
      expect(scheduler.waiting('unknown')).toBe(4);
      // m's turn comes once per round: m, a, b, c, then the unknown lane in between.
      for (const id of ['m.0', 'm.1', 'u.0', 'a.0', 'u.1', 'b.0', 'u.2', 'c.0', 'u.3', 'm.2', 'b.1']) await finish(id);
      expect(started).toEqual(['m.0', 'm.1', 'u.0', 'a.0', 'u.1', 'b.0', 'u.2', 'c.0', 'u.3', 'm.2', 'b.1']);
      await Promise.all([...admitted, ...unkeyed]);
      // Below its cap again, m is admitted.
      void submit('m.4');
      expect(started.at(-1)).toBe('m.4');
      await finish('m.4');
    });
  });
});
