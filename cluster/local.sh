#!/usr/bin/env bash
# A real multi-node Ray cluster on this machine: one head node and N worker nodes, each
# a separate `ray start` with its own CPUs, ports and a custom resource naming it.
#
#   cluster/local.sh up [--workers N] [--worker-cpus C] [--head-cpus C] [--port P] [--dashboard-port D] [--token]
#   cluster/local.sh status
#   cluster/local.sh down
#
# State (ports, temp dir, logs) lives in $FINEGYM_RAY_CLUSTER_DIR (default
# /tmp/finegym_ray_cluster). `up` returns once `ray status` counts every node. `down`
# stops exactly the processes started here (those that carry this cluster's mark in
# their environment or name its temp dir, and everything below them), never other Rays
# on the host: it does not call `ray stop`.
#
# Only the dashboard (the Jobs API) listens on 127.0.0.1 alone. Ray 2.60 gives every
# node the machine's own address (`ray start` and `ray.init` replace 127.0.0.1 and
# localhost with it, so that other machines could join), and its GCS, raylets, agents,
# Ray Client server and workers listen there or on all interfaces: whoever can reach
# this machine can reach the cluster. Every command runs with the same RAY_AUTH_MODE, so
# drivers and `ray job submit` can join. By default `disabled`, for tests on a machine
# nobody else reaches. Anywhere else use `--token` (or RAY_AUTH_MODE=token): a fresh
# token in $FINEGYM_RAY_CLUSTER_DIR/auth_token (mode 0600), which every Ray RPC and the
# Jobs API then require; `up` prints how to send it. The head has no CPUs by default: it
# runs drivers and the control plane, work goes to the worker nodes, as on a real cluster.
set -euo pipefail

DIR="${FINEGYM_RAY_CLUSTER_DIR:-/tmp/finegym_ray_cluster}"
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# The project's venv first (what the README sets up), else a `ray` on PATH.
RAY="${RAY:-$( [[ -x "$ROOT/.venv/bin/ray" ]] && echo "$ROOT/.venv/bin/ray" || command -v ray )}"
PYTHON="$(dirname "$RAY")/python"
# Job entry points run `python ...` on the head: make that the Python Ray runs in.
export PATH="$(dirname "$RAY"):$PATH"

usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

use_token() {
  # Ray prefers RAY_AUTH_TOKEN over the file: drop a stray one so the file decides.
  unset RAY_AUTH_TOKEN
  export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$DIR/auth_token"
}

free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Ports every node would otherwise take at fixed defaults (two nodes on one host clash).
node_ports() {
  echo "--node-manager-port=$(free_port) --object-manager-port=$(free_port)" \
       "--dashboard-agent-listen-port=$(free_port) --dashboard-agent-grpc-port=$(free_port)" \
       "--runtime-env-agent-port=$(free_port) --metrics-export-port=$(free_port)"
}

# Every process `up` starts inherits this variable, set to the cluster's own value (kept
# in $DIR/mark): it finds Ray's Client server, which names neither the temp dir nor a
# parent that does, and outlives the `ray start` that started it.
MARK_VAR=FINEGYM_LOCAL_CLUSTER

our_pids() {
  # Processes that carry our mark or name our temp dir (GCS, raylets, dashboard,
  # monitors, the Ray Client server) and all their descendants (workers, agents,
  # dashboard modules).
  "$PYTHON" - "$DIR/tmp" "$MARK_VAR=$(cat "$DIR/mark" 2>/dev/null)" <<'PY'
import os, sys
temp_dir, mark = sys.argv[1].encode(), sys.argv[2].encode()
parent, roots = {}, []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
        state, ppid = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[:2]
    except OSError:
        continue
    if state == "Z":  # already dead, waiting for its parent to collect it
        continue
    parent[int(pid)] = int(ppid)
    if int(pid) == os.getpid():
        continue
    try:
        marked = not mark.endswith(b"=") and mark in open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    except OSError:  # another user's
        marked = False
    if marked or temp_dir in cmdline:
        roots.append(int(pid))
found, todo = set(roots), list(roots)
while todo:
    p = todo.pop()
    for child, ppid in parent.items():
        if ppid == p and child not in found:
            found.add(child)
            todo.append(child)
print("\n".join(map(str, sorted(found))))
PY
}

