#!/usr/bin/env python3
"""Reports for scripts/profile-clicks (each prints Markdown):

  cpu OUT                       per-process CPU over the perf window (/proc snapshots)
  server PERF_SCRIPT_TXT        countersign's samples by task and by leaf code
  pgstat BEFORE AFTER           pg_stat_database / user tables / wal deltas, per vote
  activity CSV SECONDS VOTES    pg_stat_activity samples: backends busy per statement class
  statements LOG RATE [BEFORE AFTER]  sampled statement log: calls and server time per class
"""
import collections
import csv
import json
import re
import sys

# --- statement classes ----------------------------------------------------------------------
STATEMENTS = [
    (r"^BEGIN", "BEGIN"),
    (r"^COMMIT", "COMMIT"),
    (r"^ROLLBACK", "ROLLBACK"),
    (r"pg_advisory_xact_lock", "writer: audit chain lock (pg_advisory_xact_lock)"),
    (r"^SELECT seq, hash FROM audit_events", "writer: audit chain tip"),
    (r"FROM proposals WHERE id = ANY", "writer: SELECT proposals (batch)"),
    (r"FROM votes WHERE proposal_id = ANY", "writer: SELECT votes (batch)"),
    (r"^INSERT INTO votes", "writer: INSERT votes"),
    (r"^UPDATE proposals", "writer: UPDATE proposals (lifecycle)"),
    (r"^UPDATE timers t SET fired_at = d\.at", "writer: UPDATE timers (disarm)"),
    (r"^INSERT INTO audit_events", "writer: INSERT audit_events"),
    (r"^INSERT INTO webhook_events", "writer: INSERT webhook_events"),
    (r"^INSERT INTO slack_outbox \(proposal_id, task, due_at, channel\)", "writer: INSERT slack_outbox"),
    (r"^INSERT INTO approval_grants", "writer: INSERT approval_grants"),
    (r"^SELECT id, agent_id, status, content, decision, outcome, created_at, updated_at FROM proposals WHERE id = \$1",
     "click: SELECT proposal (read once per click)"),
    (r"FROM approval_grants WHERE", "click: SELECT approval_grants"),
    (r"^WITH RECURSIVE heads", "outbox: claim (skip scan)"),
    (r"^UPDATE slack_outbox SET done_at = \$1, leased_until = NULL", "outbox: finish job"),
    (r"^UPDATE slack_outbox SET done_at = \$1, last_error", "outbox: coalesce jobs"),
    (r"^UPDATE slack_outbox SET leased_until = \$1 WHERE id = ANY", "outbox: renew leases"),
    (r"^UPDATE slack_outbox SET due_at", "outbox: retry job"),
    (r"^INSERT INTO slack_messages", "outbox: INSERT slack_messages"),
    (r"FROM slack_messages WHERE proposal_id", "outbox: SELECT slack_messages (posted cards)"),
    (r"FROM slack_outbox WHERE proposal_id", "outbox: count outstanding card posts"),
    (r"^SELECT voter, eligible, ballot, reason, dedupe, at FROM votes WHERE proposal_id = \$1",
     "SELECT votes of one proposal"),
    (r"webhook_events SET leased_until", "callbacks: claim"),
    (r"^UPDATE webhook_events SET status", "callbacks: record attempt state"),
    (r"^INSERT INTO webhook_attempts", "callbacks: INSERT webhook_attempts"),
    (r"webhook_disabled_endpoints", "callbacks: disabled endpoints"),
    (r"^UPDATE timers|FROM timers", "timers (SLA worker)"),
    (r"pg_stat_activity|profile_activity", "profiler's own"),
]


def statement_class(query):
    q = " ".join(query.split())
    q = re.sub(r"^/\*.*?\*/\s*", "", q)
    for pattern, label in STATEMENTS:
        if re.search(pattern, q):
            return label
    return "other: " + q[:70]


