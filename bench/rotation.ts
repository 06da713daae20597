/**
 * ROTATION HOOK: root key rotation over 10,000 primary keys, timed through the KMS.
 *
 * A rotation is two calls (functions/rotate-root-key.ts, functions/verify-root-key.ts): POST
 * /rootKey/rotate issues a pending key and its shares; POST /rootKey/verify with three of them makes
 * it current and answers once every primary key is rewrapped under it. Rotation needs the sealing
 * service in mode 2 (shares), so the caller runs a fresh, uninitialized dev-mode sealer and a lean
 * host on its own key prefix for this.
 *
 *   1. probe with DELETE /rootKey/rotate (GET would rotate): 404 = the route is not in this build,
 *      skipped with a note; 405 = it is;
 *   2. the first POST initializes the sealer (no admin token needed then);
 *   3. the caller creates ROTATION_KEYS primary keys under that root key;
 *   4. timed: POST /rootKey/rotate, then POST /rootKey/verify (admin token) until it answers.
 * If the API changes (paths, answer shapes), adapt the calls here.
 */
import { fetchOnce, sleep, type Answer } from './proc.js';

/** The goal's figure; the bench scales it down only when storage is too slow for the time budget. */
export const ROTATION_KEYS = 10_000;

export type RotationResult =
  | { readonly status: 'skipped' | 'refused' | 'failed'; readonly note: string }
  | {
      readonly status: 'measured';
      readonly keys: number;
      readonly seconds: number;
      readonly keysPerSecond: number;
      readonly rawPutRps: number | undefined;
      readonly ratio: number | undefined;
      /**
       * A rewrap is a read-modify-write: raw `GET` + `PUT If-Match` pairs per second on the same
       * storage, with the rotation's concurrency, measured right after it: this design's ceiling.
       */
      readonly rawReadModifyWriteRps?: number;
      readonly ratioToReadModifyWrite?: number;
      /** The same rewrap shared by 1, 2 and 4 processes (each a lean host that verifies and joins). */
      readonly scaleOut?: readonly ScaleOutPoint[];
      readonly note: string;
    };

export interface ScaleOutPoint {
  readonly processes: number;
  readonly seconds: number;
  readonly keysPerSecond: number;
  readonly ratioToReadModifyWrite?: number;
}

export interface RotationContext {
  /** Base URL of a lean host serving all functions, its root key from an uninitialized sealer. */
  readonly url: string;
  readonly adminToken: string;
  /** How many primary keys to rotate. */
  readonly keys: number;
  /** Creates `count` primary keys under the current root key (returns when written). */
  createPrimaryKeys(count: number): Promise<void>;
  /** Best raw `PUT If-None-Match: *` rate measured on the same storage. */
  readonly rawPutRps: number | undefined;
  readonly timeoutMs: number;
  readonly log: (line: string) => void;
}

/** Is the route there? (DELETE is never a rotation: 405 when the route exists, 404 when not.) */
export async function rotationRouteExists(url: string): Promise<boolean> {
  const probe = await fetchOnce(`${url}/rootKey/rotate`, { method: 'DELETE', headers: { accept: 'application/json' } });
  return probe.status !== 404;
}

