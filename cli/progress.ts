/**
 * A progress bar on stderr for long work: only on a terminal and for inputs over PROGRESS_MIN_BYTES
 * (an input of unknown size, standard input, gets none). Elsewhere nothing is printed.
 */
import { Presets, SingleBar } from 'cli-progress';
import { Transform, type TransformCallback } from 'node:stream';

export const PROGRESS_MIN_BYTES = 4 * 1024 * 1024;

/** Transforms to put first in the pipeline: none, or one that counts bytes as they pass. */
export function progressFor(totalBytes: number | undefined, label: string): Transform[] {
  if (totalBytes === undefined || totalBytes < PROGRESS_MIN_BYTES || process.stderr.isTTY !== true) return [];
  const bar = new SingleBar(
    { stream: process.stderr, format: `${label} [{bar}] {percentage}% | {value}/{total} MiB | {eta_formatted}`, hideCursor: true },
    Presets.shades_classic,
  );
  const mib = (bytes: number) => Math.round((bytes / 1024 / 1024) * 10) / 10;
  let done = 0;
  let stopped = false;
  const stop = () => (stopped ? undefined : ((stopped = true), bar.stop()));
  bar.start(mib(totalBytes), 0);
  return [
    new Transform({
      transform(chunk: Buffer, _encoding, callback: TransformCallback) {
        done += chunk.length;
        bar.update(mib(done));
        callback(null, chunk);
      },
      flush(callback: TransformCallback) {
        stop();
        callback();
      },
      destroy(error, callback) {
        stop();
        callback(error);
      },
    }),
  ];
}
