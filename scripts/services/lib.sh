#!/usr/bin/env bash
# Shared helpers for scripts/services/*.sh. Source it; do not run it.
# Every helper prints to stderr with a "[<service>]" prefix (set SVC_NAME first).

SERVICES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SERVICES_DIR/../.." && pwd)"
# shellcheck disable=SC2034  # used by the scripts that source this file
CACHE_ROOT="${SENTINEL_CACHE_DIR:-$REPO_ROOT/.cache}"
VENV_DIR="${SENTINEL_VENV:-$REPO_ROOT/.venv}"
SVC_NAME="${SVC_NAME:-service}"

log()  { printf '[%s] %s\n' "$SVC_NAME" "$*" >&2; }
die()  { printf '[%s] ERROR: %s\n' "$SVC_NAME" "$*" >&2; exit 1; }

now_s() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now_s)" 'BEGIN { printf "%.1f", b - a }'; }

# pid_alive PIDFILE -> 0 if the pid in PIDFILE is a live process.
pid_alive() {
  local f="$1" pid
  [[ -s "$f" ]] || return 1
  pid="$(<"$f")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # a zombie counts as dead
  [[ "$(proc_stat_field "$pid" 3)" != "Z" ]] || return 1
  # guard against pid reuse (e.g. after a reboot): the start time must match the recorded one
  if [[ -s "$f.start" ]]; then
    [[ "$(proc_stat_field "$pid" 22)" == "$(<"$f.start")" ]] || return 1
  fi
}

# proc_stat_field PID N: field N of /proc/PID/stat (the comm field may contain spaces).
proc_stat_field() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
  stat="${stat##*) }"                      # drop "pid (comm) "
  awk -v n="$(( $2 - 2 ))" '{print $n}' <<<"$stat"
}

# port_in_use PORT -> 0 if something listens on 127.0.0.1:PORT
port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# require_free_port PORT WHAT
require_free_port() {
  if port_in_use "$1"; then
    die "port $1 ($2) is already in use by another process; free it or choose another port via the env var (see --help)"
  fi
}

# start_daemon PIDFILE LOGFILE CMD... : start CMD detached (own session), stdout+stderr -> LOGFILE.
start_daemon() {
  local pidfile="$1" logfile="$2"; shift 2
  mkdir -p "$(dirname "$pidfile")" "$(dirname "$logfile")"
  {
    echo "===== $(date -Is) starting: $*"
  } >>"$logfile"
  # setsid: survive the caller's terminal/session ending; it execs, so $! is the service pid.
  nohup setsid "$@" >>"$logfile" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$pidfile"
  proc_stat_field "$pid" 22 >"$pidfile.start"
}

# show_log_tail FILE: the lines of FILE since the last "===== ... starting" marker (max 40).
show_log_tail() {
  local f="$1"
  [[ -f "$f" ]] || return 0
  printf -- '----- %s -----\n' "$f" >&2
  awk '/^===== .* starting/ { n = 0; delete buf } { buf[++n] = $0 }
       END { s = (n > 40) ? n - 39 : 1; for (i = s; i <= n; i++) print buf[i] }' "$f" >&2
}

# wait_for TIMEOUT_S PIDFILE LOGFILES WHAT CHECK_CMD...
# Polls CHECK_CMD until it succeeds. Fails early if the process died; on timeout the
# unresponsive process is stopped. LOGFILES: one path or several joined with '|'.
wait_for() {
  local timeout="$1" pidfile="$2" logs="$3" what="$4"; shift 4
  local start f logfiles; start="$(date +%s)"
  IFS='|' read -r -a logfiles <<<"$logs"
  while true; do
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    if [[ -n "$pidfile" ]] && ! pid_alive "$pidfile"; then
      log "process exited before $what; log excerpt:"
      for f in "${logfiles[@]}"; do show_log_tail "$f"; done
      rm -f "$pidfile" "$pidfile.start"
      die "$what failed: process died (logs: ${logfiles[*]})"
    fi
    if (( $(date +%s) - start >= timeout )); then
      log "timed out after ${timeout}s waiting for $what; log excerpt:"
      for f in "${logfiles[@]}"; do show_log_tail "$f"; done
      [[ -n "$pidfile" ]] && stop_pidfile "$pidfile" "unresponsive process" 10
      die "$what did not happen within ${timeout}s (logs: ${logfiles[*]})"
    fi
    sleep 0.5
  done
}

# stop_pidfile PIDFILE WHAT [TIMEOUT_S]: SIGTERM, wait, then SIGKILL. Removes PIDFILE.
stop_pidfile() {
  local pidfile="$1" what="$2" timeout="${3:-30}" pid i
  if ! pid_alive "$pidfile"; then
    if [[ -f "$pidfile" ]]; then log "$what is not running (removing stale pid file)"; rm -f "$pidfile" "$pidfile.start"
    else log "$what is not running"; fi
    return 0
  fi
  pid="$(<"$pidfile")"
  log "stopping $what (pid $pid, SIGTERM)..."
  kill -TERM "$pid" 2>/dev/null || true
  for (( i = 0; i < timeout * 4; i++ )); do
    pid_alive "$pidfile" || break
    sleep 0.25
  done
  if pid_alive "$pidfile"; then
    log "$what did not exit within ${timeout}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for (( i = 0; i < 20; i++ )); do pid_alive "$pidfile" || break; sleep 0.25; done
  fi
  rm -f "$pidfile" "$pidfile.start"
  log "$what stopped"
}

# venv_python: print the venv python if it exists, else fail.
venv_python() {
  if [[ -x "$VENV_DIR/bin/python" ]]; then echo "$VENV_DIR/bin/python"; return 0; fi
  return 1
}
