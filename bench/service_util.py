"""What the service benchmarks and trials share: a sharedllm-server on loopback driven through
sharedllm-cli (bench/long_documents.py, bench/crash_trials.py, bench/soak.py)."""
import argparse
import glob
import os
import random
import re
import signal
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUESTION = "What is the pass key? The pass key is"


def paragraphs(seed):
    out = []
    for path in sorted(glob.glob("/usr/share/common-licenses/*")):
        if os.path.islink(path) or os.path.isdir(path):
            continue
        text = open(path, encoding="utf-8", errors="replace").read()
        out += [" ".join(p.split()) for p in text.split("\n\n") if len(p.split()) > 8]
    random.Random(seed).shuffle(out)
    return out


def document(paras, size_bytes, depth, key, rng):
    out, size = [], 0
    while size < size_bytes:
        p = paras[rng.randrange(len(paras))]
        out.append(p)
        size += len(p) + 2
    out.insert(int(len(out) * depth), f"The pass key is {key}. Remember it. {key} is the pass key.")
    return "\n\n".join(out) + "\n"


def parser(doc):
    """The flags every service harness takes: --model, --build, --threads, --server-flag, --seed."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=os.path.join(ROOT, "models/mini"))
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--threads", type=int, default=0, help="server intra-op threads; 0: all cores")
    p.add_argument("--server-flag", action="append", default=[], help="extra sharedllm-server flag")
    return p


def du(path):
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(dirpath, f))
            except OSError:
                pass
    return total


def proc_status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


class StartFailed(SystemExit):
    """The server exited or did not listen; uncaught, the harness exits with the server's log."""


class Server:
    """sharedllm-server over DATA/store, logging to DATA/server.log; waits until it listens."""

    def __init__(self, build, model, data, threads, extra):
        self.log = open(os.path.join(data, "server.log"), "a")
        cmd = [os.path.join(build, "bin/sharedllm-server"), "--model", model, "--data-dir",
               os.path.join(data, "store"), "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"]
        if threads:
            cmd += ["--threads", str(threads)]
        cmd += extra
        start = self.log_start = os.path.getsize(self.log.name)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        self.address = None
        for _ in range(600):
            text = open(self.log.name).read()[start:]
            m = re.search(r"listening on ([0-9.]+:[0-9]+)", text)
            if m:
                self.address = m.group(1)
                break
            if self.proc.poll() is not None:
                raise StartFailed("server exited:\n" + text)
            time.sleep(0.1)
        if not self.address:
            self.proc.kill()
            raise StartFailed("server did not start")
        m = re.search(r"metrics on port (\d+)", open(self.log.name).read()[start:])
        self.metrics_port = int(m.group(1)) if m else None
        self.cli = [os.path.join(build, "bin/sharedllm-cli"), "--server", self.address]

    def output(self):
        """What this server process has logged so far."""
        with open(self.log.name) as f:
            return f.read()[self.log_start:]

    def try_run(self, *args):
        """sharedllm-cli ARGS: the completed process, whatever its exit code."""
        return subprocess.run(self.cli + list(args), capture_output=True, text=True)

    def run(self, *args):
        r = self.try_run(*args)
        if r.returncode != 0:
            raise RuntimeError(f"sharedllm-cli {' '.join(args[:3])}: {r.stderr.strip()}")
        return r

    def reset_peak(self):
        """Resets the server's peak resident set (VmHWM) to the current one; returns that."""
        with open(f"/proc/{self.proc.pid}/clear_refs", "w") as f:
            f.write("5")
        return proc_status(self.proc.pid, "VmRSS")

    def peak(self):
        return proc_status(self.proc.pid, "VmHWM")

    def ask(self, target):
        before = self.reset_peak()
        r = self.run("ask", *target, "--question", QUESTION, "--max-tokens", "8")
        peak = self.peak()
        t = re.search(r"queue=([0-9.]+)s retrieval=([0-9.]+)s kv_load=([0-9.]+)s ttft=([0-9.]+)s "
                      r"decode=([0-9.]+)s total=([0-9.]+)s", r.stderr)
        reading = re.search(r"read (\d+) of (\d+) chunks \((\w+)", r.stderr)
        queue, retrieval, kv, prefill, _, total = (float(x) for x in t.groups())
        return {"answer": r.stdout.strip(), "ttft_s": queue + retrieval + kv + prefill,
                "retrieval_s": retrieval, "kv_load_s": kv, "prefill_s": prefill, "total_s": total,
                "chunks_read": int(reading.group(1)), "chunks": int(reading.group(2)),
                "selection": reading.group(3), "rss_before_bytes": before, "peak_rss_bytes": peak}

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)

    def kill(self):
        """SIGKILL: no drain, no flush, no destructor runs."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=60)
