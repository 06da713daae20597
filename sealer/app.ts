import { createServer, type Server } from 'node:https';
import type { Attester, Verifier } from '../shared/attestation/types.js';
import { answerConnect } from '../shared/http/connect.js';
import { closeServer, listen } from '../shared/http/listen.js';
import type { ObjectStore } from '../shared/store/object-store.js';
import { KmsError } from '../shared/errors.js';
import { SealerCore } from './core.js';
import { sealerLog as log } from './log.js';
import { custodianPin, type SealerOptions } from './options.js';
import { sealerHandler } from './server.js';
import { SessionStore } from './sessions.js';
import { loadTls } from '../shared/tls.js';
import { TokenService } from './tokens.js';
import { AdminPolicy } from './admin-policy.js';
import { ProofVerifier } from './proofs.js';
import { SealerIdentity } from './identity.js';
import { openShare } from '../shared/custody/share-jwe.js';
import { attesterFromConfig } from '../shared/attestation/from-config.js';
import { defaultVerifiers } from './verifiers.js';
import type { MeasuredPolicies } from './measured-policies.js';
import { loadInitDataFile } from '../shared/attestation/init-data.js';
import { configuredAutoUnseal } from './auto-unseal.js';
import { otherReplicas, PeerUnsealer } from './peers.js';
import { hostname } from 'node:os';
import { readFile } from 'node:fs/promises';

export interface RunningSealer {
  readonly server: Server;
  readonly url: string;
  readonly certFile: string;
  readonly core: SealerCore;
  close(): Promise<void>;
}

const DEV_MODE_BANNER = [
  '',
  '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!',
  '!!  sealer: INSECURE DEVELOPMENT MODE (KMS_SEALER_INSECURE_DEV_MODE=true)',
  '!!  "sample" attestation evidence is ACCEPTED. It proves nothing: ANY process',
  '!!  that can reach this port can obtain the root key. Never use this mode with',
  '!!  real data or outside a development machine.',
  '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!',
  '',
].join('\n');

/**
 * How this service proves itself (KMS_SEALER_ATTESTER). Sample evidence claims
 * KMS_SEALER_SAMPLE_INIT_DATA or, when that is unset, the digest of KMS_SEALER_INIT_DATA_FILE.
 */
export async function sealerAttester(options: SealerOptions): Promise<Attester> {
  const initData =
    options.attester === 'sample' && options.sampleInitData === '' && options.initDataFile !== ''
      ? await loadInitDataFile(options.initDataFile, 'KMS_SEALER_INIT_DATA_FILE')
      : undefined;
  return attesterFromConfig(
    { attester: options.attester, tsmRoot: options.tsmRoot, aaUrl: options.aaUrl, sampleInitData: options.sampleInitData, ...(initData && { initData }) },
    process.env,
    'KMS_SEALER_ATTESTER',
  );
}

/**
 * Starts the sealing service: TLS, the root key state (mode 1 from a secret, mode 2 from the store),
 * KBS sessions and tokens, and the HTTPS server. `store` holds the one small state record.
 */