# --- cpu ------------------------------------------------------------------------------------
def cpu(out):
    before = json.load(open(f"{out}/cpu-before.json"))
    after = json.load(open(f"{out}/cpu-after.json"))
    server = open(f"{out}/server.pid").read().strip()
    load = open(f"{out}/load.pid").read().strip()
    pg_a = json.load(open(f"{out}/pg-before.json"))
    pg_b = json.load(open(f"{out}/pg-after.json"))
    backends = {str(p) for p in (pg_a.get("backends") or []) + (pg_b.get("backends") or [])}
    hz = after["hz"]
    cpu_a, cpu_b = before["cpu"], after["cpu"]
    total = sum(cpu_b) - sum(cpu_a)
    idle = (cpu_b[3] + cpu_b[4]) - (cpu_a[3] + cpu_a[4])
    busy = total - idle
    cores = total / (pg_b["at"] - pg_a["at"]) / hz if pg_b["at"] > pg_a["at"] else 2
    seconds = total / hz / max(round(cores), 1)
    groups = collections.Counter()
    for pid, p in after["procs"].items():
        ticks = p["ticks"] - before["procs"].get(pid, {"ticks": 0})["ticks"]
        if ticks <= 0:
            continue
        cmd, comm = p["cmd"], p["comm"]
        if pid == server:
            group = "countersign (server + in-process sandbox)"
        elif pid == load:
            group = "load tool (benches/clicks)"
        elif pid in backends:
            group = "PostgreSQL: countersign's backends"
        elif "walwriter" in cmd:
            group = "PostgreSQL: walwriter"
        elif "cs_profile_clicks" in cmd:
            group = "profiling (pg_stat_activity sampler, snapshots)"
        elif comm == "postgres" and "cs_test_" in cmd:
            group = "PostgreSQL: the concurrent test suite's backends"
        elif comm == "postgres":
            group = "PostgreSQL: other (checkpointer, bgwriter, ...)"
        elif comm.startswith("perf"):
            group = "profiling (perf)"
        else:
            group = f"other: {comm}"
        groups[group] += ticks
    accounted = sum(groups.values())
    groups["other: exited during the window"] = max(busy - accounted, 0)
    print(f"### CPU by process over the {seconds:.1f} s window ({round(cores)} cores; busy {100 * busy / total:.0f}% of the machine)\n")
    print("| process | CPU s | % of one core | % of busy |")
    print("|---|---|---|---|")
    others = 0
    for group, ticks in groups.most_common():
        if group.startswith("other: ") and ticks / busy < 0.01:
            others += ticks
            continue
        print(f"| {group} | {ticks / hz:.2f} | {100 * ticks / hz / seconds:.0f}% | {100 * ticks / busy:.1f}% |")
    if others:
        print(f"| other (each < 1%) | {others / hz:.2f} | {100 * others / hz / seconds:.0f}% | {100 * others / busy:.1f}% |")