cmd_up() {
  local workers=2 worker_cpus=1 head_cpus=0 port="" dport=""
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --workers) workers="$2"; shift 2 ;;
      --worker-cpus) worker_cpus="$2"; shift 2 ;;
      --head-cpus) head_cpus="$2"; shift 2 ;;
      --port) port="$2"; shift 2 ;;
      --dashboard-port) dport="$2"; shift 2 ;;
      --token) export RAY_AUTH_MODE=token; shift ;;
      -h|--help) usage ;;
      *) echo "local.sh up: unknown option $1" >&2; usage 2 ;;
    esac
  done
  if [[ -f "$DIR/address" ]] && [[ -n "$(our_pids)" ]]; then
    echo "a cluster is already up from $DIR (address $(cat "$DIR/address")); run 'down' first" >&2; exit 1
  fi
  # Ray puts unix sockets under $DIR/tmp/session_<date>_<pid>/sockets/; Linux caps
  # their paths at 107 bytes.
  if [[ ${#DIR} -gt 40 ]]; then
    echo "state folder $DIR is too long for Ray's socket paths (max 40 characters): set FINEGYM_RAY_CLUSTER_DIR shorter" >&2
    exit 2
  fi
  mkdir -p "$DIR/logs"
  if [[ "$RAY_AUTH_MODE" == token ]]; then
    # A new token per cluster, readable only by this user, never printed.
    rm -f "$DIR/auth_token"
    (umask 077 && "$PYTHON" -c 'import secrets; print(secrets.token_hex(32), end="")' > "$DIR/auth_token")
    use_token
  fi
  echo "$RAY_AUTH_MODE" > "$DIR/auth_mode"
  "$PYTHON" -c 'import secrets; print(secrets.token_hex(8))' > "$DIR/mark"
  export "$MARK_VAR=$(cat "$DIR/mark")"
  port="${port:-$(free_port)}"; dport="${dport:-$(free_port)}"
  echo "starting head on 127.0.0.1:$port (dashboard http://127.0.0.1:$dport, $head_cpus CPUs)"
  # shellcheck disable=SC2046
  "$RAY" start --head --port="$port" --num-cpus="$head_cpus" \
    --dashboard-host=127.0.0.1 --dashboard-port="$dport" --ray-client-server-port="$(free_port)" \
    --temp-dir="$DIR/tmp" --disable-usage-stats $(node_ports) > "$DIR/logs/head.log" 2>&1 \
    || { cat "$DIR/logs/head.log" >&2; exit 1; }
  echo "127.0.0.1:$port" > "$DIR/address"
  echo "http://127.0.0.1:$dport" > "$DIR/dashboard"
  for i in $(seq 1 "$workers"); do
    echo "starting worker node $i ($worker_cpus CPUs, resource worker_$i)"
    # Every node on this host writes its workers' logs into the head's session folder,
    # and each log monitor forwards every file there to the drivers: one monitor (the
    # head's), or each line a worker prints reaches a driver once per node.
    # shellcheck disable=SC2046
    "$RAY" start --address="127.0.0.1:$port" --num-cpus="$worker_cpus" \
      --resources="{\"worker_$i\": 1}" --include-log-monitor=false --disable-usage-stats $(node_ports) \
      > "$DIR/logs/worker_$i.log" 2>&1 \
      || { cat "$DIR/logs/worker_$i.log" >&2; exit 1; }
  done
  # `ray start` returns before the dashboard serves the Jobs API, and before Ray's
  # autoscaler report (what `ray status` shows, refreshed every 5 s) counts its node:
  # wait for both, so that `status` and what runs next see every node.
  "$PYTHON" - "$(cat "$DIR/dashboard")" "$((workers + 1))" "$DIR" <<'PY' || exit 1
import json, os, sys, time, urllib.request
dashboard, expected, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3]
path = os.environ.get("RAY_AUTH_TOKEN_PATH") if os.environ["RAY_AUTH_MODE"] == "token" else None
headers = {"Authorization": "Bearer " + open(path).read().strip()} if path else {}

def get(route):
    with urllib.request.urlopen(urllib.request.Request(dashboard + route, headers=headers), timeout=5) as reply:
        return json.load(reply)

def poll(seconds, probe, done):
    """probe()'s last answer (None while it fails) once done(answer), or after seconds."""
    deadline, answer = time.monotonic() + seconds, None
    while True:
        try:
            answer = probe()
        except (OSError, ValueError, KeyError, TypeError):  # not up yet, or no report yet
            pass
        if (answer is not None and done(answer)) or time.monotonic() > deadline:
            return answer
        time.sleep(0.2)

def active_nodes():
    return len(get("/api/cluster_status")["data"]["clusterStatus"]["autoscalerReport"]["activeNodes"])

if poll(90, lambda: get("/api/version"), lambda _: True) is None:
    sys.exit(f"the dashboard (Jobs API) did not answer at {dashboard} within 90 s; "
             f"logs: {folder}/tmp/session_latest/logs/dashboard.log")
active = poll(60, active_nodes, lambda n: n == expected)
if active != expected:
    sys.exit(f"{active or 0} of {expected} nodes active after 60 s; logs: {folder}/logs/ and "
             f"{folder}/tmp/session_latest/logs/raylet*.out and monitor.log; run 'down' before trying again")
PY
  echo "up: RAY_ADDRESS=$(cat "$DIR/address"), jobs: $(cat "$DIR/dashboard") (set RAY_AUTH_MODE=$RAY_AUTH_MODE)"
  if [[ "$RAY_AUTH_MODE" == token ]]; then
    echo "token: $DIR/auth_token; submit with: finegym-ray submit STAGE --address $(cat "$DIR/dashboard") --token-file $DIR/auth_token ..."
    echo "  or: RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$DIR/auth_token ray job submit --address $(cat "$DIR/dashboard") ..."
  fi
}

cmd_status() {
  [[ -f "$DIR/address" ]] || { echo "no cluster recorded in $DIR"; exit 1; }
  # Talk to the cluster in the mode it was started in.
  if [[ "$(cat "$DIR/auth_mode" 2>/dev/null)" == token ]]; then use_token; else export RAY_AUTH_MODE=disabled; fi
  echo "address $(cat "$DIR/address"), dashboard $(cat "$DIR/dashboard"), $(our_pids | wc -l) processes"
  "$RAY" status --address "$(cat "$DIR/address")"
}

cmd_down() {
  local pids
  pids="$(our_pids)"
  if [[ -z "$pids" ]]; then
    echo "nothing running from $DIR"; rm -f "$DIR/address" "$DIR/dashboard" "$DIR/auth_mode" "$DIR/auth_token" "$DIR/mark"; return
  fi
  echo "stopping $(echo "$pids" | wc -l) processes"
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 1 50); do [[ -z "$(our_pids)" ]] && break; sleep 0.2; done
  # GCS may ignore SIGTERM for a long time (shared/README.md): finish with SIGKILL, also
  # of processes started meanwhile, and return only once none is left (a killed process
  # can still be listed for a moment).
  for _ in $(seq 1 50); do
    pids="$(our_pids)"
    [[ -z "$pids" ]] && break
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    sleep 0.2
  done
  pids="$(our_pids)"
  if [[ -n "$pids" ]]; then
    echo "could not stop processes of $DIR: $(echo $pids)" >&2
    exit 1
  fi
  rm -f "$DIR/address" "$DIR/dashboard" "$DIR/auth_mode" "$DIR/auth_token" "$DIR/mark"
  echo "down"
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  status) cmd_status ;;
  down) cmd_down ;;
  -h|--help|help) usage ;;
  *) usage 2 ;;
esac
