#!/usr/bin/env python3
"""Turn scripts/bench's raw.tsv into Markdown tables (stdout) and a JSON file.

Usage: bench-report.py RESULTS_DIR OUT.json

Times are medians over runs; ratios are computed within each run (same run, same
machine state) and the median of those per-run ratios is reported.
"""
import json
import os
import re
import statistics
import sys
from collections import defaultdict

res_dir, out_path = sys.argv[1], sys.argv[2]
rows = []
with open(os.path.join(res_dir, "raw.tsv")) as f:
    for line in f:
        parts = line.rstrip("\n").split("\t")
        if len(parts) == 6:
            rows.append(parts)

machine = {}
mp = os.path.join(res_dir, "machine.txt")
if os.path.exists(mp):
    for line in open(mp):
        if "=" in line:
            k, v = line.rstrip("\n").split("=", 1)
            machine[k] = v

# data[section][tool][run][step][metric] = value
data = defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(dict))))
for sec, tool, run, step, metric, value in rows:
    try:
        v = float(value)
    except ValueError:
        v = value
    data[sec][tool][int(run)][step][metric] = v


def med(xs):
    xs = [x for x in xs if isinstance(x, (int, float))]
    return statistics.median(xs) if xs else None


def fmt_s(x):
    return "—" if x is None else (f"{x:.2f}" if x < 10 else f"{x:.1f}")


def fmt_mb(b):
    return "—" if b is None else f"{b / 1e6:,.0f}"


def fmt_r(x):
    return "—" if x is None else f"{x:.2f}×"


out = {"machine": machine, "files": {}, "ratios": {}, "targets": [], "pg": {}, "pipeline": {}}
md = []

