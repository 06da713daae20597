/**
 * The sealed channel's own work, in one process, without HTTP (docs/sealed-channel.md):
 *
 *   npm run bench -- --sealed-work [credentials=10000]
 *
 * For each `alg` a client may seal with, jose makes `credentials` sealed credentials as
 * tee-kms/client makes them (one ephemeral key and one response key reused). Then, in three rounds
 * alternating between the two, the server's own code opens each (`openSealedCredential`, with fresh
 * key caches and replay memory) and seals an answer to it (`sealAnswer`), the first tenth
 * unmeasured. Prints the CPU time (process.cpuUsage) per
 * request of opening, of sealing, and of both. What a request costs in a server is more: see
 * docs/performance.md, "Where the time goes now".
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { sealAnswer } from '../shared/sealed/answer.js';
import { openSealedCredential, type SealedCredential } from '../shared/sealed/credential.js';
import { sealedKeyCaches } from '../shared/sealed/key-cache.js';
import { ReplayGuard } from '../shared/sealed/replay.js';
import { sealedCredentials } from './loadgen.js';

const count = Number(process.argv[2] ?? 10_000);
if (!Number.isSafeInteger(count) || count < 100) throw new Error('credentials: a whole number, at least 100');
const request = { method: 'GET', target: '/dataKey/warm?primaryKeyName=pk' };
const answer = { dataKey: randomBytes(32).toString('base64'), name: 'warm', primaryKeyName: 'pk', user: 'bench' };
const service = generateKeyPairSync('x25519');

// Three alternating rounds, so that neither algorithm always runs on code the other warmed up.
const credentials = { 'ECDH-ES': await seal('ECDH-ES'), 'ECDH-ES+A256KW': await seal('ECDH-ES+A256KW') };
for (let round = 1; round <= 3; round++) {
  for (const alg of ['ECDH-ES', 'ECDH-ES+A256KW'] as const) {
    const caches = sealedKeyCaches('rk1', 300);
    const replay = new ReplayGuard(2 * count);
    const opened: SealedCredential[] = [];
    const open = (i: number) => (opened[i] = openSealedCredential(credentials[alg][i]!, service.privateKey, request, replay, Date.now(), caches));
    const reply = (i: number) => sealAnswer(answer, opened[i]!.responseKey, { 'kms-jti': opened[i]!.jti });
    const warm = Math.floor(count / 10);
    for (let i = 0; i < warm; i++) {
      open(i);
      reply(i);
    }
    const openUs = cpuPerCall(warm, count, open);
    const sealUs = cpuPerCall(warm, count, reply);
    console.log(
      `round ${round}, ${alg}: open ${openUs.toFixed(1)} µs, seal ${sealUs.toFixed(1)} µs, both ${(openUs + sealUs).toFixed(1)} µs per request (${count - warm} requests)`,
    );
    caches.requests.close();
    caches.answers.close();
  }
}

/** Credentials sealed as tee-kms/client seals them while it reuses its keys (the load generator's). */
async function seal(alg: 'ECDH-ES' | 'ECDH-ES+A256KW'): Promise<string[]> {
  const serviceKey = { ...(service.publicKey.export({ format: 'jwk' }) as Record<string, string>), kid: 'rk1' };
  const sealed = await sealedCredentials({ mode: 'sealed', path: request.target, serviceKey, user: 'bench', token: 't0ken-of-the-bench', count, alg });
  return sealed.map((authorization) => authorization.slice('Sealed '.length));
}

function cpuPerCall(from: number, to: number, fn: (i: number) => unknown): number {
  const start = process.cpuUsage();
  for (let i = from; i < to; i++) fn(i);
  const used = process.cpuUsage(start);
  return (used.user + used.system) / (to - from);
}