export async function measureRotation(ctx: RotationContext): Promise<RotationResult> {
  const auth = { authorization: `Bearer ${ctx.adminToken}`, accept: 'application/json' };
  const rotate = () => fetchOnce(`${ctx.url}/rootKey/rotate`, { method: 'POST', headers: auth, timeoutMs: 120_000 });
  const status = () => fetchOnce(`${ctx.url}/rootKey/status`, { headers: { accept: 'application/json' } });

  const init = await rotate();
  if (init.status !== 200) return { status: 'refused', note: `initializing POST /rootKey/rotate answered ${init.status}: ${firstLine(init.body)}` };
  const settled = await waitUntilIdle(status, ctx.timeoutMs);
  if (settled !== undefined) return { status: 'failed', note: `after initialization: ${settled}` };

  ctx.log(`creating ${ctx.keys} primary keys for the rotation…`);
  await ctx.createPrimaryKeys(ctx.keys);

  ctx.log('rotating…');
  const started = performance.now();
  const answer = await rotate();
  if (answer.status !== 200) return { status: 'refused', note: `POST /rootKey/rotate answered ${answer.status}: ${firstLine(answer.body)}` };
  const issuedMs = performance.now() - started;
  const shares = (JSON.parse(answer.body) as unknown[]).slice(0, 3);
  const verified = await fetchOnce(`${ctx.url}/rootKey/verify`, {
    method: 'POST',
    headers: { ...auth, 'content-type': 'application/json' },
    body: JSON.stringify({ shares }),
    timeoutMs: ctx.timeoutMs,
  });
  if (verified.status !== 200) return { status: 'failed', note: `POST /rootKey/verify answered ${verified.status}: ${firstLine(verified.body)}` };
  const seconds = (performance.now() - started) / 1000;
  const keysPerSecond = ctx.keys / seconds;
  return {
    status: 'measured',
    keys: ctx.keys,
    seconds: Math.round(seconds * 100) / 100,
    keysPerSecond: Math.round(keysPerSecond),
    rawPutRps: ctx.rawPutRps,
    ratio: ctx.rawPutRps === undefined ? undefined : Math.round((keysPerSecond / ctx.rawPutRps) * 100) / 100,
    note: `new shares issued after ${Math.round(issuedMs)} ms; the rest is the verification and the rewrap of every primary key (GET + conditional PUT each)`,
  };
}

/**
 * One rotation of the existing primary keys, its rewrap shared by every host in `urls`: the first
 * rotates and verifies; as soon as its rewrap has started (the journal exists), every other host
 * verifies with the same shares, which joins the rewrap (leased ranges of the key space). Timed
 * from the verification to the last answer.
 */
export async function measureRewrapScaleOut(ctx: {
  readonly urls: readonly string[];
  readonly adminToken: string;
  readonly keys: number;
  readonly timeoutMs: number;
}): Promise<ScaleOutPoint | string> {
  const auth = { authorization: `Bearer ${ctx.adminToken}`, accept: 'application/json' };
  const [first, ...others] = ctx.urls as [string, ...string[]];
  const answer = await fetchOnce(`${first}/rootKey/rotate`, { method: 'POST', headers: auth, timeoutMs: 120_000 });
  if (answer.status !== 200) return `POST /rootKey/rotate answered ${answer.status}: ${firstLine(answer.body)}`;
  const body = JSON.stringify({ shares: (JSON.parse(answer.body) as unknown[]).slice(0, 3) });
  const verify = (url: string) =>
    fetchOnce(`${url}/rootKey/verify`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body, timeoutMs: ctx.timeoutMs });
  const started = performance.now();
  const leader = verify(first);
  const deadline = started + ctx.timeoutMs;
  while (others.length > 0 && performance.now() < deadline) {
    const status = await fetchOnce(`${first}/rootKey/status`, { headers: { accept: 'application/json' } });
    if (status.status === 200 && rotationRunning(status.body)) break;
    await sleep(10);
  }
  const answers = await Promise.all([leader, ...others.map(verify)]);
  const seconds = (performance.now() - started) / 1000;
  const failed = answers.find((a) => a.status !== 200);
  if (failed !== undefined) return `POST /rootKey/verify answered ${failed.status}: ${firstLine(failed.body)}`;
  return { processes: ctx.urls.length, seconds: Math.round(seconds * 100) / 100, keysPerSecond: Math.round(ctx.keys / seconds) };
}

/** Polls the status until no rotation runs; returns why not, or undefined when idle. */
async function waitUntilIdle(status: () => Promise<Answer>, timeoutMs: number): Promise<string | undefined> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const answer = await status();
    if (answer.status !== 200) return `GET /rootKey/status answered ${answer.status}: ${firstLine(answer.body)}`;
    if (!rotationRunning(answer.body)) return undefined;
    if (performance.now() > deadline) return `rotation still running after ${timeoutMs / 1000} s: ${firstLine(answer.body)}`;
    await sleep(50);
  }
}

function rotationRunning(body: string): boolean {
  try {
    const json = JSON.parse(body) as { rotation?: unknown };
    return json.rotation !== null && json.rotation !== undefined;
  } catch {
    return false;
  }
}

function firstLine(text: string): string {
  return (text.split('\n').find((l) => l.trim() !== '') ?? '').slice(0, 300);
}
