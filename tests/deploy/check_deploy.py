#!/usr/bin/python3
"""Offline checks of deploy/ and the Dockerfile (no cluster, no Docker engine here): yamllint, the
shape of every manifest, and that every flag the manifests and the image pass to sharedllm-server
exists in its --help. Usage: check_deploy.py SOURCE_DIR SERVER_BINARY. Prints 'N passed, M failed'."""
import glob
import os
import re
import subprocess
import sys

import yaml

src, server = sys.argv[1], sys.argv[2]
passed, failed = 0, 0


def check(ok, what):
    global passed, failed
    print(("PASS " if ok else "FAIL ") + what)
    passed += ok
    failed += not ok


manifests = sorted(glob.glob(os.path.join(src, "deploy", "k8s", "*.yaml")))
check(len(manifests) >= 5, f"{len(manifests)} manifests")
lint = subprocess.run(["yamllint", "-d", "{extends: default, rules: {line-length: {max: 100}, "
                       "document-start: disable}}", *manifests], capture_output=True, text=True)
check(lint.returncode == 0, "yamllint " + lint.stdout.strip())

help_text = subprocess.run([server, "--help"], capture_output=True, text=True).stdout
known_flags = set(re.findall(r"--([a-z][a-z0-9-]*)", help_text))
kinds = {}
for path in manifests:
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    for d in docs:
        name = os.path.basename(path)
        ok = isinstance(d, dict) and "apiVersion" in d and "kind" in d
        ok = ok and (d["kind"] == "Kustomization" or "name" in d.get("metadata", {}))
        check(ok, f"{name}: apiVersion, kind, metadata.name")
        kinds[d.get("kind")] = d

sts = kinds.get("StatefulSet")
check(sts is not None, "a StatefulSet")
if sts:
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    c = pod["containers"][0]
    check(spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items(),
          "StatefulSet selector matches its pod labels")
    check(spec["serviceName"] == kinds["Service"]["metadata"]["name"], "serviceName is the headless service")
    check("grpc" in c["readinessProbe"] and "grpc" in c["livenessProbe"], "probes use gRPC health")
    used = [a.split("=")[0][2:] for a in c["args"] if a.startswith("--")]
    unknown = [u for u in used if u not in known_flags]
    check(not unknown, f"StatefulSet flags known to sharedllm-server (unknown: {unknown})")
    mounts = {m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"] for v in pod["volumes"]} | {t["metadata"]["name"] for t in spec["volumeClaimTemplates"]}
    check(mounts <= volumes, "every volumeMount has a volume")
    check(pod["terminationGracePeriodSeconds"] > 45, "grace period longer than --drain-seconds")

job = kinds.get("Job")
check(job is not None and job["spec"].get("completionMode") == "Indexed", "an Indexed Job for batch indexing")
hpa = kinds.get("HorizontalPodAutoscaler")
check(hpa is not None and hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "sharedllm_index_queue_depth",
      "HPA on sharedllm_index_queue_depth")

with open(os.path.join(src, "Dockerfile")) as f:
    dockerfile = f.read()
check(dockerfile.startswith("#") and "FROM debian:bookworm" in dockerfile, "Dockerfile on debian:bookworm")
check("scripts/setup.sh" in dockerfile, "Dockerfile installs packages through scripts/setup.sh")
entry = re.search(r"ENTRYPOINT \[(.*?)\]", dockerfile, re.S).group(1)
flags = re.findall(r'"--([a-z-]+)"', entry)
check(flags and all(f in known_flags for f in flags), f"Dockerfile flags known to the server: {flags}")

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
