#!/usr/bin/env bash
# What CI runs after the test suite (scripts/run_tests.sh does, when CI=true), sized for CI's 90
# minutes on 2 cores: a short libFuzzer run of every target (FUZZ_SECONDS each, default 30, from
# the committed corpora), AddressSanitizer + UndefinedBehaviorSanitizer over the tests that link
# no libtorch (tree store, storage faults, retrieval, and the replays of every parser's corpus),
# and ThreadSanitizer over the tree store and the indexer. A finding fails the run. The heavier
# runs stay documented commands, recorded in docs/TESTING.md: every test under ASan
# (scripts/run_sanitizers.sh), service_test under TSan (scripts/run_tsan.sh), 10 million
# executions per fuzz target (scripts/run_fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
FUZZ_SECONDS=${FUZZ_SECONDS:-30} bash scripts/run_fuzz.sh 0
echo "ci extras: fuzzing done after $(( $(date +%s) - start )) s"
SANITIZE_TARGETS="treestore_test fault_storage_test retrieval_test key_codec_fuzz_replay \
value_codec_fuzz_replay request_fuzz_replay auth_fuzz_replay" bash scripts/run_sanitizers.sh
echo "ci extras: address and undefined-behaviour sanitizers done after $(( $(date +%s) - start )) s"
TSAN_TESTS="treestore_test indexer_test" bash scripts/run_tsan.sh
echo "ci extras: thread sanitizer done after $(( $(date +%s) - start )) s"
