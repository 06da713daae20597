/**
 * `load`, run on the first call and its result shared by every later call. A failure is not kept:
 * the next call runs `load` again (a sealing service that was down, a file that was missing).
 */
export function onceSucceeded<T>(load: () => Promise<T>): () => Promise<T> {
  let result: Promise<T> | undefined;
  return () =>
    (result ??= (async () => load())().catch((error: unknown) => {
      result = undefined;
      throw error;
    }));
}
