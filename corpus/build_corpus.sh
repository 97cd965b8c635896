#!/usr/bin/env bash
# Builds the training and held-out text corpus (data/corpus/) from pinned Debian packages.
# See docs/design/data.md for what goes where and why.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCK="$ROOT/corpus/packages.lock"
OUT="$ROOT/data/corpus"
CACHE="$ROOT/data/cache"
MAX_SOURCE_MB=32
OFFLINE=0
UPDATE_LOCK=0
PYTHON=/usr/bin/python3

usage() {
  cat <<EOF
Usage: corpus/build_corpus.sh [options]

Downloads the Debian packages pinned in corpus/packages.lock (apt-get download name=version;
nothing is installed), checks each .deb's sha256 against the lock, unpacks them with dpkg -x and
writes the cleaned corpus:

  data/corpus/train/<source>.txt           training text; every document ends with a line that
                                           holds only the ASCII record separator 0x1E
  data/corpus/adapt/<source>.txt           text only SharedLLM stages train on (Coq proofs, Django code;
                                           the tokenizer and the base model never see it), same format
  data/corpus/heldout/{books,code,proofs}/<name>.txt
                                           held-out evaluation documents, one per file
  data/corpus/documents.tsv                every document and where it came from
  data/corpus/MANIFEST.json                packages (version, sha256), per-source counts, and the
                                           bytes and sha256 of every output file

Re-running gives byte-identical output.

Options:
  --out DIR            output directory (default: data/corpus)
  --cache DIR          .deb cache and unpacked trees (default: data/cache)
  --max-source-mb N    cap on each training source's cleaned text in MiB; a source over the cap
                       keeps a deterministic subset of its documents (default: $MAX_SOURCE_MB; 0 = no cap)
  --offline            use only .debs already in the cache (no apt-get)
  --update-lock        after editing versions in the lock, record the sha256 that apt reports for
                       them (then rerun without this flag)
  -h, --help           this help

Needs: apt-get/apt-cache (run 'apt-get update' once first), dpkg-deb, $PYTHON.
EOF
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) OUT="$(realpath -m "$2")"; shift 2 ;;
    --cache) CACHE="$(realpath -m "$2")"; shift 2 ;;
    --max-source-mb) MAX_SOURCE_MB="$2"; shift 2 ;;
    --offline) OFFLINE=1; shift ;;
    --update-lock) UPDATE_LOCK=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build_corpus: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

log() { echo "[build_corpus] $*"; }
die() { echo "build_corpus: $*" >&2; exit 1; }

for tool in dpkg-deb sha256sum "$PYTHON"; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
[[ $OFFLINE == 1 ]] || command -v apt-get >/dev/null || die "apt-get not found (use --offline with a filled cache)"

# name version sha256, one package a line.
mapfile -t PACKAGES < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$LOCK")

if [[ $UPDATE_LOCK == 1 ]]; then
  tmp="$(mktemp)"
  grep '^#' "$LOCK" > "$tmp" || true
  for line in "${PACKAGES[@]}"; do
    read -r name version _ <<<"$line"
    sha="$(apt-cache show "$name=$version" 2>/dev/null | awk '/^SHA256:/ {print $2; exit}')"
    [[ -n $sha ]] || die "$name=$version is not known to apt (apt-get update? check apt-cache madison $name)"
    printf '%-22s %-20s %s\n' "$name" "$version" "$sha" >> "$tmp"
  done
  mv "$tmp" "$LOCK"
  log "updated $LOCK"
  exit 0
fi

SECONDS=0
mkdir -p "$CACHE/debs" "$CACHE/extract" "$OUT"

# deb_path NAME VERSION: the cached .deb of NAME=VERSION, or nothing.
deb_path() {
  local v="${2//:/%3a}"
  compgen -G "$CACHE/debs/${1}_${v}_*.deb" | head -n1 || true
}

log "1/3 fetching ${#PACKAGES[@]} packages into $CACHE/debs"
for line in "${PACKAGES[@]}"; do
  read -r name version sha <<<"$line"
  deb="$(deb_path "$name" "$version")"
  if [[ -n $deb ]] && [[ "$(sha256sum "$deb" | cut -d' ' -f1)" == "$sha" ]]; then
    log "  $name=$version cached"
    continue
  fi
  [[ $OFFLINE == 0 ]] || die "$name=$version is not in the cache (and --offline was given)"
  apt-cache madison "$name" | awk -F'|' '{gsub(/ /, "", $2); print $2}' | grep -qxF "$version" \
    || die "$name=$version is not available from apt (run apt-get update; 'apt-cache madison $name' lists the versions; then edit $LOCK and run --update-lock)"
  log "  $name=$version downloading"
  (cd "$CACHE/debs" && apt-get download -q -o APT::Sandbox::User=root "$name=$version" >/dev/null)
  deb="$(deb_path "$name" "$version")"
  [[ -n $deb ]] || die "apt-get download $name=$version left no .deb"
  got="$(sha256sum "$deb" | cut -d' ' -f1)"
  [[ $got == "$sha" ]] || die "$deb: sha256 $got does not match the lock ($sha)"
done
log "  fetched in ${SECONDS}s"

t=$SECONDS
log "2/3 unpacking with dpkg -x into $CACHE/extract"
for line in "${PACKAGES[@]}"; do
  read -r name version sha <<<"$line"
  dir="$CACHE/extract/$name"
  if [[ -f $dir.sha256 ]] && [[ "$(cat "$dir.sha256")" == "$sha" ]] && [[ -d $dir ]]; then
    continue
  fi
  rm -rf "$dir" "$dir.sha256"
  dpkg-deb -x "$(deb_path "$name" "$version")" "$dir"
  echo "$sha" > "$dir.sha256"
  log "  unpacked $name"
done
log "  unpacked in $((SECONDS - t))s"

t=$SECONDS
log "3/3 extracting, cleaning and writing $OUT"
"$PYTHON" "$ROOT/corpus/build_corpus.py" \
  --extract "$CACHE/extract" --lock "$LOCK" --debs "$CACHE/debs" --out "$OUT" \
  --max-source-mb "$MAX_SOURCE_MB"
log "  built in $((SECONDS - t))s"
log "done in ${SECONDS}s: $OUT/MANIFEST.json"
