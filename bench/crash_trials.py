#!/usr/bin/python3
"""Crash trials, in the manner of RocksDB's crash test: random uploads, cancels, deletes and asks
against sharedllm-server on loopback, the server killed with SIGKILL at a random moment, restarted
on the same data directory, and checked against this harness's own log of what the server
acknowledged before the kill:

  - an upload acknowledged (QUEUED, or READY with --wait) ends READY after the restart, and
    answers an Ask;
  - a cancel or a delete acknowledged stays gone: never READY again (NOT_FOUND or CANCELLED);
  - nothing stays QUEUED or indexing without a live job: every document reaches a final state
    within --settle seconds of the restart;
  - no spooled upload (*.tmp) is left behind once nothing is in flight.

An operation still in flight when the kill came may have any outcome but the last two rules. The
data directory carries over from trial to trial, as the crash test's database does; the last
check runs after a final clean restart. Prints one JSON object: trials, operations acknowledged
per kind, violations (each with its trial and document), pass keys answered.

With --faults the server runs over a storage layer with faults (store/fault_file_system.h): every
kill is a power loss (at the restart, whatever was not synced is dropped and names not made
durable are undone), and each trial's load runs, at random, with no other fault, a disk that
fills up after 64 KB-4 MB of writes, or 1-20 transient I/O errors (one operation in 50-500). The
checks run on a restart without injected errors. Under faults an acknowledged upload may also end
FAILED, if its error is the injected one; an upload followed to READY must stay READY; the server
must not exit by itself, unless it reports a storage failure RocksDB cannot resume from and exits 1
after draining (the restart recovers); a start refused because of an injected error is counted,
not a violation.

  python3 bench/crash_trials.py --trials 100 --seed 1
  python3 bench/crash_trials.py --trials 100 --seed 2 --faults
"""
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time

from service_util import QUESTION, Server, StartFailed, parser

FINAL = {"READY", "FAILED", "CANCELLED"}
WORDS = ("the software is provided as is without warranty of any kind express or implied "
         "including but not limited to merchantability fitness for a particular purpose").split()


def text_with_key(rng, key, words):
    body = [rng.choice(WORDS) for _ in range(words)]
    body.insert(rng.randrange(len(body)), f"The pass key is {key}. Remember it. {key} is the pass key.")
    return " ".join(body) + "\n"


class Log:
    """What the server acknowledged, per document: queued | ready | cancelled | deleted | unknown."""

    def __init__(self):
        self.lock = threading.Lock()
        self.state, self.key = {}, {}
        self.acks = {"upload": 0, "upload_wait": 0, "cancel": 0, "delete": 0, "ask": 0}

    def set(self, doc, state, kind=None):
        with self.lock:
            self.state[doc] = state
            if kind:
                self.acks[kind] += 1

    def pick(self, rng, states):
        with self.lock:
            docs = sorted(d for d, s in self.state.items() if s in states)
        return rng.choice(docs) if docs else None


def operate(server, log, rng, data, stop, counter, key_rng):
    """One client: random operations until `stop`; an operation the kill cut off is 'unknown'."""
    while not stop.is_set():
        op = rng.random()
        try:
            if op < 0.45:
                with log.lock:
                    counter[0] += 1
                    doc = f"d{counter[0]}"
                key = str(key_rng.randrange(10000, 99999))
                path = os.path.join(data, f"{doc}.txt")
                with open(path, "w") as f:
                    f.write(text_with_key(rng, key, rng.randrange(300, 6000)))
                wait = rng.random() < 0.3
                with log.lock:
                    log.key[doc] = key
                log.set(doc, "unknown")
                r = server.try_run("upload", path, "--id", doc, *(["--wait"] if wait else []))
                if r.returncode == 0 and not stop.is_set():
                    log.set(doc, "ready" if wait else "queued", "upload_wait" if wait else "upload")
                elif not stop.is_set():
                    log.set(doc, "refused")
            elif op < 0.60:
                doc = log.pick(rng, {"queued"})
                if doc:
                    log.set(doc, "unknown")
                    r = server.try_run("cancel", doc)
                    if stop.is_set():
                        continue
                    if r.returncode == 0:
                        log.set(doc, "cancelled", "cancel")
                    elif "has finished (READY)" in r.stderr:
                        log.set(doc, "ready")
                    else:
                        log.set(doc, "queued")
            elif op < 0.75:
                doc = log.pick(rng, {"queued", "ready", "cancelled"})
                if doc:
                    log.set(doc, "unknown")
                    r = server.try_run("delete", doc)
                    if r.returncode == 0 and not stop.is_set():
                        log.set(doc, "deleted", "delete")
            else:
                doc = log.pick(rng, {"ready"})
                if doc:
                    r = server.try_run("ask", "--id", doc, "--question", QUESTION, "--max-tokens", "8")
                    if r.returncode == 0 and not stop.is_set():
                        log.acks["ask"] += 1
        except OSError:
            pass


def listing(server):
    r = server.try_run("list", "--page-size", "1000")
    if r.returncode != 0:
        raise RuntimeError("list: " + r.stderr.strip())
    out = {}
    for line in r.stdout.splitlines()[1:]:
        cols = line.split("\t")
        if len(cols) >= 3:
            out[cols[0]] = cols[2]
    return out


