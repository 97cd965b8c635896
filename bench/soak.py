#!/usr/bin/python3
"""Soak: sustained load on sharedllm-server on loopback. sharedllm-load runs --asks concurrent
streaming Ask threads and --uploads uploaders (each uploads a copy, waits for READY, deletes it)
for --duration seconds over a pass-key document of 32x the window; beside it, one client uploads
copies and cancels them after a random 0-1.5 s. Every 2 s the server's resident memory, threads
and open file descriptors are sampled. At the end the metrics endpoint is scraped. Prints one
JSON object, and exits 1 when a target fails:

  - no errors but RESOURCE_EXHAUSTED (sharedllm-load's count by status code);
  - resident memory after warm-up (the first --warmup seconds) within 5 %: the median of the last
    30 s of load against the median of the 30 s after warm-up, less what the tree store holds on
    purpose at each sample (sharedllm_store_memory_bytes: unflushed writes, the block cache, table
    indexes; bounded by its settings). The raw resident figures are reported beside it;
  - threads and file descriptors bounded: threads and descriptors other than the tree store's
    files back to their warm-up values (+ 8) at the end; the store's open files (one per live
    table or blob file) are reported;
  - every gauge back to zero: sharedllm_requests_running, _requests_waiting, _index_queue_depth.

  python3 bench/soak.py --duration 600 --asks 32 --uploads 4
"""
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from service_util import Server, document, paragraphs, parser, proc_status


