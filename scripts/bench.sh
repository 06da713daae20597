#!/usr/bin/env bash
# `npm run bench`: build, then measure (bench/run.ts) and write bench/results/latest.{json,md,svg}.
#
#   npm run bench                            the whole bench (~8 minutes on 2 cores)
#   BENCH_ONLY=bare,lean BENCH_DURATION=3 npm run bench    a quicker, partial run (see bench/run.ts)
#   npm run bench -- --profile [warm|sealed|cold|storage] …   instead: a CPU profile (bench/profile.ts)
#   npm run bench -- --sealed-work [credentials]           instead: the sealed channel's own work (bench/sealed-work.ts)
#   npm run bench -- --replay-memory [entries]             instead: the replay memory's heap per entry (bench/replay-memory.ts)
#   node dist/bench/ab.js [cold] DIST_A DIST_B …           before/after of a change (bench/ab.ts)
#
# See docs/performance.md for the method and the results.
# Times never fail this script: it exits non-zero only when the harness itself breaks.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

node scripts/build-if-needed.mjs
# The AWS SDK warns once per process that its 2027 releases will need Node 22: noise in the output.
export AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED=true

if [[ ${1:-} == --profile ]]; then
  shift
  exec node dist/bench/profile.js "$@"
fi
if [[ ${1:-} == --sealed-work ]]; then
  shift
  exec node dist/bench/sealed-work.js "$@"
fi
if [[ ${1:-} == --replay-memory ]]; then
  shift
  exec node --expose-gc dist/bench/replay-memory.js "$@"
fi
exec node dist/bench/run.js "$@"
