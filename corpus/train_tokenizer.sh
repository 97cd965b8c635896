#!/usr/bin/env bash
# Trains the project's sentencepiece BPE tokenizer on a deterministic sample of data/corpus/train.
# See docs/design/data.md ("Tokenizer").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CORPUS="$ROOT/data/corpus"
OUT="$ROOT/data/tokenizer"
VOCAB="${VOCAB:-8192}"
SAMPLE_MB=40
PYTHON=/usr/bin/python3

usage() {
  cat <<EOF
Usage: [VOCAB=N] corpus/train_tokenizer.sh [options]

Samples about --sample-mb MiB of whole documents from data/corpus/train (every source the same
fraction of its bytes, chosen by hash), then runs spm_train (BPE, byte fallback, identity
normalisation, digits split, no dummy prefix, whitespace kept) and writes

  <out>/tokenizer.model   the model (ship it next to the weights as tokenizer.model)
  <out>/tokenizer.vocab   pieces and scores, for reading
  <out>/sample.txt        the training sample
  <out>/tokenizer.json    options, sha256 of sample and model, spm_train version

The same corpus and options give a byte-identical tokenizer.model.

Options:
  --vocab N        vocabulary size (default: \$VOCAB or 8192)
  --sample-mb N    size of the training sample in MiB (default: $SAMPLE_MB)
  --corpus DIR     corpus directory (default: data/corpus)
  --out DIR        output directory (default: data/tokenizer)
  -h, --help       this help

Needs spm_train (Debian package sentencepiece; scripts/setup.sh installs it).
EOF
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --vocab) VOCAB="$2"; shift 2 ;;
    --sample-mb) SAMPLE_MB="$2"; shift 2 ;;
    --corpus) CORPUS="$(realpath -m "$2")"; shift 2 ;;
    --out) OUT="$(realpath -m "$2")"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "train_tokenizer: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

command -v spm_train >/dev/null || { echo "train_tokenizer: spm_train not found (apt-get install sentencepiece)" >&2; exit 1; }
[[ -d $CORPUS/train ]] || { echo "train_tokenizer: no $CORPUS/train (run corpus/build_corpus.sh)" >&2; exit 1; }

SECONDS=0
mkdir -p "$OUT"
echo "[train_tokenizer] sampling ${SAMPLE_MB} MiB of $CORPUS/train"
"$PYTHON" "$ROOT/corpus/sample_text.py" --corpus "$CORPUS" --mb "$SAMPLE_MB" --out "$OUT/sample.txt"

# --add_dummy_prefix=false: a document is encoded as one string, so only its first line would get
#   the dummy "▁"; without it, training (line by line) and use (whole documents) segment every
#   line the same way, and line-by-line spm_encode equals whole-document encoding (shards).
# --allow_whitespace_only_pieces: runs of spaces (code indentation) become single pieces.
# --max_sentence_length: keep long lines (code, tables) in training instead of skipping them.
# Relative --input/--model_prefix: spm_train records them in the model, so the bytes stay stable.
OPTIONS=(
  --model_type=bpe --byte_fallback=true --normalization_rule_name=identity --split_digits=true
  --character_coverage=0.9995 --vocab_size="$VOCAB" --bos_id=1 --eos_id=2 --unk_id=0 --pad_id=-1
  --num_threads=2 --remove_extra_whitespaces=false --add_dummy_prefix=false
  --allow_whitespace_only_pieces=true --max_sentence_length=16384
)
echo "[train_tokenizer] spm_train vocab=$VOCAB"
(cd "$OUT" && spm_train --input=sample.txt --model_prefix=tokenizer "${OPTIONS[@]}" > spm_train.log 2>&1) \
  || { tail -20 "$OUT/spm_train.log" >&2; exit 1; }

"$PYTHON" - "$OUT" "$VOCAB" "$SAMPLE_MB" "${OPTIONS[@]}" <<'EOF'
import hashlib, json, subprocess, sys
out, vocab, sample_mb, options = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]
sha = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()
version = subprocess.run(["spm_train", "--version"], capture_output=True, text=True)
info = {"vocab_size": vocab, "sample_mb": sample_mb, "spm_train_options": options,
        "spm_train_version": (version.stdout + version.stderr).strip(),
        "sample_sha256": sha(out + "/sample.txt"), "model_sha256": sha(out + "/tokenizer.model")}
with open(out + "/tokenizer.json", "w") as f:
    json.dump(info, f, indent=1, sort_keys=True)
    f.write("\n")
print("[train_tokenizer] %s/tokenizer.model sha256 %s" % (out, info["model_sha256"]))
EOF
echo "[train_tokenizer] done in ${SECONDS}s"