def store_memory(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return sum(float(v) for v in re.findall(r"^sharedllm_store_memory_bytes\{[^}]*\} ([0-9.e+-]+)$", text, re.M))


def sample(pid, port, store_dir):
    fds = store_fds = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        fds += 1
        try:
            store_fds += os.readlink(f"/proc/{pid}/fd/{fd}").startswith(store_dir + "/")
        except OSError:
            pass
    return {"t": time.time(), "rss": proc_status(pid, "VmRSS"), "threads": proc_status(pid, "Threads") // 1024,
            "fds": fds, "store_fds": store_fds, "store_memory": store_memory(port)}


def median(values):
    v = sorted(values)
    return v[len(v) // 2] if v else 0


def gauges(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for name in ("sharedllm_requests_running", "sharedllm_requests_waiting", "sharedllm_index_queue_depth"):
        m = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M)
        out[name] = float(m.group(1)) if m else None
    return out


def main():
    p = parser(__doc__)
    p.add_argument("--duration", type=float, default=600)
    p.add_argument("--warmup", type=float, default=60)
    p.add_argument("--asks", type=int, default=32)
    p.add_argument("--uploads", type=int, default=4)
    p.add_argument("--seed", type=int, default=3)
    a = p.parse_args()
    rng = random.Random(a.seed)
    data = tempfile.mkdtemp(prefix="sharedllm-soak.")
    server = Server(a.build, a.model, data, a.threads, a.server_flag)
    try:
        window = json.load(open(os.path.join(a.model, "config.json")))["max_position_embeddings"]
        doc = os.path.join(data, "doc.txt")
        open(doc, "w").write(document(paragraphs(a.seed), int(32 * window * 3.8), 0.5, "52817", rng))
        pid = server.proc.pid
        store_dir = os.path.join(data, "store", "trees")
        measure = lambda: sample(pid, server.metrics_port, store_dir)  # noqa: E731
        samples, stop = [], threading.Event()
        cancels = {"uploaded": 0, "cancelled": 0, "finished_first": 0, "errors": []}

        def sampler():
            while not stop.is_set():
                samples.append(measure())
                stop.wait(2)

        def canceller():
            n = 0
            while not stop.is_set():
                n += 1
                r = server.try_run("upload", doc, "--id", f"cancel-{n}")
                if r.returncode != 0:
                    if "RESOURCE_EXHAUSTED" not in r.stderr:
                        cancels["errors"].append(r.stderr.strip()[:200])
                    stop.wait(0.5)
                    continue
                cancels["uploaded"] += 1
                stop.wait(rng.uniform(0, 1.5))
                r = server.try_run("cancel", f"cancel-{n}")
                if r.returncode == 0:
                    cancels["cancelled"] += 1
                elif "has finished" in r.stderr:
                    cancels["finished_first"] += 1
                    server.try_run("delete", f"cancel-{n}")
                else:
                    cancels["errors"].append(r.stderr.strip()[:200])

        threads = [threading.Thread(target=sampler), threading.Thread(target=canceller)]
        for t in threads:
            t.start()
        load = subprocess.run([os.path.join(a.build, "bin/sharedllm-load"), "--server", server.address,
                               "--document", doc, "--asks", str(a.asks), "--uploads", str(a.uploads),
                               "--duration", str(a.duration), "--server-pid", str(pid), "--json"],
                              capture_output=True, text=True)
        stop.set()
        for t in threads:
            t.join()
        time.sleep(5)  # the last cancelled job and streams wind down
        end = measure()
        g = gauges(server.metrics_port)
        report = json.loads(load.stdout) if load.returncode == 0 else {"error": load.stderr[-2000:]}
        t0, t1 = samples[0]["t"], samples[-1]["t"]
        warm = [x for x in samples if x["t"] - t0 >= a.warmup]
        at_warm = warm[0] if warm else samples[-1]
        first = [x for x in warm if x["t"] - t0 < a.warmup + 30] or [at_warm]
        last = [x for x in samples if x["t"] > t1 - 30]
        net = lambda xs: median(x["rss"] - x["store_memory"] for x in xs)  # noqa: E731
        raw = lambda xs: median(x["rss"] for x in xs)  # noqa: E731
        rss_max = max(x["rss"] for x in warm) if warm else at_warm["rss"]
        result = {
            "duration_s": a.duration, "asks": a.asks, "uploads": a.uploads, "warmup_s": a.warmup,
            "load": report, "cancels": cancels,
            "rss_after_warmup_bytes": raw(first), "rss_last_30s_bytes": raw(last),
            "rss_max_after_warmup_bytes": rss_max,
            "rss_growth_raw": round(raw(last) / raw(first) - 1, 4),
            "store_memory_after_warmup_bytes": median(x["store_memory"] for x in first),
            "store_memory_last_30s_bytes": median(x["store_memory"] for x in last),
            "rss_less_store_after_warmup_bytes": net(first), "rss_less_store_last_30s_bytes": net(last),
            "rss_growth_after_warmup": round(net(last) / net(first) - 1, 4),
            "threads": {"start": samples[0]["threads"], "at_warmup": at_warm["threads"],
                        "max": max(x["threads"] for x in samples), "end": end["threads"]},
            "fds": {"start": samples[0]["fds"], "at_warmup": at_warm["fds"],
                    "max": max(x["fds"] for x in samples), "end": end["fds"],
                    "store_files_at_warmup": at_warm["store_fds"], "store_files_end": end["store_fds"],
                    "other_at_warmup": at_warm["fds"] - at_warm["store_fds"],
                    "other_end": end["fds"] - end["store_fds"]},
            "gauges_at_end": g,
            "samples": [{k: (round(v - t0, 1) if k == "t" else v) for k, v in x.items()} for x in samples],
        }
        # sharedllm-load counts RESOURCE_EXHAUSTED apart from its errors.
        errors = (report.get("ask_errors_total", 0) + report.get("upload_errors_total", 0) +
                  report.get("protocol_anomalies", 0))
        failed = []
        if "error" in report or errors or cancels["errors"]:
            failed.append("errors other than RESOURCE_EXHAUSTED")
        if result["rss_growth_after_warmup"] > 0.05:
            failed.append("resident memory (less the store's caches) grew more than 5 % after warm-up")
        other_end, other_warm = result["fds"]["other_end"], result["fds"]["other_at_warmup"]
        if end["threads"] > at_warm["threads"] + 8 or other_end > other_warm + 8:
            failed.append("threads or file descriptors not back to their warm-up values")
        if any(v != 0 for v in g.values()):
            failed.append("a gauge is not back to zero")
        result["failed"] = failed
        print(json.dumps(result, indent=1))
        return 1 if failed else 0
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
