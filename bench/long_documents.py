#!/usr/bin/python3
"""Documents of any length through the service, as a user meets them: starts sharedllm-server on a
model, uploads pass-key documents of growing length built from Debian's license texts (never the
evaluation's filler), asks each for its key through sharedllm-cli, and prints one JSON object:
per document its length, time to READY, the data directory's growth (measured after a restart: at rest), and per question the answer,
whether it is the key, the chunks read, TTFT and the server's peak resident memory during the ask
(VmHWM, reset before each ask through /proc/PID/clear_refs), and its peak while it indexed the
document (reset before the upload). With --collection N it also indexes
a collection of N short documents, one holding the key, and asks the collection.

Every document is indexed first; then the server restarts (so that no tree is still in a
memtable) and each question is asked --repeats times; a question's figures are the medians. TTFT
is what a client waits for its first token: queue + retrieval + key/value load + prefill.

  python3 bench/long_documents.py --model models/mini --lengths 32,128,512 --depths 0.1,0.5,0.9
"""
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from service_util import QUESTION, Server, document, du, paragraphs, parser


def main():
    p = parser(__doc__)
    p.add_argument("--lengths", default="32,128,512", help="multiples of the window W, comma-separated")
    p.add_argument("--depths", default="0.1,0.5,0.9")
    p.add_argument("--bytes", default="", help="extra documents of these sizes in bytes (e.g. 1000000)")
    p.add_argument("--collection", type=int, default=0, help="also a collection of N short documents")
    p.add_argument("--repeats", type=int, default=3, help="asks per question (medians)")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--keep", action="store_true", help="keep the data directory")
    a = p.parse_args()

    config = json.load(open(os.path.join(a.model, "config.json")))
    window = config["max_position_embeddings"]
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    # What a prefix cache keeps per token: keys and values of every layer in bfloat16.
    full_cache = config["num_hidden_layers"] * 2 * config["num_key_value_heads"] * head_dim * 2
    bytes_per_token = 3.8  # the license texts under models/mini's tokenizer (measured: 3.6-3.9)
    paras = paragraphs(a.seed)
    rng = random.Random(a.seed)
    data = tempfile.mkdtemp(prefix="sharedllm-long.")
    server = Server(a.build, a.model, data, a.threads, a.server_flag)
    # The stored key/value type: the flag's, else the server's default (from its --help).
    kv_dtype = a.server_flag[a.server_flag.index("--kv-dtype") + 1] if "--kv-dtype" in a.server_flag else \
        re.search(r"--kv-dtype .*?\(default: (\w+)\)", subprocess.run(
            [os.path.join(a.build, "bin/sharedllm-server"), "--help"], capture_output=True,
            text=True).stdout).group(1)
    results = {"model": a.model, "window": window, "question": QUESTION, "repeats": a.repeats,
               "server_flags": a.server_flag, "kv_dtype": kv_dtype,
               "full_kv_cache_bytes_per_token": full_cache,
               "documents": []}
    asks = []  # (row, target)
    try:
        plan = [(float(x), float(d)) for x in a.lengths.split(",") if x for d in a.depths.split(",")]
        plan += [(int(b) / bytes_per_token / window, 0.5) for b in a.bytes.split(",") if b]
        for n, (multiple, depth) in enumerate(plan):
            key = str(rng.randrange(10000, 99999))
            text = document(paras, int(multiple * window * bytes_per_token), depth, key, rng)
            path = os.path.join(data, f"doc{n}.txt")
            open(path, "w").write(text)
            before = du(os.path.join(data, "store"))
            index_rss_before = server.reset_peak()
            t0 = time.time()
            server.run("upload", path, "--id", f"doc{n}", "--wait")
            ready_s = time.time() - t0
            index_peak = server.peak()
            # What the document takes at rest: after a restart, whose recovery flushes the
            # write-ahead log into compressed tables (a log holds its batches uncompressed).
            server.stop()
            server = Server(a.build, a.model, data, a.threads, a.server_flag)
            info = server.run("get", f"doc{n}").stdout
            tokens = int(re.search(r"num_tokens:\s+(\d+)", info).group(1))
            row = {"multiple": round(tokens / window, 1), "depth": depth, "bytes": len(text.encode()),
                   "tokens": tokens, "ready_s": round(ready_s, 2),
                   "stored_bytes": du(os.path.join(data, "store")) - before, "key": key,
                   "index_rss_before_bytes": index_rss_before, "index_peak_rss_bytes": index_peak}
            results["documents"].append(row)
            asks.append((row, ["--id", f"doc{n}"]))
            print(json.dumps(row), file=sys.stderr, flush=True)
        if a.collection:
            key = str(rng.randrange(10000, 99999))
            holder = rng.randrange(a.collection)
            t0 = time.time()
            for i in range(a.collection):
                text = document(paras, 600, 0.5, key, rng) if i == holder else \
                    "\n\n".join(paras[rng.randrange(len(paras))] for _ in range(2)) + "\n"
                path = os.path.join(data, "c.txt")
                open(path, "w").write(text)
                server.run("upload", path, "--id", f"c{i}", "--collection", "many", "--wait")
            row = {"collection": a.collection, "ready_s": round(time.time() - t0, 2), "key": key,
                   "holder": f"c{holder}"}
            results["collection"] = row
            asks.append((row, ["--collection", "many"]))
        results["store_bytes"] = du(os.path.join(data, "store"))
        server.stop()
        server = Server(a.build, a.model, data, a.threads, a.server_flag)
        for row, target in asks:
            runs = [server.ask(target) for _ in range(a.repeats)]
            for k in runs[0]:
                values = [r[k] for r in runs]
                row[k] = statistics.median(values) if isinstance(values[0], (int, float)) else values[0]
            row["answers"] = [r["answer"] for r in runs]
            row["correct"] = all(x.startswith(row["key"]) for x in row["answers"])
            print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        server.stop()
        if not a.keep:
            shutil.rmtree(data, ignore_errors=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
