#!/usr/bin/env bash
# One-shot set-up on a fresh Debian machine: system packages, a virtualenv in
# .venv, the CPU torch wheel and Synesthete itself (editable, with [dev], [augment] and
# [scale]: Milvus Lite for the vector-store tests, Ray Data for `index build --ray`).
# Idempotent: a second run only re-checks. Usage: bash scripts/setup.sh [--train]
# --train also builds .venv-train with the [train] extra (torch 2.11 + torchaudio
# 2.11 from PyPI, about 4.7 GB): what scripts/train_encoder.py and
# scripts/export_encoder.py run in. The runtime (.venv) never needs it.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  libportaudio2            # sounddevice's PortAudio
  pulseaudio pulseaudio-utils  # user-mode sound server + paplay/pactl for the capture test
  libasound2-plugins       # ALSA's "pulse" PCM: PortAudio (ALSA) reaches PulseAudio through it
  alsa-utils               # arecord/aplay, handy to debug the capture path
  tmux                     # end-to-end test of the terminal view
  chromium                 # headless browser for the overlay test (driven by playwright)
  fonts-dejavu-core        # a font for chromium's screenshots
  ffmpeg                   # feeds the Icecast and HLS stream tests (ffmpeg -re), writes m4a/video fixtures
  icecast2                 # a real Icecast server for the network-stream tests
)

need_apt=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=".venv/.synesthete-setup"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/pip install -q --upgrade pip setuptools wheel
  # The CPU wheel first: with torch 2.13.0 present, ">=2.11" pulls no CUDA build.
  .venv/bin/pip install -q "torch==2.13.0"
  .venv/bin/pip install -q -e ".[dev,augment,scale]"
  # The sonic map's UMAP and matplotlib.
  .venv/bin/pip install -q -e ".[map]"
  echo "$want" > "$stamp"
fi
echo "setup: ready (.venv)"

if [ "${1:-}" = "--train" ]; then
  [ -x .venv-train/bin/python ] || "$PY" -m venv .venv-train
  stamp=".venv-train/.synesthete-setup"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv-train/bin/pip install -q --upgrade pip setuptools wheel
    # No wheel cache: the CUDA wheels would sit on disk twice (cache + venv),
    # about 3 GB more at the peak, and a CI machine's disk can be small.
    .venv-train/bin/pip install -q --no-cache-dir -e ".[train]"
    echo "$want" > "$stamp"
  fi
  echo "setup: ready (.venv-train)"
fi
