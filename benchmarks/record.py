"""One results file per benchmark run, named by its date and commit, meant to be committed.

    .venv/bin/python benchmarks/record.py            # list the runs in benchmarks/results/
    .venv/bin/python benchmarks/record.py --show F   # print one run's markdown (F: a name or path)
    .venv/bin/python benchmarks/record.py --latest serve   # the newest run holding a section

run.py (``make bench``) and each harness run alone (serve.py, backends.py, large.py)
write ``benchmarks/results/<YYYY-MM-DDTHHMMZ>-<short commit>[-dirty].json`` and ``.md``.
The JSON's ``run`` block records the commit, whether the working tree had changes
(and which files), the date, the machine, the command line and its parsed arguments,
and which harness sections the file holds; each harness adds its own top-level
section (``main``, ``serve``, ``backends``, ``large``). ``latest.json`` / ``latest.md``
are untracked copies of the newest run, for scripts that want a fixed name.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
SECTIONS = ("main", "serve", "backends", "large")
# Files a run writes into the tree itself: they must not make the next run "dirty".
OWN_OUTPUT = ("benchmarks/results/",)


def _git(*args: str, root: str = ROOT, strip: bool = True) -> str | None:
    try:
        p = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if p.returncode != 0:
        return None
    return p.stdout.strip() if strip else p.stdout


def git_state(root: str = ROOT) -> dict:
    """The commit the run measures, and whether the tree differs from it.

    Untracked files count (a new module changes what runs), ignored ones do not, and
    neither do earlier results files, which sit uncommitted until someone commits them.
    """
    commit = _git("rev-parse", "HEAD", root=root)
    if commit is None:
        return {"commit": None, "short": "nogit", "dirty": None, "dirty_files": []}
    # -z: paths verbatim (no quoting); a rename's entry is followed by its old path
    entries = iter((_git("status", "--porcelain=v1", "-z", "--untracked-files=all", root=root,
                         strip=False) or "").split("\0"))
    changed = []
    for entry in entries:
        if not entry:
            continue
        code, path = entry[:2], entry[3:]
        if code[0] in "RC":
            next(entries, None)
        if not path.startswith(OWN_OUTPUT):
            changed.append(f"{code.strip()} {path}")
    return {
        "commit": commit,
        "short": _git("rev-parse", "--short=9", "HEAD", root=root) or commit[:9],
        "subject": _git("log", "-1", "--format=%s", root=root) or "",
        "branch": _git("rev-parse", "--abbrev-ref", "HEAD", root=root) or "",
        "dirty": bool(changed),
        "dirty_files": changed[:200],
    }


def machine_info() -> dict:
    info: dict = {
        "nproc": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "hostname": platform.node(),
    }
    try:
        info["nproc"] = int(subprocess.run(["nproc"], capture_output=True, text=True).stdout)
    except (OSError, ValueError):
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    info["mem_total_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        info["loadavg_at_start"] = [float(x) for x in os.getloadavg()]
    except OSError:
        pass
    return info


def start(tool: str, args: argparse.Namespace | dict, argv: list[str] | None = None,
          root: str = ROOT) -> dict:
    """The ``run`` block, taken when the run starts: the tree it measures is the tree
    as it was then, not after someone edits a file during a long run."""
    now = datetime.now(timezone.utc)
    return {
        "date": now.isoformat(timespec="seconds"),
        "stamp": now.strftime("%Y-%m-%dT%H%MZ"),
        "tool": tool,
        "argv": list(sys.argv if argv is None else argv),
        "args": dict(vars(args) if isinstance(args, argparse.Namespace) else args),
        **git_state(root),
        "machine": machine_info(),
    }


def file_stem(run: dict) -> str:
    return f"{run['stamp']}-{run['short']}" + ("-dirty" if run.get("dirty") else "")


def header_md(run: dict, sections: list[str]) -> str:
    m = run["machine"]
    dirty = "no"
    if run.get("dirty"):
        shown = ", ".join(run["dirty_files"][:10]) + (" ..." if len(run["dirty_files"]) > 10 else "")
        dirty = f"YES, the tree differed from the commit: {shown}"
    elif run.get("dirty") is None:
        dirty = "unknown (not a git checkout)"
    lines = [
        f"# tiffin vs Feast 0.67 benchmark run {file_stem(run)}",
        "",
        f"- date: {run['date']} (finished {run.get('finished', '?')})",
        f"- commit: {run.get('commit')} ({run.get('branch', '')}: {run.get('subject', '')})",
        f"- uncommitted changes: {dirty}",
        f"- machine: {m.get('nproc')} cores, {m.get('mem_total_gib')} GiB, {m.get('cpu', '?')}, "
        f"{m.get('platform')}, load average at start {m.get('loadavg_at_start')}",
        f"- command: `{' '.join(run['argv'])}` ({run['tool']})",
        f"- sections: {', '.join(sections)}",
        "",
    ]
    return "\n".join(lines)


def write(run: dict, sections: dict[str, dict], md_parts: list[str], results_dir: str = RESULTS) -> str:
    """Write ``<stem>.json`` and ``<stem>.md`` (never over an earlier run's file), plus
    the untracked ``latest`` copies. Returns the JSON file's path."""
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown results sections {sorted(unknown)}; known: {SECTIONS}")
    run = dict(run, finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
               sections=[s for s in SECTIONS if s in sections])
    os.makedirs(results_dir, exist_ok=True)
    stem, n = file_stem(run), 1
    while os.path.exists(os.path.join(results_dir, stem + ".json")):
        n += 1
        stem = f"{file_stem(run)}-{n}"
    run["file"] = stem
    doc = {"run": run, **sections}
    path = os.path.join(results_dir, stem + ".json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=2, default=str)
    with open(os.path.join(results_dir, stem + ".md"), "w") as f:
        f.write(header_md(run, run["sections"]) + "\n" + "\n".join(p.rstrip("\n") + "\n" for p in md_parts))
    for ext in ("json", "md"):
        src = os.path.join(results_dir, f"{stem}.{ext}")
        shutil.copyfile(src, os.path.join(results_dir, f"latest.{ext}"))
    return path


# --------------------------------------------------------------------------- listing


def runs(results_dir: str = RESULTS) -> list[dict]:
    """Every run file's ``run`` block, oldest first (unreadable files are listed with an error)."""
    out = []
    if not os.path.isdir(results_dir):
        return out
    for name in sorted(os.listdir(results_dir)):
        if not name.endswith(".json") or name.startswith("latest."):
            continue
        path = os.path.join(results_dir, name)
        try:
            with open(path) as f:
                run = json.load(f)["run"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            run = {"file": name[:-5], "error": f"unreadable: {type(e).__name__}: {e}"}
        run.setdefault("file", name[:-5])
        run["path"] = path
        out.append(run)
    # by start, then end; a same-minute run's "-2" file after its first one
    return sorted(out, key=lambda r: (r.get("date", ""), r.get("finished", ""), len(r["file"]), r["file"]))


def _tracked(path: str) -> bool:
    return _git("ls-files", "--error-unmatch", os.path.relpath(path, ROOT)) is not None


def listing(results_dir: str = RESULTS) -> str:
    rows = runs(results_dir)
    if not rows:
        return f"no run files in {results_dir} (run `make bench`)"
    lines = [f"{'run file':40s} {'commit':9s} {'dirty':5s} {'committed':9s} sections"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['file']:40s} {r['error']}")
            continue
        args = r.get("args", {})
        scales = [f"{k.replace('_', ' ')} {args[k]:g}" for k in ("scale", "backends_scale")
                  if isinstance(args.get(k), (int, float))]
        if "backends_scale" in args and "backends" not in r.get("sections", []):
            scales = scales[:1]
        lines.append(
            f"{r['file']:40s} {str(r.get('short'))[:9]:9s} {'yes' if r.get('dirty') else 'no':5s} "
            f"{'yes' if _tracked(r['path']) else 'no':9s} {', '.join(r.get('sections', []))}"
            + (f" ({', '.join(scales)})" if scales else "")
        )
    return "\n".join(lines)


def latest_with(section: str, results_dir: str = RESULTS) -> dict | None:
    for r in reversed(runs(results_dir)):
        if section in r.get("sections", []):
            return r
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=RESULTS)
    ap.add_argument("--show", metavar="RUN", help="print this run's markdown (file name, stem or path)")
    ap.add_argument("--latest", metavar="SECTION", choices=SECTIONS,
                    help="print the markdown of the newest run that holds SECTION")
    a = ap.parse_args()
    if a.latest:
        r = latest_with(a.latest, a.results)
        if r is None:
            print(f"no run in {a.results} holds a {a.latest!r} section", file=sys.stderr)
            return 1
        a.show = r["path"]
    if a.show:
        stem = os.path.splitext(os.path.basename(a.show))[0]
        md = os.path.join(os.path.dirname(a.show) or a.results, stem + ".md")
        if not os.path.exists(md):
            md = os.path.join(a.results, stem + ".md")
        if not os.path.exists(md):
            print(f"no such run: {a.show}", file=sys.stderr)
            return 1
        with open(md) as f:
            sys.stdout.write(f.read())
        return 0
    print(listing(a.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
