#!/usr/bin/env python3
"""clusterstat.py: counters around each run of bench/cluster.sh.

  clusterstat.py snap OUT.json [--api NAME=URL]... [--pids NAME=PID[,PID]]...
                 [--pg PORT:POSTMASTER_PID] [--nats MONITOR_URL]
      one snapshot: gateway metrics (stored uplinks, group commits,
      handshakes), CPU ticks of each process group (a PID counts with its
      children, e.g. nginx's workers), PostgreSQL's pg_stat_database /
      pg_stat_wal and the CPU of every backend of its postmaster, NATS
      /varz message counters, /proc/loadavg.

  clusterstat.py report RESULTS_DIR OUT.json
      for every run NAME (NAME.json from coapdev bench --json, NAME.before.json,
      NAME.after.json, NAME.gen with the generator's CPU seconds) the
      differences per run and per stored uplink; prints markdown tables
      (each repetition and the median) and writes everything to OUT.json.
"""
import glob, json, os, platform, re, statistics, subprocess, sys, time, urllib.request

TICK = os.sysconf("SC_CLK_TCK")


def proc_stat(pid):
    """(ppid, utime+stime ticks, cutime+cstime ticks) of pid, or None."""
    try:
        s = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    f = s[s.rindex(")") + 2:].split()  # fields from 3 (state) on
    return int(f[1]), int(f[11]) + int(f[12]), int(f[13]) + int(f[14])


def children():
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = proc_stat(d)
            if st:
                kids.setdefault(st[0], []).append(int(d))
    return kids


def group_ticks(pids, kids):
    """CPU ticks of pids and their direct children (live ones, plus the
    reaped ones the parents account for)."""
    total = 0
    for p in pids:
        st = proc_stat(p)
        if not st:
            continue
        total += st[1] + st[2]
        for c in kids.get(p, []):
            cs = proc_stat(c)
            if cs:
                total += cs[1]
    return total


def metrics(url):
    out = {"stored": 0.0, "batch_sum": 0.0, "batch_count": 0.0, "handshakes": 0.0, "overload": 0.0}
    try:
        text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    except OSError as e:
        out["error"] = str(e)
        return out
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        parts = line.rsplit(" ", 1)
        if len(parts) != 2:
            continue
        name, v = parts
        try:
            v = float(v)
        except ValueError:
            continue
        if name.startswith("coapgate_publish_total{") and 'result="stored"' in name:
            out["stored"] += v
        elif name.startswith("coapgate_ingest_batch_size_sum"):
            out["batch_sum"] += v
        elif name.startswith("coapgate_ingest_batch_size_count"):
            out["batch_count"] += v
        elif name.startswith("coapgate_dtls_handshakes_total"):
            out["handshakes"] += v
        elif name.startswith("coapgate_coap_overload_total"):
            out["overload"] += v
    return out


def pg(port):
    q = ("select (select sum(xact_commit) from pg_stat_database), "
         "(select sum(xact_rollback) from pg_stat_database), "
         "(select sum(tup_inserted) from pg_stat_database), "
         "wal_records, wal_fpi, wal_bytes, pg_current_wal_lsn(), "
         "(select sum(pg_database_size(datname)) from pg_database) from pg_stat_wal")
    r = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", "postgres", "-Atc", q],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        return {"error": r.stderr.strip()}
    f = r.stdout.strip().split("|")
    v = dict(zip(["xact_commit", "xact_rollback", "tup_inserted", "wal_records", "wal_fpi", "wal_bytes"], [float(x or 0) for x in f[:6]]))
    v["lsn"] = f[6]
    v["db_bytes"] = float(f[7] or 0)
    return v


def nats(url):
    try:
        v = json.load(urllib.request.urlopen(url + "/varz", timeout=10))
    except OSError as e:
        return {"error": str(e)}
    return {k: v.get(k, 0) for k in ("in_msgs", "out_msgs", "in_bytes", "out_bytes")}


def snap(argv):
    out_path, args = argv[0], argv[1:]
    kids = children()
    s = {"time": time.time(), "loadavg": open("/proc/loadavg").read().split()[:3], "api": {}, "cpu": {}}
    i = 0
    while i < len(args):
        flag, val = args[i], args[i + 1]
        i += 2
        if flag == "--api":
            name, url = val.split("=", 1)
            s["api"][name] = metrics(url)
        elif flag == "--pids":
            name, pids = val.split("=", 1)
            s["cpu"][name] = group_ticks([int(p) for p in pids.split(",") if p], kids)
        elif flag == "--pg":
            port, pm = val.split(":")
            s["pg"] = pg(port)
            s["cpu"]["postgres"] = group_ticks([int(pm)], kids)
        elif flag == "--nats":
            s["nats"] = nats(val)
        else:
            sys.exit(f"unknown flag {flag}")
    json.dump(s, open(out_path, "w"))


def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


def diff(b, a):
    d = {"seconds": a["time"] - b["time"], "cpu_s": {}, "api": {}}
    for k in a["cpu"]:
        d["cpu_s"][k] = (a["cpu"][k] - b["cpu"].get(k, 0)) / TICK
    for k in ("stored", "batch_sum", "batch_count", "handshakes", "overload"):
        d["api"][k] = sum(a["api"][n].get(k, 0) - b["api"].get(n, {}).get(k, 0) for n in a["api"])
    d["per_node_stored"] = {n: a["api"][n]["stored"] - b["api"].get(n, {}).get("stored", 0) for n in a["api"]}
    if "pg" in a and "error" not in a["pg"] and "error" not in b.get("pg", {"error": 1}):
        d["pg"] = {k: a["pg"][k] - b["pg"][k] for k in a["pg"] if k != "lsn"}
    if "nats" in a and "error" not in a["nats"] and "error" not in b.get("nats", {"error": 1}):
        d["nats"] = {k: a["nats"][k] - b["nats"][k] for k in a["nats"]}
    d["loadavg"] = [b["loadavg"][0], a["loadavg"][0]]
    return d


