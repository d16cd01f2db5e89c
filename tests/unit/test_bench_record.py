"""benchmarks/record.py: one results file per benchmark run, named by date and commit."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def record():
    spec = importlib.util.spec_from_file_location("bench_record", BENCH / "record.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def repo(tmp_path):
    if shutil.which("git") is None:
        pytest.fail("git is needed: run files are named by commit")
    root = tmp_path / "repo"
    (root / "benchmarks" / "results").mkdir(parents=True)
    (root / "src.py").write_text("x = 1\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    for cmd in (["init", "-q"], ["add", "src.py"], ["commit", "-q", "-m", "Bench: first"]):
        subprocess.run(["git", *cmd], cwd=root, check=True, env=env, capture_output=True)
    return root


def test_clean_tree_then_each_kind_of_change(record, repo):
    state = record.git_state(str(repo))
    assert state["dirty"] is False and state["dirty_files"] == []
    assert len(state["commit"]) == 40 and state["commit"].startswith(state["short"])
    assert state["subject"] == "Bench: first"

    # earlier run files wait uncommitted in benchmarks/results/: not a change to the code
    (repo / "benchmarks" / "results" / "2026-01-01T0000Z-abc.json").write_text("{}")
    assert record.git_state(str(repo))["dirty"] is False

    (repo / "new_module.py").write_text("y = 2\n")
    state = record.git_state(str(repo))
    assert state["dirty"] is True and state["dirty_files"] == ["?? new_module.py"]

    (repo / "new_module.py").unlink()
    (repo / "src.py").write_text("x = 2\n")
    state = record.git_state(str(repo))
    assert state["dirty"] is True and state["dirty_files"] == ["M src.py"]


def test_outside_git_the_state_is_unknown(record, tmp_path):
    state = record.git_state(str(tmp_path))
    assert state["commit"] is None and state["dirty"] is None and state["short"] == "nogit"


def test_write_names_the_file_by_date_and_commit_and_keeps_every_run(record, repo, tmp_path):
    (repo / "src.py").write_text("x = 3\n")  # a dirty tree must say so, in the name too
    run = record.start("run.py", {"scale": 0.01, "phases": "apply"}, ["run.py", "--scale", "0.01"],
                       root=str(repo))
    out = tmp_path / "results"
    main = {"results": {"tiffin": {"apply": {"ok": True, "seconds": 0.5}}}}
    first = record.write(run, {"main": main, "backends": {"backends": {}}}, ["## Main\n\n| a |"], str(out))
    second = record.write(run, {"serve": {"stores": {}}}, ["## Feature server\n"], str(out))

    stem = f"{run['stamp']}-{run['short']}-dirty"
    assert Path(first).name == f"{stem}.json"
    assert Path(second).name == f"{stem}-2.json"  # same minute: a new file, not an overwrite
    doc = json.loads(Path(first).read_text())
    assert doc["main"] == main and doc["backends"] == {"backends": {}}
    assert doc["run"]["sections"] == ["main", "backends"]
    assert doc["run"]["dirty"] is True and doc["run"]["dirty_files"] == ["M src.py"]
    assert doc["run"]["args"] == {"scale": 0.01, "phases": "apply"}
    assert doc["run"]["machine"]["nproc"] >= 1
    md = (out / f"{stem}.md").read_text()
    assert f"- commit: {run['commit']}" in md
    assert "- uncommitted changes: YES, the tree differed from the commit: M src.py" in md
    assert "- sections: main, backends" in md and "## Main\n\n| a |" in md
    # latest.* follow the newest run
    assert json.loads((out / "latest.json").read_text())["run"]["file"] == f"{stem}-2"

    listed = record.listing(str(out)).splitlines()
    assert [line.split()[0] for line in listed[1:]] == [stem, f"{stem}-2"]
    assert "main, backends (scale 0.01)" in listed[1]
    assert record.latest_with("backends", str(out))["file"] == stem
    assert record.latest_with("large", str(out)) is None


def test_unknown_section_is_refused(record, tmp_path):
    run = record.start("run.py", {}, [], root=str(tmp_path))
    with pytest.raises(ValueError, match="unknown results sections"):
        record.write(run, {"mian": {}}, [], str(tmp_path))
    assert not list(tmp_path.iterdir())


def test_an_unreadable_run_file_is_listed_as_such(record, tmp_path):
    (tmp_path / "2026-01-01T0000Z-abc.json").write_text("{not json")
    (listed,) = record.runs(str(tmp_path))
    assert listed["file"] == "2026-01-01T0000Z-abc" and listed["error"].startswith("unreadable")
