#!/usr/bin/env bash
# A real S3 server for tests: a single-node Ceph RGW (mon + memstore OSD + radosgw) on loopback.
#
#   scripts/s3-local.sh start DIR   install packages if missing, start the cluster with all state
#                                   under DIR, write DIR/env and print its KMS_S3_* lines on stdout
#   scripts/s3-local.sh stop DIR    kill the recorded daemons (reverse order) and rm -rf DIR; idempotent
#
# Progress and diagnostics go to stderr; stdout carries only the env lines. Several instances
# with different DIRs can run at the same time. Used by the tests (test/support/rgw.ts) and the bench.
set -euo pipefail

PACKAGES=(radosgw ceph-mon ceph-osd ceph-common)
WAIT_SECONDS=${S3_LOCAL_WAIT_SECONDS:-60}
REPO_ROOT="$(cd -P "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf 's3-local: %s\n' "$*" >&2; }

usage() {
  echo "usage: $0 start|stop DIR" >&2
  exit 2
}

# ---------------------------------------------------------------------------------------------
# stop

# A PID counts as one of ours while its command line still names this instance's ceph.conf
# (guards against PID reuse; zombies have an empty cmdline and count as gone).
is_ours() {
  local pid=$1 conf=$2 cmdline
  [[ -r /proc/$pid/cmdline ]] || return 1
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmdline == *"$conf"* ]]
}

# Stop one daemon: SIGTERM, then SIGKILL if it is still there after ~5 s.
stop_pid() {
  local pid=$1 conf=$2 deadline
  is_ours "$pid" "$conf" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + 5))
  while is_ours "$pid" "$conf"; do
    if ((SECONDS >= deadline)); then
      log "pid $pid ignored SIGTERM for 5 s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      deadline=$((SECONDS + 5))
      while is_ours "$pid" "$conf" && ((SECONDS < deadline)); do sleep 0.1; done
      return 0
    fi
    sleep 0.05
  done
}

# Reverse start order, one at a time: radosgw and the OSD shut down in well under a second
# while the mon is still there, but each stalls ~5 s if the mon goes first.
kill_recorded() {
  local dir=$1 pids=() i
  [[ -f $dir/pids ]] || return 0
  mapfile -t pids <"$dir/pids"
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    [[ ${pids[i]} =~ ^[0-9]+$ ]] && stop_pid "${pids[i]}" "$dir/ceph.conf"
  done
  return 0
}

cmd_stop() {
  local dir=$1
  [[ -d $dir ]] || return 0
  dir=$(cd "$dir" && pwd)
  kill_recorded "$dir"
  rm -rf "$dir"
}

# ---------------------------------------------------------------------------------------------
# start

ensure_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  # Serialize concurrent installs (dpkg has one lock anyway); re-check after getting the lock.
  exec 9>/var/lock/tee-kms-s3-local-apt.lock
  flock 9
  missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]} > 0)); then
    log "installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update >&2
    apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends "${missing[@]}" >&2
  fi
  flock -u 9
  exec 9>&-
}

free_port() {
  node -e '
    const s = require("net").createServer();
    s.listen(0, "127.0.0.1", () => { process.stdout.write(String(s.address().port)); s.close(); });'
}

rand_string() { # length alphabet
  node -e '
    const [n, abc] = process.argv.slice(1);
    const b = require("crypto").randomBytes(Number(n));
    process.stdout.write(Array.from(b, (x) => abc[x % abc.length]).join(""));' "$1" "$2"
}

# fail MESSAGE [LOGFILE]: print the message and the tail of the log, then exit (the ERR/EXIT
# trap kills whatever was already started; DIR stays for inspection until `stop DIR`).
fail() {
  log "ERROR: $1"
  if [[ -n ${2:-} && -f $2 ]]; then
    log "---- tail of $2 ----"
    tail -n 40 "$2" >&2 || true
    log "---- end of $2 ----"
  fi
  exit 1
}

