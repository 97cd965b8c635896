#!/usr/bin/python3
"""Turns evaluation JSON (from `sharedllm eval ppl|passkey|ruler|mathfind --out F.json`) into
docs/RESULTS.md and PNG plots (gnuplot, Debian package gnuplot-nox): perplexity vs length (SharedLLM,
truncated base, StreamingLLM, full attention PI/YaRN), the pass-key length x depth heat map, the
RULER / Math.Find table and an ablation table. Every number in RESULTS.md is read from the JSON
given here.

usage: make_results.py --ppl NAME=PPL.json [--ppl ...] [--pool NAME=PPL_NAME,PPL_NAME,...]
                       --passkey PASSKEY.json [--tasks RULER.json] [--tasks MATHFIND.json]
                       [--ablation [LABEL=]F.json ...] [--efficiency EFF.json] --out docs/
--ablation takes any eval JSON (ppl, passkey, ruler, mathfind), typically one per `--ablate`
setting plus the unablated run of the same command (and, as LABEL=F.json, runs of separately
trained variants: injection layers, split noise); rows are labelled LABEL or, without one, by
the JSON's "ablation" field. Runs of the same task (and held-out shard) share a table.
--pool pools --ppl runs of the same model and shard drawn with different seeds (independent
windows): per length, the log ratio weighted by the windows, its standard error
sqrt(sum (n_i SE_i)^2) / sum n_i."""
import argparse
import json
import math
import os
import subprocess
import tempfile


def ratio_interval(p, method="sharedllm"):
    """A method's perplexity / truncated (SharedLLM's, or "streaming": StreamingLLM's) and its
    paired 95 % interval, ratio × exp(±1.96 SE) (the ratio itself where the point has no SE)."""
    se_key = "log_ratio_se" if method == "sharedllm" else f"{method}_log_ratio_se"
    ratio, se = p[f"{method}_ppl"] / p["truncated_ppl"], p.get(se_key, 0)
    return ratio, ratio * math.exp(-1.96 * se), ratio * math.exp(1.96 * se)


def has_spread(r):
    """Whether an `eval ppl` run measured the spread of its ratios (log_ratio_se > 0 somewhere)."""
    return any(p.get("log_ratio_se", 0) > 0 for p in r["points"])


