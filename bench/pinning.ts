/**
 * Pinning for the storage ratios: Ceph RGW's daemons on one core, the KMS, the load generator and
 * this process (which drains the servers' stdout) on the other, with `taskset -a` (every thread).
 * On one machine the two sides otherwise compete for the same cores, and a faster KMS leaves RGW
 * less CPU: pinned, each side has its own core, as with storage on its own machine.
 */
import { execFileSync } from 'node:child_process';
import { cpus } from 'node:os';
import { log } from './settings.js';

/** Sets the CPU affinity of every thread of `pid` (taskset's list syntax: "0", "1", "0-1"). */
function setAffinity(pid: number, cpuList: string): void {
  execFileSync('taskset', ['-a', '-p', '-c', cpuList, String(pid)], { stdio: 'ignore' });
}

/** Whether pinning can be done here: two cores or more, and taskset installed. */
export function canPin(): boolean {
  if (cpus().length < 2) return false;
  try {
    execFileSync('taskset', ['-p', String(process.pid)], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * Runs `f` with the storage's processes on core 0 and the client side's on core 1, then gives every
 * process all cores back (also when `f` throws). `client` is read when pinning: the processes as
 * they are then.
 */
export async function pinned<T>(storage: readonly number[], client: () => readonly number[], f: () => Promise<T>): Promise<T> {
  const all = `0-${cpus().length - 1}`;
  // A load generator forked while pinned inherits core 1 from this process.
  const clientPids = [process.pid, ...client()];
  const done: number[] = [];
  try {
    for (const pid of storage) {
      setAffinity(pid, '0');
      done.push(pid);
    }
    for (const pid of clientPids) {
      setAffinity(pid, '1');
      done.push(pid);
    }
    log(`pinned: storage pids ${storage.join(' ')} on core 0; ${clientPids.join(' ')} on core 1`);
    return await f();
  } finally {
    for (const pid of done) {
      try {
        setAffinity(pid, all);
      } catch {
        // Gone already (a server that exited): nothing to give back.
      }
    }
  }
}