# wait_for DESCRIPTION LOGFILE PID COMMAND...: retry COMMAND until it succeeds, the daemon PID
# dies, or WAIT_SECONDS pass.
wait_for() {
  local what=$1 logf=$2 pid=$3
  shift 3
  local deadline=$((SECONDS + WAIT_SECONDS))
  until "$@" >/dev/null 2>&1; do
    if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then fail "$what: daemon (pid $pid) exited" "$logf"; fi
    ((SECONDS < deadline)) || fail "$what: not ready after ${WAIT_SECONDS}s" "$logf"
    sleep 0.25
  done
}

# run a daemon detached from our stdio (so callers reading our stdout see EOF) and record its PID
spawn() {
  local name=$1
  shift
  setsid "$@" </dev/null >"$DIR/log/$name.out" 2>&1 &
  echo $! >>"$DIR/pids"
  LAST_PID=$!
}

ceph_cli() { timeout 20 ceph -c "$CONF" --connect-timeout 10 "$@"; }

osd_up() { ceph_cli osd stat 2>/dev/null | grep -Eq '(^|[^0-9])1 up'; }

http_answers() { curl -s -o /dev/null -m 2 "http://127.0.0.1:$RGW_PORT/"; }

on_start_exit() {
  local rc=$?
  if ((rc != 0)); then
    log "start failed; stopping daemons already started (state kept in $DIR; run '$0 stop $DIR' to remove)"
    kill_recorded "$DIR" || true
  fi
  exit "$rc"
}