export async function startSealer(
  options: SealerOptions,
  store: ObjectStore,
  extra: { verifiers?: readonly Verifier[]; attester?: Attester; measured?: MeasuredPolicies } = {},
): Promise<RunningSealer> {
  if (options.insecureDevMode && process.env.NODE_ENV === 'production') {
    throw new KmsError('CONFIG', 'KMS_SEALER_INSECURE_DEV_MODE=true accepts sample evidence, which proves nothing, and is refused when NODE_ENV=production');
  }
  if (options.insecureDevMode) process.stderr.write(`${DEV_MODE_BANNER}\n`);
  if (options.convertV1State && process.env.NODE_ENV === 'production') {
    throw new KmsError('CONFIG', 'KMS_SEALER_CONVERT_V1_STATE=true converts an unauthenticated state record and is refused when NODE_ENV=production');
  }
  // A development relaxation: in production shares travel only encrypted, to custodians and to the recovery key.
  if (options.plaintextShares === 'allow' && process.env.NODE_ENV === 'production') {
    throw new KmsError(
      'CONFIG',
      'KMS_SEALER_PLAINTEXT_SHARES=allow lets shares leave and enter unencrypted, readable by every hop on the way, and is refused when NODE_ENV=production',
    );
  }

  const tls = await loadTls({
    dataDir: options.dataDir,
    certFile: options.tlsCertFile,
    keyFile: options.tlsKeyFile,
    hostnames: options.tlsHostnames,
    envPrefix: 'KMS_SEALER_TLS',
    commonName: 'tee-kms sealing service (self-signed)',
    dataDirEnv: 'KMS_SEALER_DATA_DIR',
  });
  const tokens = await TokenService.create(options.tokenTtlSeconds);
  const sessions = new SessionStore(options.nonceTtlSeconds * 1000, options.maxSessions);
  const verifiers = defaultVerifiers({ insecureDevMode: options.insecureDevMode, extra: extra.verifiers ?? [] });
  const attester = extra.attester ?? (await sealerAttester(options));
  if (options.initDataFile !== '' && extra.measured === undefined) {
    throw new KmsError('INTERNAL', 'KMS_SEALER_INIT_DATA_FILE is set: start the service with its measured policies (loadMeasuredPolicies)');
  }
  const measuredAdmin = extra.measured?.adminPolicy;
  const adminPolicy = measuredAdmin?.policy ?? (await AdminPolicy.load(options.adminPolicyFile));
  if (adminPolicy.namesAgentPolicies && extra.measured === undefined) {
    // A function is granted only if it trusts this service alone, which takes its own measured identity.
    throw new KmsError('CONFIG', 'the admin policy names agent policies ("policy.rego:…"), which apply only with KMS_SEALER_INIT_DATA_FILE');
  }
  const pin = custodianPin(options);
  const identity = await SealerIdentity.create(attester);
  const auto = await configuredAutoUnseal(options, store, attester, log);
  // Plaintext shares cross every hop between a TD and a custodian: development only (refused above in production).
  const plaintextShares = (options.plaintextShares ?? (process.env.NODE_ENV === 'production' ? 'refuse' : 'allow')) === 'allow';
  // The same list in every replica of a StatefulSet: this replica's own entry is dropped.
  const peerUrls = otherReplicas(options.peers, hostname());
  const core = await SealerCore.open(store, {
    rootKey: options.rootKey,
    recoveryTtlMs: options.recoveryTtlSeconds * 1000,
    log,
    plaintextShares,
    openShare: (jwe) => openShare(jwe, identity.recoveryPrivateKey),
    renewRecoveryKey: () => identity.renewRecoveryKey(),
    ...(auto === undefined ? {} : { onKeyChange: auto.autoUnseal.onKeyChange }),
    followRecord: peerUrls.length > 0,
    pinnedCustodians: pin,
    convertV1State: options.convertV1State,
  });

  const peers =
    peerUrls.length === 0 || core.source === 'secret'
      ? undefined
      : new PeerUnsealer({
          core,
          peers: peerUrls,
          ca: await readPeerCa(
            options.peerCaFile === ''
              ? { file: tls.certFile, variable: 'KMS_SEALER_TLS_CERT_FILE' }
              : { file: options.peerCaFile, variable: 'KMS_SEALER_PEER_CA_FILE' },
          ),
          attester,
          verifiers,
          policy: adminPolicy,
          syncMs: options.syncSeconds * 1000,
          log,
        });
  // A restarted replica says `starting` (functions ride it out) only while something but shares may unseal it.
  core.keyMayArrive(() => (peers !== undefined && !peers.noPeerHoldsKey) || auto?.autoUnseal.pending === true);
  const handler = sealerHandler({
    core,
    sessions,
    tokens,
    verifiers,
    adminPolicy,
    proofs: new ProofVerifier(),
    identity,
    insecureDevMode: options.insecureDevMode,
    ...(extra.measured && { selfIdentity: extra.measured.identity }),
    log,
    ...(peers === undefined ? {} : { noPeerHoldsKey: () => peers.noPeerHoldsKey }),
  });
  const server = createServer({ key: tls.key, cert: tls.cert, minVersion: 'TLSv1.2' }, handler);
  // Longer than clients' idle keep-alive sockets live, so a reused socket is not closed under them.
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 70_000;
  server.requestTimeout = 30_000;
  answerConnect(server, handler);
  const sweeper = setInterval(() => sessions.sweep(), 30_000);
  sweeper.unref();

  const { port } = await listen(server, options.port, options.host, { hostEnv: 'KMS_SEALER_HOST', portEnv: 'KMS_SEALER_PORT' });
  const host = options.host.includes(':') ? `[${options.host}]` : options.host;
  const url = `https://${host === '0.0.0.0' || host === '[::]' ? 'localhost' : host}:${port}`;

  const status = core.status();
  const state = status.source === 'secret' ? 'unsealed (root key from secret)' : !status.initialized ? 'uninitialized' : status.sealed ? 'sealed' : 'unsealed';
  log.info(`TLS certificate${tls.selfSigned ? ' (self-signed: point KMS_SEALER_CA_FILE at it)' : ''}`, { certFile: tls.certFile });
  log.info(`verifiers: ${[...verifiers.keys()].join(', ') || 'none (no TEE can attest)'}`);
  if (pin !== undefined) {
    log.info(
      `custodians pinned (KMS_SEALER_CUSTODIANS): shares go only to the keys with these RFC 7638 thumbprints, in share order, ${pin.threshold} of them recovering (KMS_SEALER_CUSTODIANS_THRESHOLD)`,
      { thumbprints: pin.thumbprints.join(',') },
    );
    if (pin.previous !== undefined) {
      log.info(
        `previous custodians pinned for a change of custodians (KMS_SEALER_CUSTODIANS_PREVIOUS): ${pin.previous.threshold} of their shares, each with its recovery challenge, still recover this service`,
        { thumbprints: pin.previous.thumbprints.join(',') },
      );
    }
  }
  log.info(`shares: ${plaintextShares ? 'plaintext allowed (development)' : 'only encrypted to custodians and to the recovery key'}`);
  log.info(`proves itself with ${identity.tee} evidence (KMS_SEALER_ATTESTER)${identity.tee === 'sample' ? ': it proves nothing, development only' : ''}`);
  if (extra.measured !== undefined) log.info(`init-data: this TD's own (KMS_SEALER_INIT_DATA_FILE), identity ${extra.measured.identity}`);
  const adminSource = measuredAdmin?.source ?? (options.adminPolicyFile === '' ? undefined : options.adminPolicyFile);
  log.info(
    adminSource === undefined
      ? 'admin policy: none (KMS_SEALER_ADMIN_POLICY_FILE unset): no workload may rotate, verify, recover or seal'
      : `admin policy from ${adminSource}: identities granted ${adminPolicy.describe()}`,
  );
  log.info(`${state}; root key id ${status.rootKeyId ?? '-'}`);
  if (auto !== undefined) log.info(`auto-unseal: from ${options.unsealKbsUrl} (resource ${options.unsealResource}); shares still unseal`);
  if (peers !== undefined) log.info(`replica of ${peerUrls.length} peer(s); the shared record is re-read every ${options.syncSeconds} s`);
  log.info('listening', { url });
  // After `listening`: the KBS or the peers may be slow or gone, and the service answers (sealed) meanwhile.
  auto?.autoUnseal.start(core);
  peers?.start();

  return {
    server,
    url,
    certFile: tls.certFile,
    core,
    close: async () => {
      clearInterval(sweeper);
      auto?.close();
      await peers?.stop();
      return closeServer(server);
    },
  };
}

/** The CA that peers' certificates are checked against; a file that cannot be read names its variable. */
async function readPeerCa({ file, variable }: { file: string; variable: string }): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch {
    throw new KmsError('CONFIG', `${variable} names a file that cannot be read (the CA for KMS_SEALER_PEERS): ${file}`);
  }
}
