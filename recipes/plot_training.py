#!/usr/bin/env python3
"""Loss curves of a model's training runs, from the trainer's train_log.jsonl files, as one PNG.

    recipes/plot_training.py --out models/mini/loss_curves.png \
        --base recipes/mini/base_log.jsonl \
        --stage lm=recipes/mini/lm_log.jsonl \
        --stage 1=recipes/mini/passkey-separate/stage1_log.jsonl ...

Top panel: the base model's train and held-out loss against tokens seen. Bottom panel: the stages after it, in
the order given, one after the other on a shared step axis (each stage's steps counted from the
end of the one before), train loss as lines and eval loss as points, a label at each stage's start.
Needs gnuplot (Debian package gnuplot-nox), as recipes/make_results.py.
"""
import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_results import gnuplot  # noqa: E402


def read_log(path):
    """[(step, tokens, loss or None, eval_loss or None)] of a train_log.jsonl; ValueError if malformed."""
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                j = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{number}: not JSON: {e}") from e
            if not isinstance(j, dict) or not isinstance(j.get("step"), int):
                raise ValueError(f"{path}:{number}: a log line needs an integer \"step\"")
            if "loss" not in j and "eval_loss" not in j:
                raise ValueError(f"{path}:{number}: neither \"loss\" nor \"eval_loss\"")
            rows.append((j["step"], j.get("tokens"), j.get("loss"), j.get("eval_loss")))
    if not any(r[2] is not None for r in rows):
        raise ValueError(f"{path}: no train loss logged")
    return rows


def stage_series(stages):
    """Lines 'x loss' (train) and 'x eval' (eval) on one step axis, and (x, name) stage starts."""
    train, evals, starts, offset = [], [], [], 0
    for name, rows in stages:
        starts.append((offset, name))
        for step, _, loss, eval_loss in rows:
            if loss is not None:
                train.append(f"{offset + step} {loss}")
            if eval_loss is not None and eval_loss > 0:
                evals.append(f"{offset + step} {eval_loss}")
        offset += max(r[0] for r in rows)
        train.append("")  # a break in the line between stages
    return train, evals, starts


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--base", required=True, help="the base model's train_log.jsonl")
    p.add_argument("--stage", action="append", default=[], metavar="NAME=LOG",
                   help="a later stage's log, in training order (repeatable)")
    a = p.parse_args(argv)
    try:
        base = read_log(a.base)
        stages = []
        for spec in a.stage:
            name, sep, path = spec.partition("=")
            if not sep or not name or not path:
                raise ValueError(f"--stage {spec!r}: expected NAME=LOG")
            stages.append((name, read_log(path)))
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        # The base's x is tokens: an eval line carries none, so it takes the last train line's.
        base_dat, base_eval = os.path.join(tmp, "base.dat"), os.path.join(tmp, "base_eval.dat")
        with open(base_dat, "w") as f, open(base_eval, "w") as g:
            x = 0
            for step, tokens, loss, eval_loss in base:
                if loss is not None:
                    x = tokens if tokens is not None else step
                    f.write(f"{x} {loss}\n")
                if eval_loss is not None and eval_loss > 0:
                    g.write(f"{x} {eval_loss}\n")
        train, evals, starts = stage_series(stages)
        train_dat, eval_dat = os.path.join(tmp, "train.dat"), os.path.join(tmp, "eval.dat")
        with open(train_dat, "w") as f:
            f.write("\n".join(train) + "\n")
        with open(eval_dat, "w") as f:
            f.write("\n".join(evals) + "\n")
        labels = "\n".join(f"set arrow from {x}, graph 0 to {x}, graph 1 nohead dt 2 lc rgb 'gray'\n"
                           f"set label '{name}' at {x}, graph 0.95 offset 0.3, 0 font ',8'"
                           for x, name in starts)
        panels = 2 if stages else 1
        script = f"""set terminal png size 900,{350 * panels}
set output '{a.out}'
set multiplot layout {panels},1
set grid
set title 'base model'
set xlabel 'tokens'
set ylabel 'loss'
set logscale x
plot '{base_dat}' using 1:2 with lines lw 2 title 'train loss', \\
     '{base_eval}' using 1:2 with points pt 7 ps 1.2 title 'held-out loss'
"""
        if stages:
            script += f"""unset logscale x
set title 'later stages (each from the end of the one before)'
set xlabel 'step'
set ylabel 'loss'
{labels}
plot '{train_dat}' using 1:2 with lines title 'train loss', \\
     '{eval_dat}' using 1:2 with points pt 7 ps 1.2 title 'eval loss'
"""
        gnuplot(script + "unset multiplot\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
