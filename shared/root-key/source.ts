import { KmsError } from '../errors.js';
import { rootKeyId } from '../crypto/root-key-id.js';

export interface RootKey {
  /** Public id derived from the key (see rootKeyId); records name the root key that wraps them. */
  readonly id: string;
  readonly key: Buffer;
}

/**
 * Where a function gets the root key. Mode 1: a secret (StaticRootKeySource). Production: the
 * attested sealing service over the KBS protocol (SealerRootKeySource).
 */
export interface RootKeySource {
  /** Why the source cannot rotate, or undefined when it can. */
  readonly rotationRefusal?: string;
  /** The current root key. `refresh` asks the source again, e.g. after a rotation elsewhere. */
  current(options?: { refresh?: boolean }): Promise<RootKey>;
  /**
   * The id of the root key the authority names current right now (asked afresh, cheaply), where
   * the key can change under a running function; absent where it cannot (a configured secret).
   */
  currentId?(): Promise<string | null>;
}

/** BigDL KMS's mode 1: the root key from a Kubernetes secret (environment variable or mounted file). */
export class StaticRootKeySource implements RootKeySource {
  readonly rotationRefusal = 'the root key comes from a secret (KMS_ROOT_KEY): rotate it by replacing the secret, or run with the sealing service';
  readonly #rootKey: RootKey;

  constructor(key: Buffer) {
    this.#rootKey = { id: rootKeyId(key), key };
  }

  async current(): Promise<RootKey> {
    return this.#rootKey;
  }
}

const NO_ROOT_KEY =
  'no root key is configured: set KMS_ROOT_KEY (base64 of 32 random bytes) or KMS_ROOT_KEY_FILE, or point KMS_SEALER_URL at the sealing service';

export class MissingRootKeySource implements RootKeySource {
  readonly rotationRefusal = NO_ROOT_KEY;

  async current(): Promise<RootKey> {
    throw new KmsError('ROOT_KEY_UNAVAILABLE', NO_ROOT_KEY);
  }
}
