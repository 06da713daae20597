/**
 * Bounded work that anyone can ask for (a token check, a quote): what each run costs is shared
 * with every other request, so at most a few run at once and a few more wait, per lane; past that
 * the caller gets BUSY (503, retried) at once instead of a place in an unbounded queue.
 */
import { KmsError } from './errors.js';

/**
 * At most `running` jobs at once overall, and per lane a bounded queue; a finishing job hands its
 * slot to the next non-empty lane after the last one served (round-robin). Within a lane, jobs
 * given a key (e.g. a user's name) queue per key, and the lane serves its keys in turn, one job
 * each, so one key's many jobs do not delay another's; at most `keyWaitingMax` of one key wait.
 * Jobs without a key take one turn together and are bounded by the lane only. Past a bound: BUSY
 * at once.
 */
export class LaneScheduler<Lane extends string> {
  #running = 0;
  #next = 0; // index in `lanes` where the round-robin looks first
  readonly #queues = new Map<Lane, KeyedQueue>();

  constructor(
    private readonly lanes: readonly Lane[],
    private readonly runningMax: number,
    private readonly waitingMax: number,
    /** The BUSY error's message: what is busy. */
    private readonly busyMessage: string,
    private readonly keyWaitingMax = waitingMax,
  ) {
    for (const lane of lanes) this.#queues.set(lane, new KeyedQueue());
  }

  async run<T>(lane: Lane, work: () => Promise<T>, key?: string): Promise<T> {
    const queue = this.#queues.get(lane)!;
    const room = queue.size < this.waitingMax && (key === undefined || queue.waiting(key) < this.keyWaitingMax);
    // A free slot means no lane has anyone waiting: slots are handed over, never left idle.
    if (this.#running < this.runningMax) this.#running++;
    else if (room) await new Promise<void>((resolve) => queue.push(key, resolve));
    else throw new KmsError('BUSY', this.busyMessage);
    try {
      return await work();
    } finally {
      const next = this.#dequeue();
      if (next !== undefined)
        next(); // the slot passes on, still counted as running
      else this.#running--;
    }
  }

  /** How many wait in `lane`, or of `key` in it. */
  waiting(lane: Lane, key?: string): number {
    const queue = this.#queues.get(lane)!;
    return key === undefined ? queue.size : queue.waiting(key);
  }

  #dequeue(): (() => void) | undefined {
    for (let i = 0; i < this.lanes.length; i++) {
      const index = (this.#next + i) % this.lanes.length;
      const next = this.#queues.get(this.lanes[index]!)!.shift();
      if (next !== undefined) {
        this.#next = (index + 1) % this.lanes.length;
        return next;
      }
    }
    return undefined;
  }
}

/** One lane's waiting jobs, per key in arrival order; the keys take turns in the Map's order. */
class KeyedQueue {
  #size = 0;
  readonly #byKey = new Map<string | undefined, (() => void)[]>();

  get size(): number {
    return this.#size;
  }

  waiting(key: string): number {
    return this.#byKey.get(key)?.length ?? 0;
  }

  push(key: string | undefined, job: () => void): void {
    const jobs = this.#byKey.get(key);
    if (jobs !== undefined) jobs.push(job);
    else this.#byKey.set(key, [job]); // a new key takes its turn after every key already waiting
    this.#size++;
  }

  /** The oldest job of the first key in turn; a key with more waiting goes to the back of the turn. */
  shift(): (() => void) | undefined {
    const first = this.#byKey.entries().next();
    if (first.done === true) return undefined;
    const [key, jobs] = first.value;
    const job = jobs.shift()!;
    this.#byKey.delete(key);
    if (jobs.length > 0) this.#byKey.set(key, jobs);
    this.#size--;
    return job;
  }
}
