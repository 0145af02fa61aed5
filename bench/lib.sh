# Shared by the bench scripts; source it, don't run it.
#
# Everything a benchmark touches lives in network namespaces named
# bn<pid>-<name> and in one temp directory; `cleanup` (trapped on EXIT,
# INT and TERM) removes all of it: processes it started (by pid), the
# namespaces, /etc/netns/<ns> and the temp directory. The host's own
# firewall is never touched.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")

BENCH_NETNS=()
BENCH_PIDS=()
BENCH_TMP=
BENCH_RM_NETNS_DIR=0

log() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "$*"; exit 1; }

need_root() {
  [ "$(id -u)" -eq 0 ] || die "run as root (it creates network namespaces)"
}

# apt-get installs the given commands' packages when a command is missing.
# Arguments: pairs of command:package.
need_cmds() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null 2>&1 || {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  } || die "cannot install ${missing[*]}"
}

cleanup() {
  local rc=$? pid ns
  trap - EXIT INT TERM
  set +e # a failing kill or wait must not stop the cleanup half-way
  for pid in "${BENCH_PIDS[@]}"; do
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  for ns in "${BENCH_NETNS[@]}"; do
    # Anything still running inside (started by us) goes with it.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
    case "$ns" in bn[0-9]*-*) rm -rf "/etc/netns/$ns" ;; esac
  done
  [ "$BENCH_RM_NETNS_DIR" = 1 ] && rmdir /etc/netns 2>/dev/null
  [ -n "$BENCH_TMP" ] && rm -rf "$BENCH_TMP"
  exit "$rc"
}

bench_init() {
  need_root
  BENCH_TMP=$(mktemp -d /tmp/palisade-bench.XXXXXX)
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# new_netns VAR NAME: creates bn<pid>-NAME with lo up and stores its name
# in VAR (not printed: a $(...) subshell would lose the cleanup record).
new_netns() {
  local ns="bn$$-$2"
  ip netns add "$ns" || die "cannot create namespace $ns"
  BENCH_NETNS+=("$ns")
  ip -n "$ns" link set lo up
  printf -v "$1" '%s' "$ns"
}

# netns_etc NS: creates /etc/netns/NS (private files for `ip netns exec`).
netns_etc() {
  [ -d /etc/netns ] || BENCH_RM_NETNS_DIR=1
  mkdir -p "/etc/netns/$1"
}

# The palisade binary: $PALISADE, else target/release/palisade, built
# with `cargo build --release` when missing or older than the sources. If
# that build fails but an older binary exists, it is used (with a warning).
palisade_bin() {
  if [ -n "${PALISADE:-}" ]; then
    echo "$PALISADE"
    return
  fi
  local bin="$REPO_DIR/target/release/palisade"
  if [ -x "$bin" ] && [ -z "$(find "$REPO_DIR/src" "$REPO_DIR/crates" "$REPO_DIR/Cargo.toml" \
      \( -name '*.rs' -o -name Cargo.toml \) -newer "$bin" 2>/dev/null | head -1)" ]; then
    echo "$bin"
    return
  fi
  log "building palisade (cargo build --release)"
  if ! (cd "$REPO_DIR" && cargo build --release --quiet) >&2; then
    [ -x "$bin" ] || die "cargo build --release failed"
    log "WARNING: cargo build --release failed; using the existing, older $bin"
  fi
  echo "$bin"
}

# median: one number per line on stdin, prints the median.
median() {
  sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "nan"; exit }
    if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# ratio A B: A / B with 3 decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "inf"; else printf "%.3f\n", a / b }'; }

# ok COND-as-awk-expression: prints PASS or FAIL.
check() { awk "BEGIN { print ($1) ? \"PASS\" : \"FAIL\" }"; }