STEPS = ["init", "backup_first", "backup_unchanged", "backup_changed", "restore"]
files = data.get("files", {})
tools = [t for t in ["lifeboat", "restic", "borg", "tarzstd"] if t in files]
if tools:
    ds = files.get("dataset", {}).get(0, {}).get("info", {})
    if ds:
        md.append(
            f"Data set: {int(ds.get('files', 0)):,} files, {ds.get('bytes', 0) / 1e6:,.0f} MB; "
            f"the 5% step changes {int(ds.get('changed_files', 0)):,} files."
        )
        out["files"]["dataset"] = ds
    runs_n = max(len(files[t]) for t in tools)
    md.append(f"\n### Files: medians of {runs_n} run(s) — wall seconds (peak RSS MB)\n")
    md.append("| step | " + " | ".join(tools) + " |")
    md.append("|---|" + "---:|" * len(tools))
    summary = {}
    for t in tools:
        runs = files[t]
        s = {}
        for step in STEPS:
            s[step] = {
                "wall_s": med([runs[r][step].get("wall_s") for r in runs]),
                "rss_mb": (lambda v: v / 1024 if v is not None else None)(
                    med([runs[r][step].get("rss_kib") for r in runs])
                ),
                "cpu_s": med([runs[r][step].get("cpu_s") for r in runs]),
            }
        s["repo_bytes"] = med([runs[r]["repo"].get("bytes") for r in runs])
        s["peak_rss_mb"] = med(
            [max(runs[r][st].get("rss_kib", 0) for st in STEPS) / 1024 for r in runs]
        )
        s["restore_identical"] = all(runs[r]["restore"].get("identical") == 1 for r in runs if "identical" in runs[r]["restore"])
        s["runs"] = {r: {st: dict(runs[r][st]) for st in runs[r]} for r in runs}
        summary[t] = s
    out["files"]["tools"] = summary
    for step in STEPS:
        cells = []
        for t in tools:
            x = summary[t][step]
            cells.append(f"{fmt_s(x['wall_s'])} ({x['rss_mb']:.0f})" if x["wall_s"] is not None else "—")
        md.append(f"| {step} | " + " | ".join(cells) + " |")
    for step in STEPS[1:]:
        md.append(f"| CPU s (user+sys), {step} | " + " | ".join(fmt_s(summary[t][step]["cpu_s"]) for t in tools) + " |")
    md.append("| repository MB | " + " | ".join(fmt_mb(summary[t]["repo_bytes"]) for t in tools) + " |")
    md.append("| peak RSS MB (any step) | " + " | ".join(f"{summary[t]['peak_rss_mb']:.0f}" for t in tools) + " |")
    md.append("| restore identical | " + " | ".join("yes" if summary[t]["restore_identical"] else "**NO**" for t in tools) + " |")
    md.append("\n(tarzstd: every backup is a full `tar | zstd -T0 -3`; its repository size is one archive.)")

    if "lifeboat" in tools:
        lb = files["lifeboat"]
        md.append("\n### Ratios: peer time ÷ Lifeboat time (>1 = Lifeboat faster); sizes and RSS Lifeboat ÷ peer\n")
        peers = [t for t in tools if t != "lifeboat"]
        md.append("| measure | " + " | ".join(f"vs {p}" for p in peers) + " |")
        md.append("|---|" + "---:|" * len(peers))
        ratios = {}
        for p in peers:
            pr = files[p]
            common = sorted(set(lb) & set(pr))
            r = {}
            for step in STEPS[1:]:
                vals = [pr[k][step]["wall_s"] / lb[k][step]["wall_s"] for k in common
                        if lb[k][step].get("wall_s") and pr[k][step].get("wall_s") is not None]
                r[f"speedup_{step}"] = med(vals)
            for step in STEPS[1:]:
                vals = [pr[k][step]["cpu_s"] / lb[k][step]["cpu_s"] for k in common
                        if lb[k][step].get("cpu_s") and pr[k][step].get("cpu_s") is not None]
                r[f"cpu_ratio_{step}"] = med(vals)
            r["repo_size_ratio"] = med([lb[k]["repo"]["bytes"] / pr[k]["repo"]["bytes"] for k in common])
            r["peak_rss_ratio"] = med([
                max(lb[k][s].get("rss_kib", 0) for s in STEPS) / max(pr[k][s].get("rss_kib", 1) for s in STEPS)
                for k in common
            ])
            ratios[p] = r
        out["ratios"] = ratios
        for key, label in [
            ("speedup_backup_first", "first backup speed-up"),
            ("speedup_backup_unchanged", "unchanged re-backup speed-up"),
            ("speedup_backup_changed", "5%-changed backup speed-up"),
            ("speedup_restore", "restore speed-up"),
            ("cpu_ratio_backup_first", "first backup CPU-time ratio (peer ÷ Lifeboat)"),
            ("cpu_ratio_backup_unchanged", "unchanged re-backup CPU-time ratio"),
            ("cpu_ratio_backup_changed", "5%-changed backup CPU-time ratio"),
            ("cpu_ratio_restore", "restore CPU-time ratio"),
            ("repo_size_ratio", "repository size ratio"),
            ("peak_rss_ratio", "peak RSS ratio"),
        ]:
            md.append(f"| {label} | " + " | ".join(fmt_r(ratios[p][key]) for p in peers) + " |")

        def target(name, value, ok):
            out["targets"].append({"target": name, "value": value, "met": ok})

        rr = ratios.get("restic", {})
        bb = ratios.get("borg", {})
        tz = ratios.get("tarzstd", {})

        def ge(x, y):
            return None if x is None else x >= y

        def le(x, y):
            return None if x is None else x <= y

        target("first backup >= 2x restic", rr.get("speedup_backup_first"), ge(rr.get("speedup_backup_first"), 2))
        target("first backup >= 3x borg", bb.get("speedup_backup_first"), ge(bb.get("speedup_backup_first"), 3))
        target("repository <= restic's", rr.get("repo_size_ratio"), le(rr.get("repo_size_ratio"), 1))
        target("unchanged re-backup >= 5x restic", rr.get("speedup_backup_unchanged"), ge(rr.get("speedup_backup_unchanged"), 5))
        target("5%-changed backup >= 3x restic", rr.get("speedup_backup_changed"), ge(rr.get("speedup_backup_changed"), 3))
        target("restore >= 3x restic", rr.get("speedup_restore"), ge(rr.get("speedup_restore"), 3))
        target("restore faster than zstd -d \\| tar -x", tz.get("speedup_restore"), None if tz.get("speedup_restore") is None else tz["speedup_restore"] > 1)
        target("peak RSS <= restic's", rr.get("peak_rss_ratio"), le(rr.get("peak_rss_ratio"), 1))