def verify(server, log, data_dir, trial, settle, rng, violations, answers, faults=None):
    """Checks the store against the log after a restart; returns the documents' states."""
    deadline = time.time() + settle
    while True:
        states = listing(server)
        busy = {d: s for d, s in states.items() if s not in FINAL}
        if not busy or time.time() > deadline:
            break
        time.sleep(0.2)
    for d, s in busy.items():
        violations.append({"trial": trial, "document": d, "rule": f"still {s} {settle} s after the restart"})
    ready = []
    for d, want in sorted(log.state.items()):
        got = states.get(d, "NOT_FOUND")
        if want in ("queued", "ready"):
            if got != "READY":
                detail = server.try_run("get", d).stdout.strip().replace("\n", "; ")
                if faults is not None and want == "queued" and got == "FAILED" and "injected" in detail:
                    faults["failed_by_fault"] += 1
                    log.set(d, "final")
                    continue
                violations.append({"trial": trial, "document": d, "rule": f"acknowledged {want}, now {got}",
                                   "detail": detail[:300]})
            else:
                ready.append(d)
                log.set(d, "ready")
        elif want in ("cancelled", "deleted"):
            if got not in ("NOT_FOUND", "CANCELLED"):
                violations.append({"trial": trial, "document": d, "rule": f"{want}, now {got}"})
        elif got == "READY":
            log.set(d, "ready")  # an upload the kill cut off that made it
            ready.append(d)
        elif got == "NOT_FOUND":
            log.set(d, "gone")
        else:
            log.set(d, "final")
    for d in rng.sample(ready, min(2, len(ready))):
        r = server.try_run("ask", "--id", d, "--question", QUESTION, "--max-tokens", "8")
        if r.returncode != 0:
            violations.append({"trial": trial, "document": d, "rule": "READY but Ask failed: " + r.stderr.strip()[:200]})
        else:
            answers["asked"] += 1
            answers["key_found"] += int(log.key.get(d, "?") in r.stdout)
    tmp = [f for _, _, files in os.walk(data_dir) for f in files if f.endswith(".tmp")]
    if tmp and not busy:
        violations.append({"trial": trial, "rule": f"{len(tmp)} spooled *.tmp files left", "detail": tmp[:3]})
    return states


def main():
    p = parser(__doc__)
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--clients", type=int, default=3, help="concurrent client threads")
    p.add_argument("--min-run", type=float, default=0.3, help="least seconds before the kill")
    p.add_argument("--max-run", type=float, default=6.0, help="most seconds before the kill")
    p.add_argument("--settle", type=float, default=120.0, help="seconds for resumed jobs to finish")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="keep the data directory")
    p.add_argument("--faults", action="store_true",
                   help="power loss at every kill, plus a full disk or I/O errors (see above)")
    a = p.parse_args()
    rng = random.Random(a.seed)
    data = tempfile.mkdtemp(prefix="sharedllm-crash.")
    journal = os.path.join(data, "faults.journal")
    log, violations = Log(), []
    answers = {"asked": 0, "key_found": 0}
    faults = {"power_loss": 0, "no_space": 0, "io_errors": 0, "refused_start": 0,
              "failed_by_fault": 0, "exited_on_storage_failure": 0} if a.faults else None
    counter = [0]
    started = time.time()
    server = None

    def start(spec=None):
        flags = a.server_flag + (["--testing-storage-faults", spec] if spec else [])
        s = Server(a.build, a.model, data, a.threads, flags)
        s.cli += ["--timeout", "60"]  # a hung call is a finding, not a stuck harness
        return s

    try:
        for trial in range(a.trials + 1):
            server = start(f"journal={journal}" if a.faults else None)
            verify(server, log, os.path.join(data, "store"), trial, a.settle, rng, violations, answers, faults)
            if trial == a.trials:
                break  # the final check, after a clean start
            if a.faults:
                server.stop()  # ends the journal clean: the faults start with the next server
                server = None
                spec, mode = f"journal={journal},seed={rng.randrange(1 << 30)}", rng.choice(
                    ["power_loss", "no_space", "io_errors"])
                if mode == "no_space":
                    spec += f",no_space_after_kb={rng.randrange(64, 4096)}"
                elif mode == "io_errors":
                    spec += f",error_one_in={rng.randrange(50, 500)},max_errors={rng.randrange(1, 21)}"
                faults[mode] += 1
                try:
                    server = start(spec)
                except StartFailed:
                    faults["refused_start"] += 1
                    continue
            stop = threading.Event()
            clients = [threading.Thread(target=operate, args=(server, log, random.Random(rng.random()), data,
                                                              stop, counter, random.Random(rng.random())))
                       for _ in range(a.clients)]
            for c in clients:
                c.start()
            time.sleep(rng.uniform(a.min_run, a.max_run))
            stop.set()
            if server.proc.poll() is not None:
                if a.faults and server.proc.returncode == 1 and "storage failed:" in server.output():
                    faults["exited_on_storage_failure"] += 1  # drained and exited for a restart
                else:
                    violations.append({"trial": trial, "rule": f"the server exited by itself ({server.proc.returncode})",
                                       "detail": server.output()[-300:]})
            server.kill()
            for c in clients:
                c.join()
            print(f"trial {trial + 1}/{a.trials}: {len(log.state)} documents, "
                  f"{len(violations)} violations", file=sys.stderr, flush=True)
        server.stop()
        server = None
    finally:
        if server:
            server.kill()
        if not a.keep:
            shutil.rmtree(data, ignore_errors=True)
    print(json.dumps({"trials": a.trials, "clients": a.clients, "seed": a.seed,
                      "kill_after_seconds": [a.min_run, a.max_run], "documents": len(log.state),
                      "acknowledged": log.acks, "answers": answers, "faults": faults, "violations": violations,
                      "seconds": round(time.time() - started, 1)}, indent=1))
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
