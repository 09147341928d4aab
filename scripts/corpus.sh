#!/usr/bin/env bash
# Build the development corpus (see docs/corpus.md): install the allowed Debian
# packages listed in ../shared/corpus/dev-packages.txt, then scan, render, de-duplicate,
# tag and split them with scripts/corpus.py.
#
# Usage: bash scripts/corpus.sh [--quick] [--out DIR] [extra corpus.py args]
#   --quick   a ~0.7 GB subset of the packages and 12 music21 pieces (fast, still diverse)
#   --out     output folder (default: corpus/ in the repo, git-ignored)
# Idempotent and resumable: a second run only re-checks and fills in what is missing.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"

LIST="$REPO/../shared/corpus/dev-packages.txt"
OUT="$REPO/corpus"
QUICK=0
EXTRA=()
while (($#)); do
  case "$1" in
    --quick) QUICK=1; shift ;;
    --out) OUT="${2:?--out needs a folder}"; shift 2 ;;
    --out=*) OUT="${1#--out=}"; shift ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) EXTRA+=("$1"); shift ;;
  esac
done

if [ ! -r "$LIST" ]; then
  echo "corpus: package list not found: $LIST (it lives in the shared folder next to the repo)" >&2
  exit 1
fi
mapfile -t ALLOWED < <(grep -v '^#' "$LIST" | cut -d' ' -f1 | sed '/^$/d')
if ((${#ALLOWED[@]} == 0)); then
  echo "corpus: no packages in $LIST" >&2
  exit 1
fi

# A subset that exercises every code path (plain OGG with full tags, MP3, a .pk3 zip,
# byte-identical copies, MIDI, ambience, speech) for about 0.7 GB of downloads.
QUICK_PACKAGES=(
  singularity-music supertux-data hedgewars-data nexuiz-music drascula-music asc-music
  openttd-openmsx fluid-soundfont-gm espeak-ng btanks-data lincity-ng-data
)
if ((QUICK)); then
  PACKAGES=()
  for pkg in "${QUICK_PACKAGES[@]}"; do
    if printf '%s\n' "${ALLOWED[@]}" | grep -qx "$pkg"; then
      PACKAGES+=("$pkg")
    else
      echo "corpus: quick package $pkg is not in $LIST; skipped" >&2
    fi
  done
  M21=(--music21-pieces 12)
else
  PACKAGES=("${ALLOWED[@]}")
  M21=()  # all of corpus.py's MUSIC21_PIECES
fi

# Tools, not music: the MIDI renderer, `timeout`, and the tracker and LMMS renderers.
TOOLS=(fluidsynth coreutils)
if ! ((QUICK)); then
  TOOLS+=(openmpt123)
  # lmms renders the lmms-common demo songs; its Qt dependencies are only worth it in full.
  printf '%s\n' "${PACKAGES[@]}" | grep -qx lmms-common && TOOLS+=(lmms)
fi

need=()
for pkg in "${PACKAGES[@]}" "${TOOLS[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "corpus: installing ${#need[@]} packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

PY="$REPO/.venv/bin/python"
[ -x "$PY" ] || PY="${PYTHON:-python3}"
if ! "$PY" -c 'import music21' 2>/dev/null; then
  echo "corpus: installing music21 into the virtualenv (its score corpus is allowed)"
  "$PY" -m pip install -q "music21>=9.1"
fi

mkdir -p "$OUT"
printf '%s\n' "${PACKAGES[@]}" > "$OUT/packages.txt"
exec "$PY" "$REPO/scripts/corpus.py" --out "$OUT" --packages-file "$OUT/packages.txt" \
  --allowed-file "$LIST" "${M21[@]}" "${EXTRA[@]}"