# --- server perf ----------------------------------------------------------------------------
# Owner of a sample: the first rule (in this order) whose pattern matches any frame.
OWNERS = [
    ("sandbox (in-process Slack API: chat.update/postMessage, response_url)", r"^countersign::sandbox::"),
    ("Slack outbox worker (incl. card rendering)", r"^countersign::workers::slack_outbox"),
    ("callbacks worker", r"^countersign::workers::callbacks"),
    ("other workers (sla, wakeups, ...)", r"^countersign::workers::"),
    ("writer task (engine::writer, store::batch, sqlx)", r"^countersign::engine::writer"),
    ("click: answer on response_url (Clicker::answer)", r"Clicker.*answer|^countersign::slack::response_url"),
    ("click handler (slack::review)", r"^countersign::slack::review"),
    ("click request before the handler (signature, payload parsing, interactions)",
     r"^countersign::slack::(interactions|signature|payload)|^countersign::slack::.*interactions"),
    ("other countersign request handling (http)", r"^countersign::http"),
    ("other countersign", r"^countersign::"),
    ("HTTP server outside handlers (hyper/axum: clicks + sandbox requests)",
     r"^hyper::proto::h1::role::Server|^hyper::server|^hyper_util::server|^axum::serve|hyper::proto::h1::dispatch::Server"),
    ("HTTP client connections (reqwest/hyper client: to the sandbox)",
     r"^reqwest::|^hyper_util::client|^hyper::client|hyper::proto::h1::dispatch::Client|hyper::proto::h1::role::Client"),
    ("HTTP (hyper, direction unknown)", r"^hyper::|^h2::"),
    ("tokio runtime (scheduler, I/O driver, timers, parking)", r"^tokio::"),
]
# What the leaf frame is (self time), by the first matching rule.
LEAVES = [
    ("kernel", lambda s, d: "kernel" in d or s.startswith("[k]")),
    ("allocator (mimalloc, memcpy/memmove)", lambda s, d: s.startswith("mi_") or s.startswith("_mi_") or "mimalloc" in s
     or re.match(r"^__(memcpy|memmove|memset|memcmp)", s) is not None),
    ("libc (other)", lambda s, d: "libc" in d),
    ("serde_json / serde", lambda s, d: s.startswith(("serde_json::", "serde::", "<serde_json", "<serde::"))),
    ("sqlx", lambda s, d: "sqlx" in s),
    ("tracing", lambda s, d: "tracing" in s),
    ("hyper / http / h1 parsing", lambda s, d: s.startswith(("hyper", "<hyper", "http::", "<http::", "httparse", "<httparse", "h2::", "axum", "<axum", "tower", "<tower", "reqwest", "<reqwest"))),
    ("tokio", lambda s, d: "tokio" in s),
    ("hashing / HMAC / sha2", lambda s, d: any(k in s for k in ("sha2", "hmac", "digest", "blake", "Sha256", "sha256"))),
    ("chrono", lambda s, d: "chrono" in s),
    ("regex", lambda s, d: "regex" in s),
    ("countersign", lambda s, d: "countersign" in s),
    ("core/alloc/std", lambda s, d: s.startswith(("core::", "alloc::", "std::", "<core::", "<alloc::", "<std::"))),
]
MARKERS = [
    ("serde_json", r"serde_json"),
    ("sqlx", r"sqlx"),
    ("tracing (subscriber, fmt, spans)", r"tracing_subscriber|tracing_core|^tracing::"),
    ("slack::card (card rendering)", r"^countersign::slack::card"),
    ("slack::signature (HMAC verify)", r"^countersign::slack::signature"),
    ("slack::payload (click payload parsing)", r"^countersign::slack::payload"),
    ("sandbox::blockkit (Block Kit validation)", r"^countersign::sandbox::blockkit"),
    ("store::batch", r"^countersign::store::batch"),
    ("kernel (any frame)", r"\[kernel"),
    ("kernel: sendto/write (any frame)", r"sys_sendto|sys_write|tcp_sendmsg"),
    ("kernel: recvfrom/read (any frame)", r"sys_recvfrom|sys_read|tcp_recvmsg"),
    ("kernel: epoll/futex (any frame)", r"epoll|futex"),
]


def read_samples(path):
    """perf script -F comm,tid,period,ip,sym,dso: a header line, stack lines, a blank line."""
    samples, stack, header = [], [], None
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        if not line.strip():
            if header is not None:
                samples.append((header, stack))
            header, stack = None, []
        elif not line.startswith("\t"):
            header, stack = line.split(), []
        else:
            m = re.match(r"\s*([0-9a-f]+)\s+(.*)\s+\((.*)\)\s*$", line)
            if m:
                sym = re.sub(r"\+0x[0-9a-f]+$", "", m.group(2).strip())
                stack.append((sym, m.group(3)))
    if header is not None:
        samples.append((header, stack))
    return samples


