#!/usr/bin/env python3
"""loadtest/lib/soak_judge.py: the soak's verdict, and the same rules applied to recorded runs.

  soak_judge.py verdict CSV MD K6_STATUS MAX_GROWTH_KB_PER_MIN DURATION RSS_CSV LOAD_END_S
      (what soak.sh runs: writes MD, prints it, exits 1 on FAIL)
  soak_judge.py rejudge CSV...
      (one line per recorded run: the judge of soak.sh before 2026-12-06, the Theil-Sen slope of
      the 10 s samples over the second half of the load, and today's, the Theil-Sen slope from
      30 % of the load to its end over the per-second samples, or over the 10 s samples for runs
      recorded without them; the load's end is taken as its last 10 s sample)
"""
import csv
import os
import statistics
import sys


def theil_sen(xs, ys):
    pairs = sorted((ys[j] - ys[i]) / (xs[j] - xs[i])
                   for i in range(len(xs)) for j in range(i + 1, len(xs)) if xs[j] != xs[i])
    return (pairs[len(pairs) // 2] + pairs[(len(pairs) - 1) // 2]) / 2 if pairs else 0.0

def least_squares(xs, ys):
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def rows_of(path):
    rows = list(csv.DictReader(open(path)))
    return rows, [r for r in rows if r["phase"] == "load"], [r for r in rows if r["phase"] == "after"]


def per_second(rss_path):
    return [(int(r["t_s"]), int(r["rss_kb"])) for r in csv.DictReader(open(rss_path))
            if r["rss_kb"] not in ("", "0")]


def after_warm_up(samples, load_end):
    """The judged slope: Theil-Sen over (t_s, rss_kb) samples from 30 % of the load to its end."""
    judged = [(t / 60, v) for t, v in samples if 0.3 * load_end <= t < load_end]
    slope = theil_sen([x for x, _ in judged], [y for _, y in judged]) if len(judged) >= 3 else 0.0
    return slope, len(judged)


def second_half_10s(load):
    half = load[len(load) // 2:]
    xs, ys = [int(r["t_s"]) / 60 for r in half], [int(r["rss_kb"]) for r in half]
    return (theil_sen(xs, ys), least_squares(xs, ys)) if len(half) >= 3 else (0.0, 0.0)


def verdict(path, md, k6_status, max_growth, duration, rss_path, load_end):
    rows, load, after = rows_of(path)
    # Steady growth is judged by the Theil-Sen slope (the median of every pairwise slope) of the
    # per-second RSS from 30 % of the load to its end: the first 30 % is warm-up (the wallet's index
    # filling to memory.max_records). Not the second half alone: RSS also swings by ~10 MB over
    # minutes (the index's rebuild cycle beating with the memory log's compactions), and five
    # minutes cannot tell such a swing from a trend, while seven can. A transient spike moves a
    # median of slopes by nothing. The per-minute medians of the second half are printed, and the
    # 10 s samples' least-squares slope over it, for comparison with older runs.
    per_s = per_second(rss_path)
    slope, judged = after_warm_up(per_s, load_end)
    minutes = []
    m = load_end / 2
    while m + 60 <= load_end:
        window = [v for t, v in per_s if m <= t < m + 60]
        if window:
            minutes.append(statistics.median(window))
        m += 60
    _, lsq = second_half_10s(load)
    held_after = [int(r["held"]) for r in after[1:]]  # allow the first 10 s after load to settle
    failures = []
    if k6_status != 0:
        failures.append(f"k6 exited {k6_status} (thresholds or checks failed)")
    if slope > max_growth:
        failures.append(f"RSS grows {slope:.0f} kB/min after the warm-up (limit {max_growth:.0f})")
    if any(h > 0 for h in held_after):
        failures.append(f"credits still held after the load stopped: {held_after}")
    rss = [int(r["rss_kb"]) for r in rows]
    lines = [f"# soak: fleet.js for {duration}", "",
             f"- verdict: {'PASS' if not failures else 'FAIL: ' + '; '.join(failures)}",
             f"- RSS: idle {rss[0] / 1024:.1f} MB, peak {max(rss) / 1024:.1f} MB, end of load "
             f"{int(load[-1]['rss_kb']) / 1024 if load else 0:.1f} MB, 60 s after {int(after[-1]['rss_kb']) / 1024 if after else 0:.1f} MB",
             f"- RSS slope from 30 % of the load to its end: {slope:+.0f} kB/min (Theil-Sen over {judged} per-second samples; limit {max_growth:.0f})",
             f"- second half of the load: per-minute median RSS " + ", ".join(f"{y / 1024:.1f}" for y in minutes) + f" MB; least squares of the 10 s samples {lsq:+.0f} kB/min",
             f"- held credits after the load: {held_after}",
             f"- credits spent: {int(rows[0]['credits']) - int(rows[-1]['credits']):,}",
             f"- samples: `{path.split('/')[-1]}` (every 10 s), `{rss_path.split('/')[-1]}` (RSS every second)"]
    open(md, "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if failures else 0


def rejudge(paths):
    for path in (p for p in paths if not p.endswith(".rss.csv")):
        _, load, _ = rows_of(path)
        old, _ = second_half_10s(load)
        load_end = int(load[-1]["t_s"])
        rss_path = path[:-len(".csv")] + ".rss.csv"
        if os.path.exists(rss_path):
            new, n = after_warm_up(per_second(rss_path), load_end)
            how = f"{n} per-second samples"
        else:
            new, n = after_warm_up([(int(r["t_s"]), int(r["rss_kb"])) for r in load], load_end)
            how = f"{n} samples 10 s apart"
        print(f"{os.path.basename(path)}: load {load_end / 60:.1f} min; second half, 10 s samples "
              f"{old:+.0f} kB/min; from 30 % {new:+.0f} kB/min ({how})")


if __name__ == "__main__":
    if sys.argv[1:2] == ["verdict"] and len(sys.argv) == 9:
        a = sys.argv[2:]
        sys.exit(verdict(a[0], a[1], int(a[2]), float(a[3]), a[4], a[5], int(a[6])))
    if sys.argv[1:2] == ["rejudge"] and len(sys.argv) > 2:
        rejudge(sys.argv[2:])
        sys.exit(0)
    sys.exit(__doc__)
