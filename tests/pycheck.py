"""The harness of the Python tests ctest runs: check() prints "ok" or "FAIL" and the expectation,
finish(NAME) prints "NAME: N failed" (what each test's PASS_REGULAR_EXPRESSION matches) and exits
non-zero on any failure."""
import sys

_failed = 0


def check(cond, what):
    global _failed
    print(("ok   " if cond else "FAIL ") + what)
    _failed += not cond


def finish(name):
    print(f"{name}: {_failed} failed")
    sys.exit(1 if _failed else 0)
