#!/usr/bin/env bash
# The GPU machine's checks, in one run (docs/PERFORMANCE.md, "On the GPU", says what they gave):
#
#   OUT=DIR scripts/gpu_check.sh
#
# 1. golden: Hugging Face transformers builds and runs tiny random checkpoints
#    (tests/reference/hf_golden.py) -> DIR/hf-fixtures.tar.gz, unpacked into tests/fixtures/hf/
#    on the CPU machine, where tests/llm/hf_golden_test.cpp checks the C++ model against them;
#    where tests/fixtures/hf/ exists, the fresh goldens must equal the committed ones.
# 2. build: the sharedllm tool against the machine's CUDA libtorch (recipes/train_mini_gpu.sh build;
#    needs data/gpu/include/nlohmann where the machine has no nlohmann-json).
# 3. parity: `sharedllm score --device cuda` (and cpu) on each committed golden checkpoint
#    against transformers' float64 NLL -> DIR/gpu-parity.json.
# 4. serve: `sharedllm ask --device cuda` with models/mini over the demo document, and the same
#    on the CPU of that machine -> DIR/gpu-ask.txt.
# 5. efficiency: `sharedllm eval efficiency --device cuda` on models/mini -> DIR/efficiency-mini-cuda.json.
# Every step runs even when an earlier one failed; the exit status counts the failures.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:?set OUT to the output folder}
py=${PYTHON:-python3}
bin=build-cuda/bin/sharedllm
failed=0
step() { echo "=== $1 ($(date -u +%H:%M:%S))"; }

step golden
rm -rf /tmp/hf && timeout 240 $py tests/reference/hf_golden.py --out /tmp/hf || failed=$((failed + 1))
tar -C /tmp/hf -czf "$out/hf-fixtures.tar.gz" . || failed=$((failed + 1))
if [ -d tests/fixtures/hf ]; then
  $py - /tmp/hf tests/fixtures/hf <<'EOF' || failed=$((failed + 1))
import json, os, sys
fresh, committed = sys.argv[1:]
bad = 0
for name in sorted(os.listdir(committed)):
    a = json.load(open(os.path.join(fresh, name, "golden.json")))
    b = json.load(open(os.path.join(committed, name, "golden.json")))
    same_w = open(os.path.join(fresh, name, "model.safetensors"), "rb").read() == \
        open(os.path.join(committed, name, "model.safetensors"), "rb").read()
    diff = max(abs(x - y) for x, y in zip(a["nll"], b["nll"]))
    ok = same_w and a["token_ids"] == b["token_ids"] and a["greedy"] == b["greedy"] and diff < 1e-9
    bad += not ok
    print(f"reproduced {name}: weights {'same' if same_w else 'DIFFER'}, max nll diff {diff:.1e}")
sys.exit(1 if bad else 0)
EOF
fi

step build
timeout 300 recipes/train_mini_gpu.sh build >"$out/build.log" 2>&1 || { failed=$((failed + 1)); tail -30 "$out/build.log"; }

step parity
fixtures=tests/fixtures/hf; [ -d $fixtures ] || fixtures=/tmp/hf
$py - "$bin" "$fixtures" "$out/gpu-parity.json" <<'EOF' || failed=$((failed + 1))
import json, os, subprocess, sys
binary, root, out = sys.argv[1:]
rows, bad = [], 0
for name in sorted(os.listdir(root)):
    d = os.path.join(root, name)
    golden = json.load(open(os.path.join(d, "golden.json")))
    ids = ",".join(map(str, golden["token_ids"]))
    row = {"case": name}
    for device in ("cuda", "cpu"):
        p = subprocess.run([binary, "score", "--model", d, "--token-ids", ids, "--json",
                            "--device", device, "--threads", "4"], capture_output=True, text=True)
        if p.returncode != 0:
            row[device] = {"error": p.stderr.strip()[-500:]}
            bad += 1
            continue
        got = json.loads(p.stdout)["nll"]
        diff = max(abs(a - b) for a, b in zip(got, golden["nll"]))
        row[device] = {"max_abs_diff": diff, "n": len(got), "ok": len(got) == len(golden["nll"]) and diff < 1e-4}
        bad += not row[device]["ok"]
    print(json.dumps(row))
    rows.append(row)
json.dump({"rows": rows, "failed": bad}, open(out, "w"), indent=1)
sys.exit(1 if bad else 0)
EOF

step serve
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  for device in cuda cpu; do
    echo "--- ask --device $device"
    timeout 120 $bin ask --model models/mini --document docs/examples/passkey-document.txt \
      --question "What is the pass key? The pass key is" --max-tokens 8 --device $device \
      --threads 4 || failed=$((failed + 1))
    echo
    timeout 120 $bin ask --model models/mini --document docs/examples/passkey-document.txt \
      --question "The GNU General Public License is" --max-tokens 24 --device $device \
      --threads 4 || failed=$((failed + 1))
    echo
  done
} >"$out/gpu-ask.txt" 2>&1
cat "$out/gpu-ask.txt"

step efficiency
timeout 240 $bin eval efficiency --model models/mini --lengths 1,2,4,8,16,32 --runs 3 --device cuda \
  --out "$out/efficiency-mini-cuda.json" >"$out/efficiency.log" 2>&1 || { failed=$((failed + 1)); tail -20 "$out/efficiency.log"; }

step "done: $failed failed"
exit $failed
