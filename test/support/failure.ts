import { KmsError } from '../../shared/errors.js';

/** The KmsError a promise rejects with; fails the test if it resolves or rejects with anything else. */
export async function kmsFailure(promise: Promise<unknown>): Promise<KmsError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof KmsError) return error;
    throw error;
  }
  throw new Error('expected a KmsError');
}
