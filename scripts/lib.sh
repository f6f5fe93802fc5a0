# Shared helpers for scripts/test, scripts/demo and scripts/bench. Source, don't run.
# Everything here installs only what is missing and cleans up what it starts.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
# What the scripts and tests run, by Debian 12 package (installed without recommends):
#   build-essential (cc, for ring and the -sys crates), pkg-config + libdbus-1-dev (libdbus-sys),
#   ca-certificates (cargo and pip over TLS), python3 + python3-venv (the .venv of moto, boto3 and
#   the AWS CLI v1);
#   keyutils (keyctl), gnome-keyring (gnome-keyring-daemon), dbus + dbus-daemon (dbus-daemon,
#   dbus-run-session), libsecret-tools (secret-tool): the keyring tests (kernel keyring, a private
#   Secret Service); xvfb (Xvfb) and gcr (/usr/libexec/gcr-prompter): a desktop unlock prompt for
#   the no-hang test;
#   iproute2 (ip), nftables (nft), util-linux (unshare, nsenter, setpriv) and curl: the
#   network-namespace tests (veth "containers", the DNAT of scripts/imds-dnat.sh) and the service
#   tests; systemd (systemd-analyze, systemd-socket-activate): unit verification and socket
#   activation; procps (ps), openssl (test certificates for the TLS tests);
#   awscli (the AWS CLI v2, 2.9.x, at /usr/bin/aws) and rclone (Go SDK v1): two more real clients
#   of the container endpoint (tests/it/container_clients.rs).
APT_PACKAGES=(build-essential pkg-config libdbus-1-dev ca-certificates python3 python3-venv
  keyutils gnome-keyring dbus dbus-daemon libsecret-tools xvfb gcr
  iproute2 nftables util-linux curl systemd procps openssl
  awscli rclone)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root (or sudo) to run: $*"; fi
}

# ensure_apt [extra packages...]: installs the Debian packages the scripts use, when missing.
ensure_apt() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# ensure_venv: a Python venv at .venv with the pinned moto, boto3 and AWS CLI.
ensure_venv() {
  local stamp="$VENV/.requirements"
  if [ -x "$VENV/bin/python" ] && cmp -s "$ROOT/scripts/requirements.txt" "$stamp"; then return; fi
  log "creating Python venv with moto, boto3 and the AWS CLI"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/scripts/requirements.txt"
  cp "$ROOT/scripts/requirements.txt" "$stamp"
}

# ensure_sdk_rust_client: builds the AWS SDK for Rust test client (tests/sdk/rust, its own
# workspace and lock file) into target/sdk-rust, where tests/it/support/clients.rs looks for it.
SDK_RUST_MANIFEST="$ROOT/tests/sdk/rust/Cargo.toml"
SDK_RUST_TARGET="$ROOT/target/sdk-rust"
ensure_sdk_rust_client() {
  log "building the Rust SDK test client (tests/sdk/rust)"
  CARGO_TARGET_DIR="$SDK_RUST_TARGET" cargo build --quiet --locked --manifest-path "$SDK_RUST_MANIFEST"
}

# Processes started by these helpers; killed by cleanup (installed as an EXIT trap).
STARTED_PIDS=()
cleanup() {
  local pid
  for pid in "${STARTED_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${STARTED_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  STARTED_PIDS=()
  [ -n "${SCRATCH:-}" ] && rm -rf "$SCRATCH"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/credvend-scripts.XXXXXX")

# start_moto: starts moto on a free loopback port with SigV4 authentication ON, seeded with an
# admin IAM user. Exports MOTO_URL and MOTO_ADMIN ("AKID:SECRET").
start_moto() {
  local out="$SCRATCH/moto.log" i
  "$VENV/bin/moto_server" -H 127.0.0.1 -p 0 >"$out" 2>&1 &
  STARTED_PIDS+=($!)
  for i in $(seq 1 300); do
    MOTO_URL=$(sed -n 's#.*Running on \(http://127\.0\.0\.1:[0-9]*\).*#\1#p' "$out" | head -n1)
    [ -n "$MOTO_URL" ] && break
    kill -0 "${STARTED_PIDS[-1]}" 2>/dev/null || { cat "$out" >&2; die "moto did not start"; }
    sleep 0.1
  done
  [ -n "$MOTO_URL" ] || die "moto did not print its address within 30 s"
  MOTO_ADMIN=$("$VENV/bin/python" "$ROOT/scripts/seed_admin.py" "$MOTO_URL")
  export MOTO_URL MOTO_ADMIN MOTO_LOG="$out"
  log "moto (auth on) at $MOTO_URL"
}
