import { KmsError } from '../errors.js';
import { log } from '../log.js';

/**
 * Reports listed objects that are no record the KMS wrote (listedName refused their names, or they
 * did not decode): planted or corrupted storage, which the caller left as it is. An INTEGRITY
 * warning naming at most 20 of them, quoted as listed.
 */
export function reportForeignObjects(component: string, what: string, objectKeys: readonly string[]): void {
  if (objectKeys.length === 0) return;
  const named = objectKeys.slice(0, 20).map((objectKey) => JSON.stringify(objectKey));
  log.warn(component, new KmsError('INTEGRITY', `${objectKeys.length} ${what}: ${named.join(', ')}`));
}