# ---------------------------------------------------------------- PostgreSQL
pg = data.get("pg", {})
if pg:
    md.append("\n### PostgreSQL (pgbench)\n")
    db = pg.get("postgres", {}).get(1, {})
    if db.get("db"):
        md.append(f"Database size {db['db']['bytes'] / 1e6:,.0f} MB (pg_database_size); "
                  f"pgbench -i {fmt_s(db.get('pgbench_init', {}).get('wall_s'))} s; "
                  f"traffic {fmt_s(db.get('pgbench_traffic', {}).get('wall_s'))} s.")
    tool_runs = {t: sorted(r for r in pg.get(t, {}) if pg[t][r].get("dump1")) for t in pg}
    n_runs = max((len(v) for v in tool_runs.values()), default=0)
    md.append(f"\nMedians of {n_runs} run(s) per round; each first dump goes into a new repository, "
              "each second one into a copy of the repository the last first dump left.\n")
    md.append("| method | 1st: time s | 1st: stored MB | 2nd (after traffic): time s | 2nd: stored growth MB | peak RSS MB |")
    md.append("|---|---:|---:|---:|---:|---:|")

    def pg_med(t, step, metric):
        return med([pg[t][r].get(step, {}).get(metric) for r in pg.get(t, {})])

    for t, label in [("pg_dump_plain", "pg_dump (plain) > /dev/null"), ("pg_dump_Fc", "pg_dump -Fc to a file"),
                     ("lifeboat", "lifeboat backup postgres (plain dump; largest tables read directly)"), ("restic", "pg_dump \\| restic backup --stdin")]:
        if not tool_runs.get(t):
            continue
        d1 = {m: pg_med(t, "dump1", m) for m in ("wall_s", "bytes", "rss_kib", "cpu_s")}
        d2 = {m: pg_med(t, "dump2", m) for m in ("wall_s", "bytes", "rss_kib", "cpu_s")}
        rss = max(pg[t][r].get(d, {}).get("rss_kib", 0) for r in pg[t] for d in ("dump1", "dump2")) / 1024
        md.append(f"| {label} | {fmt_s(d1['wall_s'])} | {fmt_mb(d1['bytes'])} | {fmt_s(d2['wall_s'])} | "
                  f"{fmt_mb(d2['bytes'])} | {rss:.0f} |")
        out["pg"][t] = {"dump1": d1, "dump2": d2,
                        "runs": {r: {d: pg[t][r].get(d, {}) for d in ("dump1", "dump2")} for r in tool_runs[t]}}

    def per_run(step):
        """pg_dump -Fc time / Lifeboat time, within each run."""
        xs = []
        for r in tool_runs.get("lifeboat", []):
            lb = pg["lifeboat"][r].get(step, {}).get("wall_s")
            fc = pg.get("pg_dump_Fc", {}).get(r, {}).get(step, {}).get("wall_s")
            if lb and fc:
                xs.append(fc / lb)
        return xs

    first, second = per_run("dump1"), per_run("dump2")
    if first:
        r1 = med(first)
        out["pg"]["Fc_over_lifeboat_first"] = r1
        out["targets"].append({"target": "PostgreSQL logical backup no slower than pg_dump -Fc", "value": r1, "met": r1 >= 1})
        line = (f"\npg_dump -Fc time / Lifeboat time (median of per-run ratios; above 1: Lifeboat faster): "
                f"{r1:.2f} first (runs {', '.join(f'{x:.2f}' for x in first)})")
        if second:
            r2 = med(second)
            out["pg"]["Fc_over_lifeboat_second"] = r2
            lb2, fc2 = pg_med("lifeboat", "dump2", "bytes"), pg_med("pg_dump_Fc", "dump2", "bytes")
            line += f", {r2:.2f} second (runs {', '.join(f'{x:.2f}' for x in second)})"
            if lb2 is not None and fc2:
                line += f"; a second backup stores {lb2 / fc2:.1%} of what a second -Fc file takes"
        md.append(line + ".")