def server(path):
    samples = read_samples(path)
    n = len(samples)
    owners = collections.Counter()
    leaves = collections.Counter()
    matrix = collections.defaultdict(collections.Counter)
    markers = collections.Counter()
    symbols = collections.Counter()
    threads = collections.Counter()
    owner_symbols = collections.defaultdict(collections.Counter)
    compiled = [(name, re.compile(p)) for name, p in OWNERS]
    markers_c = [(name, re.compile(p)) for name, p in MARKERS]
    for header, stack in samples:
        threads[header[0]] += 1
        syms = [s for s, _ in stack]
        owner = "other (no known frame; e.g. unwinding stopped)"
        for name, pattern in compiled:
            if any(pattern.search(s) for s in syms):
                owner = name
                break
        leaf_sym, leaf_dso = stack[0] if stack else ("?", "?")
        leaf = "other"
        for name, test in LEAVES:
            if test(leaf_sym, leaf_dso):
                leaf = name
                break
        owners[owner] += 1
        leaves[leaf] += 1
        matrix[owner][leaf] += 1
        symbols[leaf_sym[:110]] += 1
        # the innermost countersign frame, to say what within an owner is busy
        inner = next((s for s in syms if s.startswith("countersign::") or s.startswith("<countersign::")), None)
        owner_symbols[owner][(inner or "-")[:110]] += 1
        marked = syms + (["[kernel]"] if any("kernel" in d for _, d in stack) else [])
        for name, pattern in markers_c:
            if any(pattern.search(s) for s in marked):
                markers[name] += 1
    depth = sum(len(s) for _, s in samples) / max(n, 1)
    print(f"### countersign: {n} samples (perf, dwarf call graphs, mean depth {depth:.0f} frames)\n")
    print("By task (the first of these found on the stack owns the sample):\n")
    print("| task | share | top leaf kinds |")
    print("|---|---|---|")
    for owner, count in owners.most_common():
        kinds = ", ".join(f"{k} {100 * c / count:.0f}%" for k, c in matrix[owner].most_common(4))
        print(f"| {owner} | **{100 * count / n:.1f}%** | {kinds} |")
    print("\nBy leaf (self time):\n")
    print("| leaf code | share |")
    print("|---|---|")
    for leaf, count in leaves.most_common():
        print(f"| {leaf} | {100 * count / n:.1f}% |")
    print("\nInclusive (samples with a frame of):\n")
    print("| code | share |")
    print("|---|---|")
    for name, _ in MARKERS:
        print(f"| {name} | {100 * markers[name] / n:.1f}% |")
    print("\nTop leaf symbols:\n")
    for sym, count in symbols.most_common(25):
        print(f"- {100 * count / n:.1f}% `{sym}`")
    print("\nInnermost countersign frame, per task (top 6):\n")
    for owner, _ in owners.most_common():
        top = owner_symbols[owner].most_common(6)
        print(f"- {owner}: " + "; ".join(f"`{s}` {100 * c / n:.1f}%" for s, c in top))
    print("\nThreads: " + ", ".join(f"{t} {100 * c / n:.0f}%" for t, c in threads.most_common(8)))


# --- pg stats -------------------------------------------------------------------------------
def pgstat(before_path, after_path):
    a, b = json.load(open(before_path)), json.load(open(after_path))
    votes = b["tables"]["votes"]["ins"] - a["tables"]["votes"]["ins"]
    seconds = b["at"] - a["at"]
    print(f"### PostgreSQL counters over {seconds:.1f} s: {votes} votes inserted ({votes / seconds:.0f}/s)\n")
    per = lambda x: f"{x / votes:.2f}" if votes else "-"
    db = {k: b["db"][k] - a["db"][k] for k in b["db"]}
    print(f"- transactions committed: {db['xact_commit']} ({per(db['xact_commit'])} per vote), rolled back {db['xact_rollback']}")
    print(f"- rows inserted {per(db['tup_inserted'])}, updated {per(db['tup_updated'])}, fetched {per(db['tup_fetched'])}, returned {per(db['tup_returned'])} per vote; blocks hit {per(db['blks_hit'])}, read {per(db['blks_read'])} per vote")
    if b.get("wal") and a.get("wal"):
        w = {k: b["wal"][k] - a["wal"][k] for k in ("wal_records", "wal_bytes", "wal_write", "wal_sync") if k in b["wal"]}
        w["wal_bytes"] = float(w["wal_bytes"])
        print(f"- WAL (whole cluster, the test suite included): {w['wal_records']} records, {w['wal_bytes'] / 1e6:.1f} MB, {w['wal_write']} writes, {w['wal_sync']} syncs ({per(w['wal_sync'])} per vote, {w['wal_sync'] / seconds:.0f}/s)")
    print("\n| table | idx scans / vote | seq scans | rows inserted / vote | updated / vote (HOT) | deleted / vote |")
    print("|---|---|---|---|---|---|")
    for table in sorted(b["tables"]):
        x, y = a["tables"].get(table), b["tables"][table]
        if not x:
            continue
        d = {k: (y[k] or 0) - (x[k] or 0) for k in y}
        if not any(d.values()):
            continue
        print(f"| {table} | {per(d['idx_scan'])} | {d['seq_scan']} | {per(d['ins'])} | {per(d['upd'])} ({per(d['hot_upd'])}) | {per(d['del'])} |")


