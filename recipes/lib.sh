# Shell helpers shared by the training scripts of recipes/ and experiments/ (sourced, from the
# repository root). They read the caller's $bin (build/bin/sharedllm) and $py (a Python 3).
# recipe_out CONFIG: the "out" directory of a training config.
recipe_out() {
  /usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['out'])" "$1"
}

# train_stages RECIPE_DIR N [FIRST]: stages FIRST (1)..N of RECIPE_DIR, each skipped once its "out"
# holds a model.
train_stages() {
  local stage config out
  for stage in $(seq "${3:-1}" "$2"); do
    config=$1/stage$stage.json
    out=$(recipe_out "$config")
    [ -f "$out/sharedllm.json" ] || $bin train sft --config "$config"
  done
}

# stopped_stage RECIPE_DIR N INIT: stage N ends on "stop_after" (a checkpoint, no final model); its
# checkpoint becomes the model directory.
stopped_stage() {
  local out
  out=$(recipe_out "$1/stage$2.json")
  [ -f "$out/sharedllm.json" ] && return 0
  # (a resumed run would not stop again: stop_after counts the steps of one invocation)
  [ -f "$out/checkpoint/state.json" ] || $bin train sft --config "$1/stage$2.json"
  /usr/bin/python3 recipes/checkpoint_to_model.py "$out" "$3" "$out"
}

# Unpacks DIR/*.bin.xz into data/shards/ (a shard already there is kept).
unpack_shards() {
  mkdir -p data/shards
  for f in "$1"/*.bin.xz; do
    dst=data/shards/$(basename "${f%.xz}")
    [ -f "$dst" ] || $py -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" "$f" "$dst"
  done
}

# A GPU machine has no runs/: makes run DST from models/mini's base and the sharedllm.* packed in
# SRC, unless DST already holds its weights.
assemble_run() {
  local dst=$1 src=$2
  [ ! -f "$dst/sharedllm.safetensors" ] || return 0
  mkdir -p "$dst"
  cp models/mini/{config.json,model.safetensors,tokenizer.model} "$dst/"
  cp "$src"/* "$dst/"
}