def ppl_table(runs):
    lines = ["| held-out set | length (× W) | windows | SharedLLM ppl | truncated base ppl | "
             "SharedLLM / truncated (95 % interval) | StreamingLLM | full attention, PI | full attention, YaRN |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in runs:
        for p in r["points"]:
            value, lo, hi = ratio_interval(p)
            ratio = f"{value:.3f}" + (f" ({lo:.3f}–{hi:.3f})" if "log_ratio_se" in p else "")
            stream = f"{p['streaming_ppl']:.3f}" if "streaming_ppl" in p else "—"
            if "streaming_log_ratio_se" in p:  # its own ratio to truncated, with its interval
                stream += " ({:.3f}: {:.3f}–{:.3f})".format(*ratio_interval(p, "streaming"))
            pi = f"{p['full_linear_ppl']:.3f}" if "full_linear_ppl" in p else "—"
            yarn = f"{p['full_yarn_ppl']:.3f}" if "full_yarn_ppl" in p else "—"
            lines.append(f"| {name} | {p['length_multiple']:g} | {p['windows']} | "
                         f"{p['sharedllm_ppl']:.3f} | {p['truncated_ppl']:.3f} | {ratio} | {stream} | "
                         f"{pi} | {yarn} |")
    return "\n".join(lines)


def pooled_points(members):
    """Per length that every member measured with a spread: (length, windows, pooled ratio, its
    standard error of the log ratio). Members: `eval ppl` runs on independent windows."""
    out = []
    lengths = sorted(set.intersection(*({p["length_multiple"] for p in r["points"]} for r in members)))
    for x in lengths:
        points = [next(p for p in r["points"] if p["length_multiple"] == x) for r in members]
        if not all(p.get("log_ratio_se", 0) > 0 for p in points):
            continue
        n = sum(p["windows"] for p in points)
        mean = sum(p["windows"] * math.log(p["sharedllm_ppl"] / p["truncated_ppl"]) for p in points) / n
        se = math.sqrt(sum((p["windows"] * p["log_ratio_se"]) ** 2 for p in points)) / n
        out.append((x, n, math.exp(mean), se))
    return out


def pooled_table(pools, runs):
    by_name = dict(runs)
    lines = ["| pooled | runs | length (× W) | windows | SharedLLM / truncated (95 % interval) | "
             "standard errors from 1 |", "|---|---|---:|---:|---:|---:|"]
    for name, members in pools:
        for x, n, ratio, se in pooled_points([by_name[m] for m in members]):
            lines.append(f"| {name} | {', '.join(members)} | {x:g} | {n} | {ratio:.4f} "
                         f"({ratio * math.exp(-1.96 * se):.4f}–{ratio * math.exp(1.96 * se):.4f}) | "
                         f"{abs(math.log(ratio)) / se:.1f} |")
    return "\n".join(lines)


def cell(p, key):
    """A task score in percent, or — when the point was skipped or not measured."""
    if p is None or p.get("trials", 0) == 0 or key not in p:
        return "—"
    return f"{p[key]:.0f}"


def tasks_section(runs):
    """RULER / Math.Find: one row per task, one column per length; cells SharedLLM / truncated /
    StreamingLLM in percent; a mean row over the RULER tasks of each run."""
    out = []
    for r in runs:
        lengths = sorted({p["length_multiple"] for p in r["points"]})
        tasks = list(dict.fromkeys(p["task"] for p in r["points"]))
        at = {(p["task"], p["length_multiple"]): p for p in r["points"]}
        trials = max(p["trials"] for p in r["points"])
        title = "RULER" if r["task"] == "ruler" else "InfiniteBench Math.Find (scaled)"
        abl = f", ablation `{r['ablation']}`" if r.get("ablation") else ""
        out.append(f"### {title}\n\nModel `{r['model']}`, window W = {r['window']}, {trials} samples per "
                   f"cell, seed {r.get('seed', '?')}{abl}. Cells: SharedLLM / truncated base / StreamingLLM, "
                   "score in percent (RULER: string_match_all; Math.Find: first number); — = the task's "
                   "smallest instance does not fit that length.\n")
        lines = ["| task | " + " | ".join(f"{x:g}× W" for x in lengths) + " |",
                 "|---|" + "---:|" * len(lengths)]
        for t in tasks:
            cells = []
            for x in lengths:
                p = at.get((t, x))
                c = " / ".join(cell(p, k) for k in ("sharedllm_score", "truncated_score", "streaming_score"))
                if p and p.get("trials", 0) > 0 and p.get("skipped_trials", 0) > 0:
                    c += f" ({p['trials']} of {p['trials'] + p['skipped_trials']} fit)"
                cells.append(c)
            lines.append(f"| {t} | " + " | ".join(cells) + " |")
        if len(tasks) > 1:
            cells = []
            for x in lengths:
                ps = [at[(t, x)] for t in tasks if (t, x) in at and at[(t, x)]["trials"] > 0]
                parts = []
                for k in ("sharedllm_score", "truncated_score", "streaming_score"):
                    vals = [p[k] for p in ps if k in p]
                    parts.append(f"{sum(vals) / len(vals):.0f}" if vals else "—")
                cells.append(" / ".join(parts) + (f" ({len(ps)} tasks)" if len(ps) < len(tasks) else ""))
            lines.append("| **mean** | " + " | ".join(cells) + " |")
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def ablation_value(r, x):
    """One number per (run, length): SharedLLM ppl (with its ratio to the truncated model), pass-key
    accuracy over all depths, or the mean task score."""
    ps = [p for p in r["points"] if p["length_multiple"] == x]
    if not ps:
        return "—"
    if r["task"] == "ppl":
        p = ps[0]
        return f"{p['sharedllm_ppl']:.3f} ({p['sharedllm_ppl'] / p['truncated_ppl']:.3f})"
    if r["task"] == "passkey":
        n = sum(p["trials"] for p in ps)
        return f"{100 * sum(p['sharedllm_correct'] for p in ps) / n:.0f} %" if n else "—"
    ps = [p for p in ps if p.get("trials", 0) > 0]
    return f"{sum(p['sharedllm_score'] for p in ps) / len(ps):.0f}" if ps else "—"


def ablation_section(runs):
    """Ablation tables: runs grouped by task (and shard); one row per run, one column per length."""
    groups = {}
    for label, r in runs:
        groups.setdefault((r["task"], r.get("shard", "")), []).append((label, r))
    what = {"ppl": "SharedLLM perplexity (ratio to the truncated base model)",
            "passkey": "SharedLLM pass-key accuracy over all depths",
            "ruler": "SharedLLM mean RULER score (percent)",
            "mathfind": "SharedLLM Math.Find score (percent)"}
    out = []
    for (task, shard), members in groups.items():
        lengths = sorted({p["length_multiple"] for _, r in members for p in r["points"]})
        src = f" on `{shard}`" if shard else ""
        out.append(f"### {task}{src}\n\n{what.get(task, task)}; model `{members[0][1]['model']}`.\n")
        lines = ["| setting | configuration | " + " | ".join(f"{x:g}× W" for x in lengths) + " |",
                 "|---|---|" + "---:|" * len(lengths)]
        for label, r in members:
            c = r.get("sharedllm_config", {})
            conf = (f"h={c.get('tree_depth', '?')}, α={'/'.join(str(a) for a in c.get('alphas', []))}, "
                    f"search {'on' if c.get('search', True) else 'off'}, chunk positions "
                    f"{'on' if c.get('chunk_positions', True) else 'off'}, selection {c.get('selection', '?')}, "
                    f"{c.get('injection', '?')} injection ×{c.get('num_injection_layers', '?')}, split noise "
                    f"{'on' if c.get('split_noise', True) else 'off'}"
                    if c else "?")
            lines.append(f"| {label} | {conf} | " + " | ".join(ablation_value(r, x) for x in lengths) + " |")
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def passkey_table(r):
    depths = sorted({p["depth"] for p in r["points"]})
    lengths = sorted({p["length_multiple"] for p in r["points"]})
    at = {(p["length_multiple"], p["depth"]): p for p in r["points"]}
    head = "| length (× W) | " + " | ".join(f"depth {d:g}" for d in depths) + " | SharedLLM all | truncated all |"
    lines = [head, "|---" * (len(depths) + 3) + "|"]
    for x in lengths:
        cells, s_ok, t_ok, n = [], 0, 0, 0
        for d in depths:
            p = at[(x, d)]
            cells.append(f"{p['sharedllm_correct']}/{p['trials']} ({p['truncated_correct']})")
            s_ok += p["sharedllm_correct"]
            t_ok += p["truncated_correct"]
            n += p["trials"]
        lines.append(f"| {x:g} | " + " | ".join(cells) + f" | {100 * s_ok / n:.0f} % | {100 * t_ok / n:.0f} % |")
    return "\n".join(lines)


def passkey_summary(runs):
    """One row per `eval passkey` run: keys found in all, and the weakest length and depth."""
    lines = ["| file | seed | keys per cell | SharedLLM | weakest length | weakest depth | truncated |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for path, r in runs:
        pts = r["points"]
        ok = sum(p["sharedllm_correct"] for p in pts)
        n = sum(p["trials"] for p in pts)
        t_ok = sum(p["truncated_correct"] for p in pts)

        def weakest(key):
            groups = {}
            for p in pts:
                c, t = groups.get(p[key], (0, 0))
                groups[p[key]] = (c + p["sharedllm_correct"], t + p["trials"])
            k, (c, t) = min(groups.items(), key=lambda kv: kv[1][0] / kv[1][1])
            return k, c, t

        lx, lc, lt = weakest("length_multiple")
        dx, dc, dt = weakest("depth")
        lines.append(f"| `{os.path.basename(path)}` | {r.get('seed', '—')} | {pts[0]['trials']} | "
                     f"{ok}/{n} ({100 * ok / n:.1f} %) | {lx:g}×: {lc}/{lt} | {dx:g}: {dc}/{dt} | "
                     f"{t_ok}/{n} |")
    return "\n".join(lines)


def ask_table(runs):
    """One row per recipes/check_ask_passkey.py run: its question, documents whose answer is the key,
    answers with the key anywhere in them (a leak, when the question is not about the key; older
    runs without the count: —), and the documents' lengths."""
    lines = ["| file | question | seed | answer is the key | key in the answer | document tokens | chunks |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for path, r in runs:
        tokens = [row["tokens"] for row in r["rows"]]
        chunks = [row["chunks"] for row in r["rows"]]
        contains = f"{r['contains_key']}/{r['documents']}" if "contains_key" in r else "—"
        lines.append(f"| `{os.path.basename(path)}` | {r.get('question', '—')} | {r['seed']} | "
                     f"{r['correct']}/{r['documents']} | {contains} | "
                     f"{min(tokens)}–{max(tokens)} | {min(chunks)}–{max(chunks)} |")
    return "\n".join(lines)


def efficiency_table(r):
    """Medians per length from `sharedllm eval efficiency` JSON: time and memory of ingestion, a
    question over the built tree, rebuilding the tree per question, full attention, and a stored
    full key/value cache (prefix caching) where it was measured."""
    mib = lambda b: b / 2**20
    dash = "—"
    cached = any("stored_cache" in p for p in r["points"])
    head = ("| length (× W) | tokens | ingest s | ask TTFT s | rebuild TTFT s | full attn TTFT s | "
            + ("stored-cache TTFT s | " if cached else "") +
            "ask tok/s | full tok/s | ingest peak MiB | ask peak MiB | rebuild peak MiB | full peak MiB | "
            "full / ask TTFT | " + ("stored cache / tree bytes | stored-cache / ask bytes read | " if cached else "")
            + "ingest util. | full TTFT util. |")
    lines = [head, "|---:" * head.count(" | ") + "|---:|"]
    for p in r["points"]:
        full = p.get("full_attention")
        cache = p.get("stored_cache")
        ratios = p["ratios"]
        row = (f"| {p['length_multiple']:g} | {p['tokens']} | {p['ingest']['seconds']:.3f} | "
               f"{p['ask']['ttft_seconds']:.3f} | {p['rebuild']['ttft_seconds']:.3f} | "
               + (f"{full['ttft_seconds']:.3f} | " if full else f"{dash} | "))
        if cached:
            row += f"{cache['ttft_seconds']:.3f} | " if cache else f"{dash} | "
        row += (f"{p['ask']['decode_tokens_per_second']:.0f} | "
                + (f"{full['decode_tokens_per_second']:.0f} | " if full else f"{dash} | "))
        row += (f"{mib(p['ingest']['phase_peak_rss_bytes']):.0f} | {mib(p['ask']['phase_peak_rss_bytes']):.0f} | "
                f"{mib(p['rebuild']['phase_peak_rss_bytes']):.0f} | "
                + (f"{mib(full['phase_peak_rss_bytes']):.0f} | " if full else f"{dash} | "))
        ratio = ratios.get("full_ttft_over_ask_ttft")
        row += f"{ratio:.1f}× | " if ratio else f"{dash} | "
        if cached:
            cb, rb = ratios.get("cache_bytes_over_tree_bytes"), ratios.get("cached_read_bytes_over_ask_read_bytes")
            row += (f"{cb:.2f} | " if cb else f"{dash} | ") + (f"{rb:.1f}× | " if rb else f"{dash} | ")
        row += f"{100 * p['ingest']['utilization']:.0f} % | "
        row += f"{100 * full['ttft_utilization']:.0f} % |" if full else f"{dash} |"
        lines.append(row)
    return "\n".join(lines)


def efficiency_plots(r, out, tmp):
    """efficiency_time.png and efficiency_memory.png: log-log time and peak RSS vs length."""
    dat = os.path.join(tmp, "efficiency.dat")
    nan = "NaN"
    with open(dat, "w") as f:
        for p in r["points"]:
            full = p.get("full_attention", {})
            f.write(" ".join(str(v) for v in [
                p["length_multiple"], p["ingest"]["seconds"], p["ask"]["ttft_seconds"],
                p["rebuild"]["ttft_seconds"], full.get("ttft_seconds", nan),
                p["ingest"]["phase_peak_rss_bytes"] / 2**20, p["ask"]["phase_peak_rss_bytes"] / 2**20,
                p["rebuild"]["phase_peak_rss_bytes"] / 2**20, full.get("phase_peak_rss_bytes", float("nan")) / 2**20]) + "\n")
    common = f"""set terminal png size 800,500
set logscale xy
set key left top
set grid
set xlabel 'document length (multiples of W = {r['window']})'
"""
    gnuplot(common + f"""set output '{out}/efficiency_time.png'
set ylabel 'seconds (median of {r['runs']} runs)'
plot '{dat}' using 1:2 with linespoints title 'ingest (static tree, once)', \
     '{dat}' using 1:3 with linespoints title 'question over the built tree: TTFT', \
     '{dat}' using 1:4 with linespoints title 'question rebuilding the tree: TTFT', \
     '{dat}' using 1:5 with linespoints title 'full attention: TTFT'
""")
    gnuplot(common + f"""set output '{out}/efficiency_memory.png'
set ylabel 'peak RSS of the phase (MiB)'
plot '{dat}' using 1:6 with linespoints title 'ingest', \
     '{dat}' using 1:7 with linespoints title 'question over the built tree', \
     '{dat}' using 1:8 with linespoints title 'question rebuilding the tree', \
     '{dat}' using 1:9 with linespoints title 'full attention'
""")


def efficiency_section(r):
    return (f"## Efficiency\n\nModel `{r['model']}`, window W = {r['window']}, chunk {r['chunk_size']}, "
            f"{r['device']} {r['dtype']}, {r['threads']} threads; question {r['question_tokens']} tokens, "
            f"{r['decode_tokens']} decoded; medians of {r['runs']} runs, each configuration in a fresh "
            f"process; utilisation against the matmul peak ({r['matmul_peak_source']}).\n\n"
            + efficiency_table(r) +
            "\n\n![time vs length](efficiency_time.png)\n![memory vs length](efficiency_memory.png)\n")


def gnuplot(script):
    subprocess.run(["gnuplot"], input=script, text=True, check=True)


def long_section(run, passkey):
    """Documents longer than the model's chunk budget: the eval's pass keys beyond 32x W and the
    service end to end (bench/long_documents.py)."""
    out = ["## Documents of any length\n",
           "A question reads at most the model's `chunk_budget` chunks (128 for `models/mini`, the 32× W "
           "it was trained for); a longer document or collection is read where its words best match the "
           "question (BM25, docs/design/retrieval.md).\n"]
    if passkey:
        out.append(f"`sharedllm eval passkey` (seed {passkey['seed']}) beyond the budget, SharedLLM "
                   "correct/trials per depth (truncated base model in parentheses):\n")
        depths = sorted({p["depth"] for p in passkey["points"]})
        out.append("| length (× W) | " + " | ".join(f"depth {d:g}" for d in depths) + " | all |")
        out.append("|---|" + "---|" * (len(depths) + 1))
        for x in sorted({p["length_multiple"] for p in passkey["points"]}):
            pts = {p["depth"]: p for p in passkey["points"] if p["length_multiple"] == x}
            cells = [f"{pts[d]['sharedllm_correct']}/{pts[d]['trials']} ({pts[d]['truncated_correct']})"
                     for d in depths]
            ok = sum(pts[d]["sharedllm_correct"] for d in depths)
            n = sum(pts[d]["trials"] for d in depths)
            out.append(f"| {x:g} | " + " | ".join(cells) + f" | {100 * ok / n:.0f} % |")
        out.append("")
    if run:
        flags = " ".join(run.get("server_flags") or []) or "defaults"
        out.append(f"The service end to end (`bench/long_documents.py`, server {flags}, model "
                   f"`{os.path.basename(run['model'].rstrip('/'))}`): documents built from Debian's license "
                   "texts with one pass-key sentence, uploaded and indexed, the server restarted, then each "
                   f"asked \"{run['question']}\" {run['repeats']} times (medians). TTFT = queue + retrieval + "
                   "key/value load + prefill; memory: the server's resident set before the ask and its peak "
                   "during it.\n")
        out.append("| document | tokens | ready (s) | stored bytes / token | chunks read / all | "
                   "answers | TTFT (ms) | retrieval (ms) | K/V load (ms) | RSS before / peak (MiB) |")
        out.append("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|")
        rows = list(run["documents"]) + ([run["collection"]] if run.get("collection") else [])
        for r in rows:
            name = (f"collection of {r['collection']}" if "collection" in r
                    else f"{r['multiple']:g}× W, depth {r['depth']:g}")
            tokens = f"{r['tokens']:,}" if "tokens" in r else "—"
            per_token = f"{r['stored_bytes'] / r['tokens']:,.0f}" if "tokens" in r else "—"
            right = sum(a.startswith(r["key"]) for a in r["answers"])
            out.append(f"| {name} | {tokens} | {r['ready_s']:.1f} | {per_token} | "
                       f"{r['chunks_read']} / {r['chunks']} | {right}/{len(r['answers'])} | "
                       f"{1000 * r['ttft_s']:.0f} | {1000 * r['retrieval_s']:.0f} | {1000 * r['kv_load_s']:.0f} | "
                       f"{r['rss_before_bytes'] / 2**20:.0f} / {r['peak_rss_bytes'] / 2**20:.0f} |")
        out.append("")
    return "\n".join(out) + "\n"


def formats_section(results_dir, long_runs):
    """What each stored key/value format costs: perplexity and pass keys read back from it
    (`sharedllm eval --kv-dtype`, recipes/eval_kv_formats.sh), and the bytes the service stores
    per token in it (bench/long_documents.py runs)."""
    formats = [f for f in ("float32", "bfloat16", "int8")
               if os.path.exists(os.path.join(results_dir, f"kv-passkey-{f}.json"))]
    if not formats:
        return ""
    load = lambda name: json.load(open(os.path.join(results_dir, name)))
    docs = [d for d in ("books", "code", "proofs")
            if all(os.path.exists(os.path.join(results_dir, f"kv-ppl-{d}-{f}.json")) for f in formats)]
    ppl = {(d, f): load(f"kv-ppl-{d}-{f}.json") for d in docs for f in formats}
    lengths = sorted({p["length_multiple"] for r in ppl.values() for p in r["points"]})
    out = ["## Stored formats\n",
           "The keys and values of every node are stored in the format the server's `--kv-dtype` names "
           "and read back before the model reads them; the evaluations read them the same way "
           "(`sharedllm eval --kv-dtype`, `recipes/eval_kv_formats.sh`), on the same windows and keys "
           "as the model's own float32. int8: per node, layer, head and channel, scale = the least power "
           "of two 2^e with max |x| / 2^e <= 127, e held in one byte. In every format a parent's leading "
           "kept positions that its left child holds are stored once, with the child, and the search "
           "vectors are bfloat16 beside 16-bit or int8 keys/values (docs/design/tree_store.md).\n"]
    if docs:
        w = ppl[(docs[0], formats[0])]["points"][0]["windows"]
        out.append(f"SharedLLM perplexity ({w} windows per length; the ratio to float32 in parentheses):\n")
        out.append("| format | " + " | ".join(f"{d} {x:g}× W" for d in docs for x in lengths) + " |")
        out.append("|---|" + "---:|" * (len(docs) * len(lengths)))
        for f in formats:
            cells = []
            for d in docs:
                for x in lengths:
                    p = next(q for q in ppl[(d, f)]["points"] if q["length_multiple"] == x)
                    base = next(q for q in ppl[(d, "float32")]["points"] if q["length_multiple"] == x)
                    cells.append(f"{p['sharedllm_ppl']:.3f} ({p['sharedllm_ppl'] / base['sharedllm_ppl']:.4f})")
            out.append(f"| {f} | " + " | ".join(cells) + " |")
        out.append("")
    out.append("Pass keys, SharedLLM correct / trials:\n")
    out.append("| format | 1×–32× W (`eval passkey`) | beyond the budget: 128×, 512×, 4096× W |")
    out.append("|---|---:|---:|")
    for f in formats:
        r = load(f"kv-passkey-{f}.json")
        ok, n = sum(p["sharedllm_correct"] for p in r["points"]), sum(p["trials"] for p in r["points"])
        beyond_name = "passkey-beyond-budget.json" if f == "float32" else f"kv-passkey-beyond-budget-{f}.json"
        beyond = "—"
        if os.path.exists(os.path.join(results_dir, beyond_name)):
            b = load(beyond_name)
            bok, bn = sum(p["sharedllm_correct"] for p in b["points"]), sum(p["trials"] for p in b["points"])
            beyond = f"{bok}/{bn}"
        out.append(f"| {f} | {ok}/{n} | {beyond} |")
    out.append("")
    if long_runs:
        out.append("Bytes the service stores per token (`bench/long_documents.py`: the data directory's "
                   "growth over the document's tokens, at rest after a restart, all column families, "
                   "zstd-compressed `kv`, RocksDB's own overheads included), against a full bfloat16 key/value cache of every layer of the base model "
                   "(what prefix caching keeps):\n")
        out.append("| `--kv-dtype` | document | bytes / token | full bf16 KV cache / token | ratio | pass keys |")
        out.append("|---|---|---:|---:|---:|---|")
        for run in long_runs:
            flags = run.get("server_flags") or []
            fmt = run.get("kv_dtype") or (flags[flags.index("--kv-dtype") + 1] if "--kv-dtype" in flags
                                          else "bfloat16")  # the default before runs said
            cache = run.get("full_kv_cache_bytes_per_token")
            for r in run["documents"]:
                if r["depth"] != 0.5:
                    continue  # one row per length
                per = r["stored_bytes"] / r["tokens"]
                right = sum(a.startswith(r["key"]) for a in r["answers"])
                out.append(f"| {fmt} | {r['multiple']:g}× W, depth {r['depth']:g} | {per:,.0f} | "
                           + (f"{cache:,} | {per / cache:.2f} |" if cache else "— | — |")
                           + f" {right}/{len(r['answers'])} |")
        out.append("")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ppl", action="append", default=[], help="NAME=FILE.json")
    ap.add_argument("--pool", action="append", default=[],
                    help="NAME=PPL_NAME,PPL_NAME,...: those --ppl runs pooled (independent windows)")
    ap.add_argument("--passkey", action="append", default=[],
                    help="FILE.json from `sharedllm eval passkey` (repeatable: the first gives the "
                         "table and heat map, every one a row of the summary)")
    ap.add_argument("--ask", action="append", default=[],
                    help="FILE.json from recipes/check_ask_passkey.py (repeatable)")
    ap.add_argument("--long", help="FILE.json from bench/long_documents.py (documents of any length)")
    ap.add_argument("--long-passkey", help="FILE.json from `sharedllm eval passkey` beyond the budget")
    ap.add_argument("--formats", help="results directory of recipes/eval_kv_formats.sh (kv-*.json)")
    ap.add_argument("--formats-long", action="append", default=[],
                    help="FILE.json from bench/long_documents.py, one per --kv-dtype (repeatable)")
    ap.add_argument("--out", default="docs")
    ap.add_argument("--efficiency", help="FILE.json from `sharedllm eval efficiency`")
    ap.add_argument("--tasks", action="append", default=[],
                    help="FILE.json from `sharedllm eval ruler` or `eval mathfind` (repeatable)")
    ap.add_argument("--ablation", action="append", default=[],
                    help="[LABEL=]FILE.json from any eval run with or without --ablate (repeatable)")
    a = ap.parse_args()
    task_runs = [json.load(open(path)) for path in a.tasks]
    ablations = []
    for spec in a.ablation:
        label, path = spec.split("=", 1) if "=" in spec and not os.path.exists(spec) else ("", spec)
        r = json.load(open(path))
        ablations.append((label or r.get("ablation") or "as trained", r))
    runs = []
    for spec in a.ppl:
        name, path = spec.split("=", 1)
        runs.append((name, json.load(open(path))))
    pools = []
    by_name = dict(runs)
    for spec in a.pool:
        name, _, members = spec.partition("=")
        members = members.split(",")
        missing = [m for m in members if m not in by_name]
        if not name or len(members) < 2 or missing:
            ap.error(f"--pool {spec!r}: NAME=two or more --ppl names" + (f" (not given: {missing})" if missing else ""))
        if len({(by_name[m]["model"], by_name[m]["shard"]) for m in members}) != 1:
            ap.error(f"--pool {spec!r}: the runs must share the model and the held-out shard")
        pools.append((name, members))
    passkeys = [(path, json.load(open(path))) for path in a.passkey]
    passkey = passkeys[0][1] if passkeys else None
    asks = [(path, json.load(open(path))) for path in a.ask]
    os.makedirs(a.out, exist_ok=True)
    efficiency = json.load(open(a.efficiency)) if a.efficiency else None
    long_run = json.load(open(a.long)) if a.long else None
    long_passkey = json.load(open(a.long_passkey)) if a.long_passkey else None
    with tempfile.TemporaryDirectory() as tmp:
        if efficiency:
            efficiency_plots(efficiency, a.out, tmp)
        if runs:
            plots = []
            for name, r in runs:
                dat = os.path.join(tmp, name + ".dat")
                with open(dat, "w") as f:
                    for p in r["points"]:
                        f.write(f"{p['length_multiple']} {p['sharedllm_ppl']} {p['truncated_ppl']} "
                                f"{p.get('streaming_ppl', 'NaN')}\n")
                plots.append(f"'{dat}' using 1:2 with linespoints title '{name}: SharedLLM'")
                plots.append(f"'{dat}' using 1:3 with linespoints dashtype 2 title '{name}: truncated base'")
                if any("streaming_ppl" in p for p in r["points"]):
                    plots.append(f"'{dat}' using 1:4 with linespoints dashtype 5 title '{name}: StreamingLLM'")
                full = [p for p in r["points"] if "full_yarn_ppl" in p]
                if full:
                    fdat = os.path.join(tmp, name + "-full.dat")
                    with open(fdat, "w") as f:
                        for p in full:
                            f.write(f"{p['length_multiple']} {p['full_linear_ppl']} {p['full_yarn_ppl']}\n")
                    plots.append(f"'{fdat}' using 1:2 with linespoints dashtype 3 title '{name}: full attn PI'")
                    plots.append(f"'{fdat}' using 1:3 with linespoints dashtype 4 title '{name}: full attn YaRN'")
            # One line per method and run: the key grows with the runs, and so does the canvas.
            gnuplot(f"""set terminal png size {max(800, 400 + 25 * len(plots))},{max(500, 14 * len(plots) + 150)}
set output '{a.out}/ppl_vs_length.png'
set logscale x 2
set logscale y
set xlabel 'document length (multiples of the window W)'
set ylabel 'perplexity of the last W/16 tokens'
set key outside
plot {', '.join(plots)}
""")
            # The ratio to the truncated model with its 95 % interval, for runs that measured it.
            ratio_plots = []
            for name, r in runs:
                if not has_spread(r):
                    continue
                dat = os.path.join(tmp, name + "-ratio.dat")
                with open(dat, "w") as f:
                    for p in r["points"]:
                        f.write(f"{p['length_multiple']} {' '.join(map(str, ratio_interval(p)))}\n")
                ratio_plots.append(f"'{dat}' using 1:2:3:4 with yerrorlines title '{name} ({r['points'][0]['windows']} windows)'")
            if ratio_plots:
                gnuplot(f"""set terminal png size 800,500
set output '{a.out}/ppl_ratio_vs_length.png'
set logscale x 2
set xlabel 'document length (multiples of the window W)'
set ylabel 'SharedLLM / truncated perplexity (95 % interval)'
set offsets 0, 0, 0.005, 0.005
set key outside
plot 1 with lines dashtype 2 lc 'black' title 'truncated base', {', '.join(ratio_plots)}
""")
        if passkey:
            dat = os.path.join(tmp, "passkey.dat")
            lengths = sorted({p["length_multiple"] for p in passkey["points"]})
            depths = sorted({p["depth"] for p in passkey["points"]})
            with open(dat, "w") as f:
                for i, x in enumerate(lengths):
                    for j, d in enumerate(depths):
                        p = next(q for q in passkey["points"] if q["length_multiple"] == x and q["depth"] == d)
                        f.write(f"{i} {j} {100.0 * p['sharedllm_correct'] / p['trials']}\n")
                    f.write("\n")
            xt = ", ".join(f"'{x:g}x' {i}" for i, x in enumerate(lengths))
            yt = ", ".join(f"'{d:g}' {j}" for j, d in enumerate(depths))
            gnuplot(f"""set terminal png size 700,450
set output '{a.out}/passkey_heatmap.png'
set view map
set xtics ({xt})
set ytics ({yt})
set xlabel 'length (multiples of W)'
set ylabel 'needle depth'
set cbrange [0:100]
set cblabel 'SharedLLM accuracy (%)'
plot '{dat}' using 1:2:3 with image notitle
""")
    with open(os.path.join(a.out, "RESULTS.md"), "w") as f:
        f.write("# Results\n\nGenerated by `recipes/make_results.py` from the evaluation JSON listed "
                "below; do not edit by hand.\n\n")
        if runs:
            f.write("## Perplexity (CEPE/SharedLLM protocol)\n\n")
            f.write("Sources: " + ", ".join(f"`{n}` = {r['shard']}" for n, r in runs) +
                    f"; model `{runs[0][1]['model']}`, window W = {runs[0][1]['window']}.\n\n")
            if any("streaming_ppl" in p for _, r in runs for p in r["points"]):
                f.write("StreamingLLM: the base model reading all L tokens with a cache of W entries (the "
                        "first 4 tokens as attention sinks + the most recent ones, rotary positions within "
                        "the cache), zero-shot; at 1× W it is the truncated model.\n\n")
            if any("log_ratio_se" in p for _, r in runs for p in r["points"]):
                f.write("The interval beside a ratio: ratio × exp(±1.96 SE), SE the paired standard error "
                        "of the per-window differences of mean NLL (SharedLLM − truncated; the same windows). "
                        "Where it contains 1, those windows cannot tell the two apart.\n\n")
            if any("streaming_log_ratio_se" in p for _, r in runs for p in r["points"]):
                f.write("In the StreamingLLM column, the parenthesis is StreamingLLM / truncated and its "
                        "95 % interval, by the same rule (the paired SE of StreamingLLM − truncated).\n\n")
            f.write(ppl_table(runs) + "\n\n")
            if pools:
                f.write("Pooled: runs of the same model and held-out set with different seeds (independent "
                        "windows), per length the log ratio weighted by the windows, its standard error "
                        "sqrt(Σ (n_i SE_i)²) / Σ n_i.\n\n" + pooled_table(pools, runs) + "\n\n")
            f.write("![perplexity vs length](ppl_vs_length.png)\n\n")
            if any(has_spread(r) for _, r in runs):
                f.write("![SharedLLM / truncated perplexity vs length](ppl_ratio_vs_length.png)\n\n")
        if passkey:
            f.write("## Pass-key retrieval\n\n")
            f.write(f"Model `{passkey['model']}`, window W = {passkey['window']}. Cells: SharedLLM "
                    "correct/trials (truncated base model correct).\n\n")
            f.write(passkey_table(passkey) + "\n\n![pass-key heat map](passkey_heatmap.png)\n")
            if len(passkeys) > 1:
                f.write("\nEvery run (seed: which keys and haystacks):\n\n" + passkey_summary(passkeys) + "\n")
        if asks:
            f.write("\n## Pass keys through `sharedllm ask`\n\n"
                    "`recipes/check_ask_passkey.py`: GPL-3 documents with one pass-key sentence each. Asked for "
                    "the key, the answer should be it; asked anything else, the key should not appear.\n\n"
                    + ask_table(asks) + "\n")
        if long_run or long_passkey:
            f.write("\n" + long_section(long_run, long_passkey))
        if a.formats:
            f.write("\n" + formats_section(a.formats, [json.load(open(p)) for p in a.formats_long]))
        if task_runs:
            f.write("\n## Retrieval and aggregation over long input (RULER, Math.Find)\n\n")
            f.write(tasks_section(task_runs) + "\n")
        if ablations:
            f.write("\n## Ablations\n\n"
                    "Rows named by an `--ablate` setting are the trained model read with that switch of "
                    "sharedllm.json changed at evaluation time (no retraining); switches that need "
                    "retraining (injection layers, split noise) appear only as separately trained models, "
                    "named by their own label; the configuration column is what each run evaluated.\n\n")
            f.write(ablation_section(ablations) + "\n")
        if efficiency:
            f.write("\n" + efficiency_section(efficiency))


if __name__ == "__main__":
    main()