# --- pg_stat_activity samples ---------------------------------------------------------------
def activity(path, seconds, votes):
    seconds, votes = float(seconds), int(votes)
    rows = list(csv.reader(open(path)))
    # One sample is one pass of the sampler's loop (~10 ms apart): rows within 3 ms of the
    # previous one belong to the same pass.
    from datetime import datetime
    stamps = sorted(datetime.fromisoformat(r[0]).timestamp() for r in rows)
    n = 1 + sum(1 for x, y in zip(stamps, stamps[1:]) if y - x > 0.003) if stamps else 0
    busy = collections.Counter()
    for at, pid, state, wtype, wevent, xact, query in rows:
        if state == "active":
            cls = statement_class(query)
            wait = f" (waiting: {wtype}/{wevent})" if wtype else ""
            busy[("active", cls + wait)] += 1
            busy[("active", "*")] += 1
        elif state == "idle in transaction":
            busy[("idle in transaction", "after " + statement_class(query))] += 1
            busy[("idle in transaction", "*")] += 1
    print(f"### pg_stat_activity: {n} samples over {seconds:.0f} s (every ~{1000 * seconds / max(n, 1):.0f} ms), {votes} votes in the window\n")
    print("Backends of the countersign database (8 connections) per sample, by what each was doing;")
    print("`ms per vote` = mean backends in that state × window ÷ votes (time a connection spends there per click).\n")
    print("| state | statement (wait) | mean backends | ms per vote |")
    print("|---|---|---|---|")
    for (state, cls), count in sorted(busy.items(), key=lambda kv: (kv[0][0], -kv[1])):
        mean = count / n
        if mean < 0.005 and cls != "*":
            continue
        label = "**all**" if cls == "*" else cls
        print(f"| {state} | {label} | {mean:.3f} | {1000 * mean * seconds / votes:.3f} |")


# --- statement log --------------------------------------------------------------------------
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \S+ \[(\d+)\] \S*@\S* LOG:  duration: ([\d.]+) ms  (parse|bind|execute|statement)([^:]*): (.*)$")


def statements(path, rate, before=None, after=None):
    rate = float(rate)
    calls, time, phases = collections.Counter(), collections.Counter(), collections.Counter()
    current = None
    for line in open(path, errors="replace"):
        m = LINE.match(line)
        if m:
            current = None
            ms, phase, query = float(m.group(2)), m.group(3), m.group(5)
            cls = statement_class(query)
            if phase in ("execute", "statement"):
                calls[cls] += 1
                time[cls] += ms
            else:
                phases[(phase, cls)] += 1
                time[cls] += ms
    votes = None
    if before and after:
        a, b = json.load(open(before)), json.load(open(after))
        votes = b["tables"]["votes"]["ins"] - a["tables"]["votes"]["ins"]
    total_calls = sum(calls.values()) / rate
    total_time = sum(time.values()) / rate
    print(f"### Statements (log sample {rate:g}; counts and times scaled up by 1/{rate:g}), {votes} votes\n")
    print("Server-side time (parse+bind+execute as PostgreSQL logs it; COMMIT includes the WAL flush).\n")
    print("| statement | calls / vote | ms / call | ms / vote | share of time |")
    print("|---|---|---|---|---|")
    for cls, t in sorted(time.items(), key=lambda kv: -kv[1]):
        c = calls[cls] / rate
        if votes:
            print(f"| {cls} | {c / votes:.3f} | {t / max(calls[cls], 1):.3f} | {t / rate / votes:.3f} | {100 * t / rate / total_time:.1f}% |")
    if votes:
        print(f"| **all** | **{total_calls / votes:.2f}** | {total_time / max(total_calls, 1):.3f} | **{total_time / votes:.3f}** | 100% |")
    if phases:
        print("\nParse/bind lines (not counted as calls): " + ", ".join(f"{p} {c}: {n}" for (p, c), n in phases.most_common(6)))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"cpu": cpu, "server": server, "pgstat": pgstat, "activity": activity, "statements": statements}[command](*args)