def report(argv):
    rdir, out = argv
    runs = {}
    for f in sorted(glob.glob(os.path.join(rdir, "*.before.json"))):
        name = os.path.basename(f)[: -len(".before.json")]
        try:
            b = json.load(open(f))
            a = json.load(open(os.path.join(rdir, name + ".after.json")))
            gen = json.load(open(os.path.join(rdir, name + ".json")))
        except (OSError, ValueError) as e:
            runs[name] = {"error": str(e)}
            continue
        d = diff(b, a)
        try:
            d["cpu_s"]["generator"] = float(open(os.path.join(rdir, name + ".gen")).read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
        d["gen"] = gen
        runs[name] = d

    def per(d, key):
        """derived figures of one run."""
        st = d["api"]["stored"]
        hs = d["api"]["handshakes"]
        g = d["gen"]
        r = {"rate": g.get("handshakesPerSec") if key == "hs" else g.get("reqPerSec", 0),
             "p50": g.get("latencyMs", {}).get("p50", 0), "p99": g.get("latencyMs", {}).get("p99", 0),
             "ok": g.get("ok", 0), "timeouts": g.get("timeouts", 0), "overload": d["api"]["overload"],
             "stored": st, "handshakes": hs, "load": "%s→%s" % tuple(d["loadavg"])}
        unit = hs if key == "hs" else st
        if d["api"]["batch_count"]:
            r["batch"] = d["api"]["batch_sum"] / d["api"]["batch_count"]
        gw = sum(v for k, v in d["cpu_s"].items() if k.startswith("gw"))
        r["cpu_gw_us"] = gw / unit * 1e6 if unit else 0
        r["cpu_pg_us"] = d["cpu_s"].get("postgres", 0) / unit * 1e6 if unit else 0
        r["cpu_lb_us"] = d["cpu_s"].get("nginx", 0) / unit * 1e6 if unit else 0
        r["cpu_gen_us"] = d["cpu_s"].get("generator", 0) / unit * 1e6 if unit else 0
        r["cpu_total_pct"] = sum(d["cpu_s"].values()) / d["seconds"] * 100 if d["seconds"] else 0
        if "pg" in d and unit:
            p = d["pg"]
            r["xact_per"] = (p["xact_commit"] + p["xact_rollback"]) / unit
            r["wal_b_per"] = p["wal_bytes"] / unit
            r["wal_rec_per"] = p["wal_records"] / unit
            r["fpi_per"] = p["wal_fpi"] / unit
            r["xact_s"] = (p["xact_commit"] + p["xact_rollback"]) / d["seconds"]
            if "db_bytes" in p:
                r["db_b_per"] = p["db_bytes"] / unit
        if "nats" in d:
            r["nats_in_per_s"] = d["nats"]["in_msgs"] / d["seconds"]
        r["per_node"] = d["per_node_stored"]
        return r

    derived = {}
    for name, d in runs.items():
        if "error" in d:
            print(f"{name}: {d['error']}")
            continue
        derived[name] = per(d, "hs" if "-hs-" in name or name.endswith("-hs") else "up")

    # group by NAME minus its -rN suffix
    groups = {}
    for name, r in derived.items():
        base = re.sub(r"-r\d+$", "", name)
        groups.setdefault(base, []).append((name, r))
    cols = [("rate", "req or hs/s", "%.0f"), ("p50", "p50 ms", "%.1f"), ("p99", "p99 ms", "%.1f"),
            ("batch", "batch", "%.1f"), ("cpu_gw_us", "gw µs", "%.0f"), ("cpu_pg_us", "pg µs", "%.0f"),
            ("cpu_lb_us", "nginx µs", "%.0f"), ("cpu_gen_us", "gen µs", "%.0f"),
            ("xact_per", "xact/unit", "%.3f"), ("wal_b_per", "WAL B/unit", "%.0f"),
            ("fpi_per", "FPI/unit", "%.3f"), ("db_b_per", "DB B/unit", "%.0f"), ("xact_s", "xact/s", "%.0f"),
            ("nats_in_per_s", "NATS msg/s", "%.1f"), ("timeouts", "timeouts", "%d"), ("overload", "5.03", "%d"), ("load", "load", "%s")]
    print("| run | " + " | ".join(c[1] for c in cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for base in sorted(groups):
        rows = sorted(groups[base])
        for name, r in rows:
            print(f"| {name} | " + " | ".join((c[2] % r[c[0]]) if c[0] in r else "" for c in cols) + " |")
        if len(rows) > 1:
            med = {}
            for c in cols:
                vals = [r[c[0]] for _, r in rows if c[0] in r and not isinstance(r[c[0]], str)]
                if vals:
                    med[c[0]] = statistics.median(vals)
            print(f"| **{base} median** | " + " | ".join((c[2] % med[c[0]]) if c[0] in med else "" for c in cols) + " |")
    res = {"machine": {"nproc": os.cpu_count(), "cpu": cpu_model(), "kernel": platform.release(),
                       "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
           "runs": runs, "derived": derived}
    json.dump(res, open(out, "w"), indent=1)
    print(f"results: {out}")


if __name__ == "__main__":
    {"snap": snap, "report": report}[sys.argv[1]](sys.argv[2:])