cmd_start() {
  DIR=$1
  local t0=$SECONDS
  mkdir -p "$DIR"
  DIR=$(cd "$DIR" && pwd)
  if [[ -e $DIR/pids ]]; then
    echo "s3-local: $DIR already holds an instance; stop it first" >&2
    exit 1
  fi
  CONF=$DIR/ceph.conf
  export CEPH_CONF=$CONF
  trap on_start_exit EXIT

  ensure_packages

  mkdir -p "$DIR"/{log,run,mon,osd,rgw,crash,tmp}
  : >"$DIR/pids"

  local fsid mon_port osd_uuid osd_id access_key secret_key monmap
  fsid=$(</proc/sys/kernel/random/uuid)
  osd_uuid=$(</proc/sys/kernel/random/uuid)
  mon_port=$(free_port)
  RGW_PORT=$(free_port)
  while [[ $RGW_PORT == "$mon_port" ]]; do RGW_PORT=$(free_port); done
  access_key=$(rand_string 20 ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789)
  secret_key=$(rand_string 40 ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789)

  cat >"$CONF" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
ms mon client mode = crc
auth cluster required = none
auth service required = none
auth client required = none
keyring = $DIR/keyring
run dir = $DIR/run
crash dir = $DIR/crash
tmp dir = $DIR/tmp
log file = $DIR/log/\$cluster-\$name.log
mon cluster log file = $DIR/log/\$cluster.log
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
mon data avail warn = 1
mon data avail crit = 0

[mon]
mon data = $DIR/mon/\$cluster-\$id
pid file = $DIR/run/\$cluster-\$name.pid
admin socket = $DIR/run/\$cluster-\$name.asok
# commit map changes at once instead of batching them for 1 s: start-up 18 s -> 3 s
# (each rgw pool creation otherwise waits for several paxos rounds)
paxos propose interval = 0.01
paxos min wait = 0.001

[osd]
osd data = $DIR/osd/\$cluster-\$id
osd objectstore = memstore
memstore device bytes = 1073741824
# on SIGTERM exit at once instead of waiting up to 5 s to tell a mon that may already be gone
osd fast shutdown = true
osd fast shutdown notify mon = false
pid file = $DIR/run/\$cluster-\$name.pid
admin socket = $DIR/run/\$cluster-\$name.asok

[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT tcp_nodelay=1
rgw data = $DIR/rgw/\$cluster-\$id
ms mon client mode = crc
EOF

  # --- mon
  log "starting mon on 127.0.0.1:$mon_port (state in $DIR)"
  monmap=$DIR/monmap
  ceph-authtool --create-keyring "$DIR/keyring" --gen-key -n mon. --cap mon 'allow *' >&2
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$monmap" >&2
  ceph-mon -c "$CONF" --mkfs -i a --monmap "$monmap" --keyring "$DIR/keyring" >&2 \
    || fail "ceph-mon --mkfs failed" "$DIR/log/ceph-mon.a.log"
  spawn mon ceph-mon -c "$CONF" -i a -f
  wait_for "mon" "$DIR/log/ceph-mon.a.log" "$LAST_PID" ceph_cli mon stat

  # --- osd
  osd_id=$(ceph_cli osd new "$osd_uuid") || fail "ceph osd new failed" "$DIR/log/ceph-mon.a.log"
  [[ $osd_id =~ ^[0-9]+$ ]] || fail "ceph osd new returned '$osd_id'"
  log "starting osd.$osd_id (memstore, 1 GiB)"
  mkdir -p "$DIR/osd/ceph-$osd_id"
  ceph-osd -c "$CONF" -i "$osd_id" --mkfs --osd-uuid "$osd_uuid" >"$DIR/log/osd-mkfs.out" 2>&1 \
    || fail "ceph-osd --mkfs failed" "$DIR/log/osd-mkfs.out"
  spawn osd ceph-osd -c "$CONF" -i "$osd_id" -f
  wait_for "osd.$osd_id up" "$DIR/log/ceph-osd.$osd_id.log" "$LAST_PID" osd_up

  # --- rgw user (creates the rgw metadata pools)
  log "creating rgw user"
  timeout "$WAIT_SECONDS" radosgw-admin -c "$CONF" -n client.rgw user create --uid=tee-kms-test \
    --display-name="tee-kms test" --access-key="$access_key" --secret-key="$secret_key" \
    >"$DIR/log/user-create.out" 2>&1 || fail "radosgw-admin user create failed" "$DIR/log/user-create.out"

  # --- radosgw
  log "starting radosgw on 127.0.0.1:$RGW_PORT"
  spawn rgw radosgw -c "$CONF" -n client.rgw -f
  wait_for "radosgw HTTP on 127.0.0.1:$RGW_PORT" "$DIR/log/ceph-client.rgw.log" "$LAST_PID" http_answers

  # --- warm-up: the first bucket/object creates the index and data pools (several seconds)
  log "warm-up bucket"
  S3L_ENDPOINT="http://127.0.0.1:$RGW_PORT" S3L_KEY="$access_key" S3L_SECRET="$secret_key" \
    timeout "$WAIT_SECONDS" node -e '
      const { createRequire } = require("module");
      const req = createRequire(process.argv[1] + "/package.json");
      const s3 = req("@aws-sdk/client-s3");
      const c = new s3.S3Client({
        endpoint: process.env.S3L_ENDPOINT, region: "us-east-1", forcePathStyle: true,
        credentials: { accessKeyId: process.env.S3L_KEY, secretAccessKey: process.env.S3L_SECRET },
        requestChecksumCalculation: "WHEN_REQUIRED", responseChecksumValidation: "WHEN_REQUIRED",
      });
      const Bucket = "warmup-" + require("crypto").randomBytes(6).toString("hex");
      (async () => {
        await c.send(new s3.CreateBucketCommand({ Bucket }));
        await c.send(new s3.PutObjectCommand({ Bucket, Key: "w", Body: "w" }));
        await c.send(new s3.DeleteObjectCommand({ Bucket, Key: "w" }));
        await c.send(new s3.DeleteBucketCommand({ Bucket }));
      })().catch((e) => { console.error(e); process.exit(1); });' "$REPO_ROOT" \
    >"$DIR/log/warmup.out" 2>&1 || fail "warm-up bucket failed" "$DIR/log/warmup.out"

  cat >"$DIR/env.tmp" <<EOF
KMS_S3_ENDPOINT=http://127.0.0.1:$RGW_PORT
KMS_S3_REGION=us-east-1
KMS_S3_ACCESS_KEY_ID=$access_key
KMS_S3_SECRET_ACCESS_KEY=$secret_key
EOF
  mv "$DIR/env.tmp" "$DIR/env"
  log "ready in $((SECONDS - t0)) s: http://127.0.0.1:$RGW_PORT"
  cat "$DIR/env"
}

# ---------------------------------------------------------------------------------------------

(($# == 2)) || usage
[[ -n $2 ]] || usage
case $1 in
  start) cmd_start "$2" ;;
  stop) cmd_stop "$2" ;;
  *) usage ;;
esac
