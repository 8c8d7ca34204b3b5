"""`make bench`: every benchmark, unattended, from a fresh clone, with the peers in the same run.

    .venv/bin/python -P benchmarks/bench.py [--only NAME,...] [--skip NAME,...] [--no-setup] [--no-readme]

1. Peers' environment: benchmarks/.venv-peers from the pinned benchmarks/requirements-peers.txt
   (DataTrove 0.10 and what its filters, URL filter and dedup need), never mixed into Anvil's
   environment; rebuilt when the requirements file changes, skipped when it is current.
2. Real inputs: benchmarks/install_real_inputs.sh (Debian documentation packages, a public WARC)
   when they are absent and this machine allows it (root, apt-get); otherwise it says why, and the
   scripts fall back to the sample corpus and label their results so.
3. Every script in SCRIPTS, each as its own `python -P benchmarks/NAME.py` with its defaults (a
   script's defaults are what `make bench` measures), one after the other, each under a timeout.
   A failure or a timeout is recorded and the run goes on: nothing stops at the first failure.
   Each script writes benchmarks/results/NAME.json (machine, load before/after, input, rows).
4. benchmarks/results/bench.json (set-up, per-script status, wall seconds, load), the Markdown
   table benchmarks/results/table.md and the README's performance table (benchmarks/report.py).
Exit status 0 only if every script succeeded and wrote its results file. Logs: benchmarks/.cache/logs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, load_average, machine  # noqa: E402

HERE = ROOT / "benchmarks"
PEERS = HERE / ".venv-peers"
REQUIREMENTS = HERE / "requirements-peers.txt"
LOGS = HERE / ".cache" / "logs"
# Marker paths of benchmarks/install_real_inputs.sh's Debian packages (any one missing: not installed).
REAL_INPUT_MARKERS = ("/usr/share/doc/python3.11/html", "/usr/share/doc/debian-handbook/html")


@dataclass(frozen=True)
class Script:
    name: str
    timeout_s: int  # generous: about 2.5x the script's wall time on an idle 2-core machine


# The order of the run and of the README table.
SCRIPTS = (
    Script("datatrove_compat", 900),
    Script("curation_steps", 900),
    Script("dedup", 1800),
    Script("dedup_resume", 600),
    Script("extract", 900),
    Script("tokenize", 600),
    Script("trainer", 600),
    Script("learning", 1200),
    Script("perplexity", 300),
    Script("parallel", 900),
    Script("memory", 900),
    Script("ray_overhead", 600),
    Script("gpu", 300),
)


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def setup_peers(python: str = sys.executable) -> dict:
    """Create or refresh benchmarks/.venv-peers; its stamp is the requirements file's hash."""
    digest = hashlib.sha1(REQUIREMENTS.read_bytes()).hexdigest()[:12]
    stamp = PEERS / f".installed-{digest}"
    if stamp.exists():
        return {"status": "current", "requirements": REQUIREMENTS.name, "digest": digest}
    t0 = time.monotonic()
    _log(f"creating {PEERS.relative_to(ROOT)} from {REQUIREMENTS.relative_to(ROOT)}")
    try:
        if not (PEERS / "bin" / "python").exists():
            subprocess.run([python, "-m", "venv", str(PEERS)], check=True)
        pip = [str(PEERS / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True)
    except (subprocess.CalledProcessError, OSError) as exc:
        _log(f"peers' environment failed ({exc}): the scripts will say which peers were not measured")
        return {"status": f"failed: {exc}", "seconds": round(time.monotonic() - t0, 1)}
    for old in PEERS.glob(".installed-*"):
        old.unlink()
    stamp.touch()
    return {"status": "created", "digest": digest, "seconds": round(time.monotonic() - t0, 1)}


def setup_real_inputs() -> dict:
    """Install the real inputs where possible; say why not otherwise (scripts then fall back)."""
    if all(Path(p).is_dir() for p in REAL_INPUT_MARKERS):
        return {"status": "installed"}
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        why = "needs root and apt-get (Debian)"
        _log(f"real inputs not installed ({why}): scripts use the sample corpus, labelled as such")
        return {"status": f"not installed: {why}; sample corpus used"}
    t0 = time.monotonic()
    _log("installing real inputs (benchmarks/install_real_inputs.sh)")
    proc = subprocess.run(["bash", str(HERE / "install_real_inputs.sh")], capture_output=True, text=True)
    seconds = round(time.monotonic() - t0, 1)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        _log(f"real inputs failed to install: {' | '.join(tail)}; scripts use the sample corpus")
        return {"status": f"install failed: {' | '.join(tail)}; sample corpus used", "seconds": seconds}
    return {"status": "installed now", "seconds": seconds}


def run_script(script: Script, bench_dir: Path, results_dir: Path, logs: Path, python: str) -> dict:
    """One script as its own process group, output teed to the console and logs/NAME.log."""
    logs.mkdir(parents=True, exist_ok=True)
    result_file = results_dir / f"{script.name}.json"
    before_mtime = result_file.stat().st_mtime if result_file.exists() else None
    entry = {"name": script.name, "load_before": load_average()}
    t0 = time.monotonic()
    cmd = [python, "-P", str(bench_dir / f"{script.name}.py")]
    with open(logs / f"{script.name}.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        timed_out = False
        try:
            for chunk in _output_until(proc, t0 + script.timeout_s):
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
                log.write(chunk)
        except TimeoutError:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
        code = proc.wait()
    entry["wall_s"] = round(time.monotonic() - t0, 1)
    entry["load_after"] = load_average()
    written = result_file.exists() and result_file.stat().st_mtime != before_mtime
    if timed_out:
        entry["status"] = f"timed out after {script.timeout_s} s"
    elif code != 0:
        entry["status"] = f"failed (exit {code})"
    elif not written:
        entry["status"] = f"exit 0 but no {result_file.name} written"
    else:
        entry["status"] = "ok"
    return entry


def _output_until(proc: subprocess.Popen, deadline: float):
    """Yield the process's output as it comes (raw chunks: progress bars without newlines pass
    too); TimeoutError once the deadline passes, even while the process is silent."""
    import selectors

    fd = proc.stdout.fileno()
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            if sel.select(timeout=min(left, 1.0)):
                chunk = os.read(fd, 65536)
                if not chunk:
                    return
                yield chunk


def run_all(
    scripts: tuple[Script, ...] | list[Script],
    bench_dir: Path = HERE,
    results_dir: Path = RESULTS,
    logs: Path = LOGS,
    python: str = sys.executable,
) -> list[dict]:
    """Run every script whatever happens to the others; one status entry per script."""
    entries = []
    for i, script in enumerate(scripts, 1):
        _log(f"({i}/{len(scripts)}) {script.name}.py (timeout {script.timeout_s} s)")
        entry = run_script(script, bench_dir, results_dir, logs, python)
        _log(f"{script.name}.py: {entry['status']} in {entry['wall_s']} s")
        entries.append(entry)
    return entries


def summary(entries: list[dict]) -> str:
    width = max([len(e["name"]) for e in entries] + [6])
    lines = [f"{'script':<{width}}  {'wall s':>7}  load before -> after  status"]
    for e in entries:
        lb, la = e["load_before"][0], e["load_after"][0]
        lines.append(f"{e['name']:<{width}}  {e['wall_s']:>7.1f}  {lb:>5.2f} -> {la:<5.2f}          {e['status']}")
    return "\n".join(lines)


def _selected(only: str | None, skip: str | None) -> list[Script]:
    names = {s.name for s in SCRIPTS}
    chosen = [s.strip() for s in only.split(",")] if only else sorted(names)
    dropped = [s.strip() for s in skip.split(",")] if skip else []
    unknown = sorted(set(chosen + dropped) - names)
    if unknown:
        raise SystemExit(f"bench: unknown script(s) {', '.join(unknown)}; known: {', '.join(s.name for s in SCRIPTS)}")
    return [s for s in SCRIPTS if s.name in chosen and s.name not in dropped]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--only", help="comma-separated script names (default: all)")
    ap.add_argument("--skip", help="comma-separated script names to leave out")
    ap.add_argument("--no-setup", action="store_true", help="neither create the peers' env nor install real inputs")
    ap.add_argument("--no-readme", action="store_true", help="write table.md but leave README.md as it is")
    ap.add_argument("--list", action="store_true", help="print the scripts and their timeouts, then exit")
    args = ap.parse_args(argv)
    scripts = _selected(args.only, args.skip)
    if args.list:
        print("\n".join(f"{s.name:<18} timeout {s.timeout_s} s" for s in scripts))
        return 0
    t0 = time.monotonic()
    record = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(), "load_before": load_average()}
    if not args.no_setup:
        record["peers_env"] = setup_peers()
        record["real_inputs"] = setup_real_inputs()
    entries = run_all(scripts)
    record.update(scripts=entries, load_after=load_average(), wall_s=round(time.monotonic() - t0, 1))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench.json").write_text(json.dumps(record, indent=1) + "\n")

    from benchmarks import report

    table_path = report.write_table(RESULTS)
    changed = False if args.no_readme else report.update_readme(ROOT / "README.md", table_path.read_text())
    print(summary(entries))
    print(
        f"total {record['wall_s']:.0f} s; table: {table_path.relative_to(ROOT)}"
        + ("; README updated" if changed else "")
    )
    failed = [e["name"] for e in entries if e["status"] != "ok"]
    if failed:
        print(f"not ok: {', '.join(failed)} (logs in {LOGS.relative_to(ROOT)})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
