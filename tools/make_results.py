#!/usr/bin/python3
"""Turns evaluation JSON (from `sharedllm eval ppl|passkey --out F.json`) into docs/RESULTS.md and
PNG plots (gnuplot, Debian package gnuplot-nox): perplexity vs length and the pass-key
length x depth heat map. Every number in RESULTS.md is read from the JSON given here.

usage: make_results.py --ppl PPL.json [--ppl ...] --passkey PASSKEY.json --out docs/"""
import argparse
import json
import os
import subprocess
import tempfile


def ppl_table(runs):
    lines = ["| held-out set | length (× W) | windows | SharedLLM ppl | truncated base ppl | "
             "SharedLLM / truncated | full attention, PI | full attention, YaRN |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in runs:
        for p in r["points"]:
            ratio = p["sharedllm_ppl"] / p["truncated_ppl"]
            pi = f"{p['full_linear_ppl']:.3f}" if "full_linear_ppl" in p else "—"
            yarn = f"{p['full_yarn_ppl']:.3f}" if "full_yarn_ppl" in p else "—"
            lines.append(f"| {name} | {p['length_multiple']:g} | {p['windows']} | "
                         f"{p['sharedllm_ppl']:.3f} | {p['truncated_ppl']:.3f} | {ratio:.3f} | {pi} | {yarn} |")
    return "\n".join(lines)


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


def efficiency_table(r):
    """Medians per length from `sharedllm eval efficiency` JSON: time and memory of ingestion, a
    question over the built tree, rebuilding the tree per question and full attention."""
    mib = lambda b: b / 2**20
    lines = ["| length (× W) | tokens | ingest s | ask TTFT s | rebuild TTFT s | full attn TTFT s | "
             "ask tok/s | full tok/s | ingest peak MiB | ask peak MiB | rebuild peak MiB | full peak MiB | "
             "full / ask TTFT | ingest util. | full TTFT util. |",
             "|---:" * 15 + "|"]
    for p in r["points"]:
        full = p.get("full_attention")
        dash = "—"
        lines.append(
            f"| {p['length_multiple']:g} | {p['tokens']} | {p['ingest']['seconds']:.3f} | "
            f"{p['ask']['ttft_seconds']:.3f} | {p['rebuild']['ttft_seconds']:.3f} | "
            f"{full['ttft_seconds']:.3f} | " if full else
            f"| {p['length_multiple']:g} | {p['tokens']} | {p['ingest']['seconds']:.3f} | "
            f"{p['ask']['ttft_seconds']:.3f} | {p['rebuild']['ttft_seconds']:.3f} | {dash} | ")
        lines[-1] += (f"{p['ask']['decode_tokens_per_second']:.0f} | "
                      f"{full['decode_tokens_per_second']:.0f} | " if full else
                      f"{p['ask']['decode_tokens_per_second']:.0f} | {dash} | ")
        lines[-1] += (f"{mib(p['ingest']['phase_peak_rss_bytes']):.0f} | {mib(p['ask']['phase_peak_rss_bytes']):.0f} | "
                      f"{mib(p['rebuild']['phase_peak_rss_bytes']):.0f} | "
                      + (f"{mib(full['phase_peak_rss_bytes']):.0f} | " if full else f"{dash} | "))
        ratio = p["ratios"].get("full_ttft_over_ask_ttft")
        lines[-1] += (f"{ratio:.1f}× | " if ratio else f"{dash} | ") + f"{100 * p['ingest']['utilization']:.0f} % | "
        lines[-1] += (f"{100 * full['ttft_utilization']:.0f} % |" if full else f"{dash} |")
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


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ppl", action="append", default=[], help="NAME=FILE.json")
    ap.add_argument("--passkey", help="FILE.json")
    ap.add_argument("--out", default="docs")
    ap.add_argument("--efficiency", help="FILE.json from `sharedllm eval efficiency`")
    a = ap.parse_args()
    runs = []
    for spec in a.ppl:
        name, path = spec.split("=", 1)
        runs.append((name, json.load(open(path))))
    passkey = json.load(open(a.passkey)) if a.passkey else None
    os.makedirs(a.out, exist_ok=True)
    efficiency = json.load(open(a.efficiency)) if a.efficiency else None
    with tempfile.TemporaryDirectory() as tmp:
        if efficiency:
            efficiency_plots(efficiency, a.out, tmp)
        if runs:
            plots = []
            for name, r in runs:
                dat = os.path.join(tmp, name + ".dat")
                with open(dat, "w") as f:
                    for p in r["points"]:
                        f.write(f"{p['length_multiple']} {p['sharedllm_ppl']} {p['truncated_ppl']}\n")
                plots.append(f"'{dat}' using 1:2 with linespoints title '{name}: SharedLLM'")
                plots.append(f"'{dat}' using 1:3 with linespoints dashtype 2 title '{name}: truncated base'")
                full = [p for p in r["points"] if "full_yarn_ppl" in p]
                if full:
                    fdat = os.path.join(tmp, name + "-full.dat")
                    with open(fdat, "w") as f:
                        for p in full:
                            f.write(f"{p['length_multiple']} {p['full_linear_ppl']} {p['full_yarn_ppl']}\n")
                    plots.append(f"'{fdat}' using 1:2 with linespoints dashtype 3 title '{name}: full attn PI'")
                    plots.append(f"'{fdat}' using 1:3 with linespoints dashtype 4 title '{name}: full attn YaRN'")
            gnuplot(f"""set terminal png size 800,500
set output '{a.out}/ppl_vs_length.png'
set logscale x 2
set logscale y
set xlabel 'document length (multiples of the window W)'
set ylabel 'perplexity of the last W/16 tokens'
set key outside
plot {', '.join(plots)}
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
        f.write("# Results\n\nGenerated by `tools/make_results.py` from the evaluation JSON listed "
                "below; do not edit by hand.\n\n")
        if runs:
            f.write("## Perplexity (CEPE/SharedLLM protocol)\n\n")
            f.write("Sources: " + ", ".join(f"`{n}` = {r['shard']}" for n, r in runs) +
                    f"; model `{runs[0][1]['model']}`, window W = {runs[0][1]['window']}.\n\n")
            f.write(ppl_table(runs) + "\n\n![perplexity vs length](ppl_vs_length.png)\n\n")
        if passkey:
            f.write("## Pass-key retrieval\n\n")
            f.write(f"Model `{passkey['model']}`, window W = {passkey['window']}. Cells: SharedLLM "
                    "correct/trials (truncated base model correct).\n\n")
            f.write(passkey_table(passkey) + "\n\n![pass-key heat map](passkey_heatmap.png)\n")
        if efficiency:
            f.write("\n" + efficiency_section(efficiency))


if __name__ == "__main__":
    main()
