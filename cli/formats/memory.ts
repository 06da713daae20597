/**
 * Bounds the garbage a file stream leaves behind (docs/performance.md, "File encryption").
 *
 *   boundStreamGarbage() -> void     call once before streaming a file; process-wide
 *
 * Every chunk through node:crypto and the file streams is a new buffer. V8 frees dead ones when a
 * scavenge runs, at the latest after 32 MB of young buffer memory (a constant, not
 * --max-semi-space-size), and then hands the freeing to a background thread: on a busy machine that
 * thread runs late and dead buffers pile up past the 32 MB (peaks of 104-128 MB measured for the
 * CLI). Freeing them on the main thread, at the end of each scavenge, keeps the peak at Node's own
 * memory plus those 32 MB. Set at run time, not in the shebang or by a re-exec, so that it holds
 * however the CLI is started (`tee-kms`, `node dist/cli/main.js`, npm scripts) and costs no second
 * process start; V8 reads this flag at every sweep, so setting it late takes effect.
 */
import { setFlagsFromString } from 'node:v8';

export function boundStreamGarbage(): void {
  setFlagsFromString('--no-concurrent-array-buffer-sweeping');
}
