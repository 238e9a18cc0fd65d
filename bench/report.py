#!/usr/bin/env python3
"""report.py RESULTS_DIR OUT.json SWEEP.dat: the ratio table of bench/run.sh.

Reads the coapdev bench --json reports NAME.json of one run (and NAME.cpu,
the CPU seconds of server and generator during it), prints the table
ours/libcoap and how busy each side's core was, writes them all (with machine
facts and the load average) to OUT.json and the load sweep as gnuplot data
(offered, req/s and p99 of each side)."""
import glob, json, os, platform, subprocess, sys

rdir, out, dat = sys.argv[1:4]
r = {}
for f in sorted(glob.glob(os.path.join(rdir, "*.json"))):
    try:
        r[os.path.basename(f)[:-5]] = json.load(open(f))
    except ValueError:
        r[os.path.basename(f)[:-5]] = {}

# NAME.cpu (bench/run.sh): wall seconds, generator user and system CPU
# seconds, server CPU ticks (1/100 s) during the run.
for f in sorted(glob.glob(os.path.join(rdir, "*.cpu"))):
    try:
        wall, user, sys_, ticks = open(f).read().split()[:4]
        r.setdefault(os.path.basename(f)[:-4], {})["cpu"] = {
            "wallSec": float(wall), "generatorCPUSec": float(user) + float(sys_), "serverCPUSec": int(ticks) / 100}
    except (ValueError, OSError):
        pass

def g(name, *path):
    v = r.get(name, {})
    for p in path:
        v = v.get(p, 0) if isinstance(v, dict) else 0
    return v or 0

def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"

rows = [
    ("(a) plain CoAP req/s: token publish + durable store vs coap-server-notls", g("a-ours", "reqPerSec"), g("a-libcoap", "reqPerSec"), True),
    ("(b) DTLS-PSK req/s, established sessions, CBC_SHA256 vs coap-server-gnutls", g("b-ours", "reqPerSec"), g("b-libcoap", "reqPerSec"), True),
    ("(c) full PSK handshakes/s vs coap-server-openssl", g("c-ours", "handshakesPerSec"), g("c-libcoap", "handshakesPerSec"), True),
    ("(e) idle DTLS session, server RSS bytes each", g("e-ours", "idle", "bytesPerSession"), g("e-libcoap", "idle", "bytesPerSession"), False),
]
ours = [
    ("(f) DTLS publish (CCM_8) vs token publish (a), req/s", g("f-ours", "reqPerSec"), g("a-ours", "reqPerSec")),
]
print()
print("%-74s %10s %10s %7s" % ("measure", "ours", "libcoap", "ratio"))
table = []
for name, a, b, higher in rows:
    ratio = a / b if b else 0
    table.append({"measure": name, "ours": a, "libcoap": b, "ratio": ratio, "higherIsBetter": higher})
    print("%-74s %10.0f %10.0f %6.2fx" % (name, a, b, ratio))
print("%-74s %10s %10s %7s" % ("", "A", "B", "A/B"))
for name, a, b in ours:
    ratio = a / b if b else 0
    table.append({"measure": name, "a": a, "b": b, "ratio": ratio, "higherIsBetter": True})
    print("%-74s %10.0f %10.0f %6.2fx" % (name, a, b, ratio))
half = r.get("d-ours-half", {})
print("%-74s %10s" % ("(d) ours at half max rate (%.0f req/s offered): p50 / p99 ms" % half.get("offeredRate", 0),
      "%.2f / %.2f" % (g("d-ours-half", "latencyMs", "p50"), g("d-ours-half", "latencyMs", "p99"))))
print("%-74s %10.0f" % ("    token publish, symmetric mode (5682) req/s", g("a-ours-symmetric", "reqPerSec")))
print("core busy during the run (CPU seconds / wall seconds, warm-up and set-up included): server / generator")
for n in ("a-libcoap", "a-ours", "b-libcoap", "b-ours", "f-ours", "c-libcoap", "c-ours"):
    c = r.get(n, {}).get("cpu")
    if c and c["wallSec"] > 0:
        print("    %-12s %5.0f%% / %5.0f%%  (%.1f s)" % (n, 100 * c["serverCPUSec"] / c["wallSec"], 100 * c["generatorCPUSec"] / c["wallSec"], c["wallSec"]))
failed = [n for n, v in r.items() if not v.get("mode") or (v.get("ok", 0) == 0 and not v.get("handshakes") and not v.get("idle"))]
if failed:
    print("runs without a successful request:", ", ".join(failed))

machine = {
    "loadavgStart": os.environ.get("BENCH_LOAD_START", "").split(),
    "loadavgEnd": open("/proc/loadavg").read().split()[:3],
    "nproc": os.cpu_count(), "cpu": cpu_model(), "kernel": platform.release(),
    "go": subprocess.run(["go", "version"], capture_output=True, text=True).stdout.strip(),
}
json.dump({"machine": machine, "table": table, "runs": r}, open(out, "w"), indent=2)
print("results:", out)

with open(dat, "w") as f:
    for side in ("libcoap", "ours"):
        f.write("# %s: offered req/s, achieved req/s, p99 ms\n" % side)
        pts = sorted((v.get("offeredRate", 0), v.get("reqPerSec", 0), v.get("latencyMs", {}).get("p99", 0))
                     for n, v in r.items() if n.startswith("sweep-%s-" % side))
        for p in pts:
            f.write("%.0f %.0f %.3f\n" % p)
        f.write("\n\n")
