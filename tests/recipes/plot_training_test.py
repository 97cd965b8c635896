#!/usr/bin/python3
"""recipes/plot_training.py on hand-made logs: stages laid end to end on one step axis (train and
eval points where they belong, a start label per stage), malformed logs refused with exit 2 and the
file and line named, and a PNG written. Usage: plot_training_test.py SOURCE_DIR"""
import contextlib
import io
import json
import os
import sys
import tempfile

src = sys.argv[1]
sys.path.insert(0, os.path.join(src, "tests"))
sys.path.insert(0, os.path.join(src, "recipes"))
from pycheck import check, finish  # noqa: E402
import plot_training  # noqa: E402


def write(path, lines):
    with open(path, "w") as f:
        f.write("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines))
    return path


def run(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = plot_training.main(argv)
    return code, err.getvalue()


with tempfile.TemporaryDirectory() as d:
    base = write(os.path.join(d, "base.jsonl"), [
        {"step": 10, "tokens": 100, "loss": 5.0}, {"step": 20, "tokens": 200, "loss": 4.0},
        {"step": 20, "eval_loss": 4.5}])
    s1 = write(os.path.join(d, "s1.jsonl"), [
        {"step": 10, "loss": 2.0}, {"step": 30, "loss": 1.0}, {"step": 30, "eval_loss": 1.5}])
    s2 = write(os.path.join(d, "s2.jsonl"), [{"step": 5, "loss": 0.5}, {"step": 5, "eval_loss": 0.0}])

    train, evals, starts = plot_training.stage_series(
        [("a", plot_training.read_log(s1)), ("b", plot_training.read_log(s2))])
    check(train == ["10 2.0", "30 1.0", "", "35 0.5", ""], f"train points end to end: {train}")
    check(evals == ["30 1.5"], f"eval points, a zero eval loss (none measured) left out: {evals}")
    check(starts == [(0, "a"), (30, "b")], f"stage starts: {starts}")

    bad = write(os.path.join(d, "bad.jsonl"), [{"step": 1, "loss": 1.0}, "{not json"])
    code, err = run(["--out", os.path.join(d, "x.png"), "--base", base, "--stage", "a=" + bad])
    check(code == 2 and "bad.jsonl:2: not JSON" in err, f"a malformed line is named: {code} {err!r}")
    nostep = write(os.path.join(d, "nostep.jsonl"), [{"loss": 1.0}])
    code, err = run(["--out", os.path.join(d, "x.png"), "--base", nostep])
    check(code == 2 and "integer \"step\"" in err, f"a line without a step is refused: {err!r}")
    evalonly = write(os.path.join(d, "evalonly.jsonl"), [{"step": 3, "eval_loss": 2.0}])
    code, err = run(["--out", os.path.join(d, "x.png"), "--base", evalonly])
    check(code == 2 and "no train loss" in err, f"a log without train loss is refused: {err!r}")
    code, err = run(["--out", os.path.join(d, "x.png"), "--base", base, "--stage", "nameonly"])
    check(code == 2 and "NAME=LOG" in err, f"a --stage without '=' is refused: {err!r}")
    code, err = run(["--out", os.path.join(d, "x.png"), "--base", os.path.join(d, "missing")])
    check(code == 2 and "missing" in err, f"a missing log is named: {err!r}")

    png = os.path.join(d, "curves.png")
    code, err = run(["--out", png, "--base", base, "--stage", "a=" + s1, "--stage", "b=" + s2])
    with open(png, "rb") as f:
        head = f.read(8)
    check(code == 0 and head == b"\x89PNG\r\n\x1a\n", f"a PNG written: {code} {err!r}")

finish("plot_training")
