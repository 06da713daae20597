/**
 * The CLI's one door to the server: `tee-kms/client`. Every command goes through here, so the
 * client's options the command line uses are set in one place.
 */
export { KmsClient, KmsError, type AttestOptions, type KmsClientOptions, type RecoveryProgress, type Rotation, type Share } from '../client/index.js';