# ---------------------------------------------------------------- pipeline
pipe = data.get("pipeline", {})
if pipe:
    md.append("\n### Raw pipeline (1 GiB from /dev/shm into a repository in /dev/shm), MB/s (10^6 B/s)\n")
    md.append("zstd and openssl report their own (wall-clock) speeds; the others are bytes ÷ CPU seconds unless marked wall.\n")
    inputs = [i for i in ["random", "tar"] if i in pipe]
    md.append("| engine / library | " + " | ".join(f"{i} input" for i in inputs) + " |")
    md.append("|---|" + "---:|" * len(inputs))
    speeds = defaultdict(dict)
    for i in inputs:
        size = pipe[i][0]["input"]["bytes"]
        for t in ["lifeboat_1", "lifeboat_all", "b3sum_1"]:
            r = pipe.get(t, {}).get(1, {}).get(i)
            if r and r.get("wall_s"):
                speeds[t + "_wall"][i] = size / r["wall_s"] / 1e6
            if r and r.get("cpu_s"):
                # per CPU-second: robust on a shared machine, and "per core" by definition
                speeds[t][i] = size / r["cpu_s"] / 1e6
        z = pipe.get("zstd_b3", {}).get(1, {}).get(i, {}).get("raw")
        if isinstance(z, str):
            m = re.search(r"([\d.]+) MB/s\s*,\s*([\d.]+) MB/s", z)
            if m:
                speeds["zstd3_compress_1"][i] = float(m.group(1))
                speeds["zstd3_decompress_1"][i] = float(m.group(2))
            mr = re.search(r"\(x?\s*([\d.]+)\)", z)
            if mr:
                speeds["zstd3_ratio"][i] = float(mr.group(1))
    for i in inputs:
        r = pipe.get("zstd3_cli_1", {}).get(1, {}).get(i)
        if r and r.get("cpu_s"):
            speeds["zstd3_cli_1"][i] = r["input_bytes"] / r["cpu_s"] / 1e6
    o = pipe.get("openssl_aes256gcm", {}).get(1, {}).get("16k", {}).get("raw")
    if isinstance(o, str):
        m = re.findall(r"([\d.]+)k", o)
        if m:
            for i in inputs:
                speeds["aes256gcm_1"][i] = float(m[-1]) / 1000
    labels = [("lifeboat_1", "lifeboat backup --stdin, 1 core (taskset), per CPU-second"),
              ("lifeboat_1_wall", "lifeboat backup --stdin, 1 core (taskset), wall"),
              ("lifeboat_all", "lifeboat backup --stdin, all cores, per CPU-second"),
              ("lifeboat_all_wall", "lifeboat backup --stdin, all cores, wall"),
              ("b3sum_1", "b3sum --num-threads 1, per CPU-second"), ("zstd3_compress_1", "zstd -b3 compress (1 thread)"),
              ("zstd3_decompress_1", "zstd -b3 decompress (1 thread)"),
              ("zstd3_cli_1", "zstd -3 -T1 file > /dev/null, per CPU-second"), ("aes256gcm_1", "openssl speed aes-256-gcm 16 KiB (1 core)")]
    for k, label in labels:
        if k in speeds:
            md.append(f"| {label} | " + " | ".join(f"{speeds[k].get(i, 0):,.0f}" for i in inputs) + " |")
    if "zstd3_ratio" in speeds:
        md.append("| (zstd -3 ratio on a 256 MiB sample) | " + " | ".join(f"{speeds['zstd3_ratio'].get(i, 0):.2f}" for i in inputs) + " |")
    for i in inputs:
        parts = [speeds[k][i] for k in ["b3sum_1", "aes256gcm_1"] if i in speeds.get(k, {})]
        if i in speeds.get("zstd3_cli_1", {}):
            parts.append(speeds["zstd3_cli_1"][i])
        elif "zstd3_compress_1" in speeds and i in speeds["zstd3_compress_1"]:
            parts.append(speeds["zstd3_compress_1"][i])
        if parts and i in speeds.get("lifeboat_1", {}):
            limit = 1 / sum(1 / p for p in parts)
            speeds["serial_limit_1"][i] = limit
            md.append(f"\n{i}: one core could do hash+compress+encrypt in series at {limit:,.0f} MB/s "
                      f"(1/Σ 1/speed, chunking not counted); Lifeboat does (per CPU-second) {speeds['lifeboat_1'][i]:,.0f} MB/s "
                      f"= {speeds['lifeboat_1'][i] / limit:.0%} of it.")
    out["pipeline"] = speeds

# ---------------------------------------------------------------- targets
if out["targets"]:
    md.append("\n### Targets\n")
    md.append("| target | measured | met |")
    md.append("|---|---:|:---:|")
    for t in out["targets"]:
        v = t["value"]
        vs = "—" if v is None else f"{v:.2f}"
        met = "—" if t["met"] is None else ("yes" if t["met"] else "**no**")
        md.append(f"| {t['target']} | {vs} | {met} |")

scale = os.path.join(res_dir, "logs", "index-scale.txt")
if os.path.exists(scale):
    md.append("\n### Index scale (crates/core/examples/index_scale)\n\n```")
    md.append(open(scale).read().rstrip())
    md.append("```")
    out["index_scale"] = open(scale).read()

text = "\n".join(md) + "\n"
with open(os.path.join(res_dir, "report.md"), "w") as f:
    f.write(text)
with open(out_path, "w") as f:
    json.dump(out, f, indent=2, default=str)
print(text)
