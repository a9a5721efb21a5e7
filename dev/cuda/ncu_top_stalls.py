# The instructions where warps stall most, from an ncu report's source page (SASS view), e.g.
#   ncu -i rep.ncu-rep --page source --csv --print-source sass | python3 dev/cuda/ncu_top_stalls.py [N]
# Prints the CSV header's stall-sampling columns it found, then the top N instructions by "Warp Stall Sampling
# (All Samples)" with their share of all samples and the SASS text, then the samples summed by opcode.
import csv
import sys
from collections import Counter

n = int(sys.argv[1]) if len(sys.argv) > 1 else 30
rows = list(csv.reader(sys.stdin))
head = next((i for i, r in enumerate(rows) if any("Stall Sampling" in c for c in r)), None)
if head is None:
    print("no stall-sampling column; first lines:", rows[:3])
    sys.exit(1)
h = rows[head]
col = next(i for i, c in enumerate(h) if "Stall Sampling" in c and "Not" not in c)
src = next((i for i, c in enumerate(h) if c.strip().lower() in ("source", "sass")), 1)
adr = next((i for i, c in enumerate(h) if "Address" in c), 0)
print("columns:", [c for c in h if "Stall" in c or "Sampl" in c], "| using", h[col], "and", h[src])
data = []
for r in rows[head + 1:]:
    if len(r) <= max(col, src):
        continue
    try:
        v = float(r[col].replace(",", "") or 0)
    except ValueError:
        continue
    data.append((v, r[adr], r[src].strip()))
total = sum(v for v, _, _ in data) or 1.0
for v, a, s in sorted(data, reverse=True)[:n]:
    print("%6.2f%%  %8d  %s  %s" % (100 * v / total, v, a, s[:90]))
ops = Counter()
for v, _, s in data:
    ops[s.split()[0].split(".")[0] if s and not s.startswith("@") else (s.split()[1].split(".")[0] if len(s.split()) > 1 else "?")] += v
print("by opcode:", ", ".join("%s %.1f%%" % (k, 100 * v / total) for k, v in ops.most_common(12)))
