/**
 * Bounded work that anyone can ask for (a token check, a quote): what each run costs is shared
 * with every other request, so at most a few run at once and a few more wait, per lane; past that
 * the caller gets BUSY (503, retried) at once instead of a place in an unbounded queue.
 */
import { KmsError } from './errors.js';

/**
 * At most `running` jobs at once overall, and per lane a bounded queue; a finishing job hands its
 * slot to the next non-empty lane after the last one served (round-robin). Past a lane's bound: BUSY
 * at once.
 */
export class LaneScheduler<Lane extends string> {
  #running = 0;
  #next = 0; // index in `lanes` where the round-robin looks first
  readonly #queues = new Map<Lane, (() => void)[]>();

  constructor(
    private readonly lanes: readonly Lane[],
    private readonly runningMax: number,
    private readonly waitingMax: number,
    /** The BUSY error's message: what is busy. */
    private readonly busyMessage: string,
  ) {
    for (const lane of lanes) this.#queues.set(lane, []);
  }

  async run<T>(lane: Lane, work: () => Promise<T>): Promise<T> {
    const queue = this.#queues.get(lane)!;
    // A free slot means no lane has anyone waiting: slots are handed over, never left idle.
    if (this.#running < this.runningMax) this.#running++;
    else if (queue.length < this.waitingMax) await new Promise<void>((resolve) => queue.push(resolve));
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

  /** How many wait in `lane`. */
  waiting(lane: Lane): number {
    return this.#queues.get(lane)!.length;
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
