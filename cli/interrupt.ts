/**
 * What an interrupted command (Ctrl-C, SIGTERM, a closed terminal) must not leave behind: the
 * temporary file of an output not yet complete (decrypted plaintext, among others), removed before
 * it exits with 128 + the signal's number, as a shell reports; and what it must say (a rotation
 * whose shares are still on the way). Handlers are installed on first use, so a command that
 * registers nothing keeps Node's defaults.
 */
import { unlinkSync } from 'node:fs';
import { say } from './io.js';

const temporaries = new Set<string>();
const sayings = new Set<string>();
let installed = false;

const SIGNALS = { SIGINT: 2, SIGTERM: 15, SIGHUP: 1 } as const;

function install(): void {
  if (installed) return;
  installed = true;
  for (const [signal, number] of Object.entries(SIGNALS)) {
    process.on(signal, () => {
      for (const path of temporaries) {
        try {
          unlinkSync(path);
        } catch {
          // Gone already (published, or never made).
        }
      }
      for (const message of sayings) say(message);
      process.exit(128 + number);
    });
  }
}

/** Removes `path` if the command is interrupted before the returned function is called. */
export function removeIfInterrupted(path: string): () => void {
  install();
  temporaries.add(path);
  return () => void temporaries.delete(path);
}

/** Says `message` if the command is interrupted before the returned function is called. */
export function sayIfInterrupted(message: string): () => void {
  install();
  sayings.add(message);
  return () => void sayings.delete(message);
}
