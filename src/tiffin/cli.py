"""The ``tiffin`` command. It only talks to ``FeatureStore`` and the repository loader.

Errors print as ``Error: <what>`` and ``Hint: <what to do>`` and exit 1; a
traceback only with ``--traceback`` (or TIFFIN_TRACEBACK=1).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
import yaml

from tiffin.errors import TiffinError

EXIT_ERROR = 1
EXIT_UNEXPECTED = 2


class _Group(click.Group):
    """Turns tiffin errors into one line plus a hint instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TiffinError as e:
            if _traceback_wanted(ctx):
                raise
            click.secho(f"Error: {e.message}", fg="red", err=True)
            if e.hint:
                click.echo(f"Hint: {e.hint}", err=True)
            ctx.exit(EXIT_ERROR)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as e:  # a bug or an environment problem: still one line by default
            if _traceback_wanted(ctx):
                raise
            click.secho(f"Error: {type(e).__name__}: {e}", fg="red", err=True)
            click.echo("Hint: run again with --traceback for details", err=True)
            ctx.exit(EXIT_UNEXPECTED)


def _traceback_wanted(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool((root.obj or {}).get("traceback")) or os.environ.get("TIFFIN_TRACEBACK") == "1"


def _repo(ctx: click.Context) -> Path:
    return Path(ctx.find_root().obj["chdir"]).resolve()


def _store(ctx: click.Context) -> Any:
    from tiffin.store import FeatureStore
    obj = ctx.find_root().obj
    return FeatureStore(repo_path=_repo(ctx), fs_yaml_file=obj.get("fs_yaml"))


def _parse_ts(value: str, what: str) -> datetime:
    from tiffin.store import to_utc
    if value == "now":
        return datetime.now(timezone.utc)
    return to_utc(value, what)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--chdir", default=lambda: os.environ.get("TIFFIN_REPO_DIR", "."),
              help="The feature repository folder (default: current folder).")
@click.option("-f", "--feature-store-yaml", "fs_yaml", default=None,
              help="Path to feature_store.yaml (default: <chdir>/feature_store.yaml).")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))
@click.option("--traceback", is_flag=True, help="Show the full traceback on errors.")
@click.pass_context
def cli(ctx: click.Context, chdir: str, fs_yaml: str | None, log_level: str,
        traceback: bool) -> None:
    """tiffin: define features once, train point-in-time correct, serve them fast."""
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = {"chdir": chdir, "fs_yaml": fs_yaml, "traceback": traceback}


@cli.command()
def version() -> None:
    """Print the tiffin version."""
    from tiffin import __version__
    click.echo(f"tiffin {__version__}")


@cli.command()
@click.argument("project_directory", default="my_project")
@click.option("-m", "--minimal", is_flag=True, hidden=True)
@click.option("-t", "--template", default="local", hidden=True)
@click.pass_context
def init(ctx: click.Context, project_directory: str, minimal: bool, template: str) -> None:
    """Create a feature repository with sample data."""
    from tiffin.errors import RequestError
    from tiffin.scaffold import init_repo
    if template != "local":
        raise RequestError(f"template {template!r} is not available", hint="use -t local")
    repo = init_repo(project_directory, _repo(ctx))
    click.echo(f"Created feature repository {repo}")
    click.echo(f"  cd {repo} && tiffin apply")


def _load_and_resolve(ctx: click.Context) -> tuple[Any, list[Any]]:
    from tiffin.repo import load_repo
    store = _store(ctx)
    objects = load_repo(store.repo_path).objects
    return store, objects


@cli.command()
@click.option("--skip-source-validation", is_flag=True, hidden=True)
@click.option("--no-progress", is_flag=True, hidden=True)
@click.pass_context
def apply(ctx: click.Context, skip_source_validation: bool, no_progress: bool) -> None:
    """Register the repository's definitions; delete what the repository no longer has.

    Several repositories may share one project: each apply records this repository
    (by its folder name) as an owner of what it applies, and an object it no longer
    defines is deleted only if no other repository still defines it. Saved datasets,
    created through the SDK, are never deleted by apply.
    """
    store, objects = _load_and_resolve(ctx)
    diff = store.apply(objects, partial=False)
    click.echo(str(diff))
    views = store.list_feature_views()
    if views and store.config.online_store is not None:
        click.echo(f"Online store ready for {len(views)} feature view(s).")


@cli.command()
@click.option("--skip-source-validation", is_flag=True, hidden=True)
@click.pass_context
def plan(ctx: click.Context, skip_source_validation: bool) -> None:
    """Show what `apply` would change, changing nothing."""
    store, objects = _load_and_resolve(ctx)
    click.echo(str(store.plan(objects, partial=False)))


@cli.command()
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def teardown(ctx: click.Context, yes: bool) -> None:
    """Drop the project's online tables and registry entries (source data is untouched)."""
    store = _store(ctx)
    if not yes and sys.stdin.isatty():
        click.confirm(f"Tear down project {store.project!r}?", abort=True)
    store.teardown()
    click.echo(f"Tore down project {store.project!r}.")


class _Progress:
    """A live count of rows written (views load concurrently), on a terminal only."""

    def __init__(self) -> None:
        self.rows = 0
        self.tty = sys.stderr.isatty()

    def __call__(self, view: str, n: int) -> None:
        self.rows += n
        if self.tty:
            click.echo(f"\r  {self.rows:,} rows written", nl=False, err=True)

    def clear(self) -> None:
        if self.tty and self.rows:
            click.echo("\r" + " " * 40 + "\r", nl=False, err=True)


def _run_materialize(ctx: click.Context, fn: Callable[..., Any], views: tuple[str, ...]) -> None:
    store = _store(ctx)
    progress = _Progress()
    started = time.perf_counter()
    results = fn(store, feature_views=list(views) or None, progress=progress)
    progress.clear()
    for r in results:
        newest = f", newest event {r.max_event_ts.isoformat()}" if r.max_event_ts else ""
        click.echo(f"  {r.view}: {r.rows:,} rows{newest}")
    click.echo(f"Done in {time.perf_counter() - started:.2f}s.")


@cli.command()
@click.argument("start_ts")
@click.argument("end_ts")
@click.option("-v", "--views", multiple=True, help="Feature views to load (default: all).")
@click.pass_context
def materialize(ctx: click.Context, start_ts: str, end_ts: str, views: tuple[str, ...]) -> None:
    """Load the latest values with START_TS <= event time <= END_TS into the online store."""
    start, end = _parse_ts(start_ts, "START_TS"), _parse_ts(end_ts, "END_TS")
    click.echo(f"Materializing {start.isoformat()} .. {end.isoformat()}")
    _run_materialize(ctx, lambda s, **kw: s.materialize(start, end, **kw), views)


@cli.command("materialize-incremental")
@click.argument("end_ts")
@click.option("-v", "--views", multiple=True, help="Feature views to load (default: all).")
@click.pass_context
def materialize_incremental(ctx: click.Context, end_ts: str, views: tuple[str, ...]) -> None:
    """Load what arrived since each view's last run, up to END_TS."""
    end = _parse_ts(end_ts, "END_TS")
    click.echo(f"Materializing incrementally up to {end.isoformat()}")
    _run_materialize(ctx, lambda s, **kw: s.materialize_incremental(end, **kw), views)


@cli.command()
@click.option("-h", "--host", default="127.0.0.1", show_default=True)
@click.option("-p", "--port", default=6566, show_default=True, type=int)
@click.option("-w", "--workers", default=1, show_default=True, type=int,
              help="Worker processes (each serves every endpoint).")
@click.option("-r", "--registry-ttl-sec", "registry_ttl", default=5.0, show_default=True,
              type=float, help="How often the registry is refreshed in the background.")
@click.option("--no-access-log", is_flag=True, hidden=True)
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, workers: int, registry_ttl: float,
          no_access_log: bool) -> None:
    """Run the HTTP feature server (Feast's JSON API)."""
    import importlib.util
    if importlib.util.find_spec("uvicorn") is None:
        from tiffin.errors import MissingDependencyError
        raise MissingDependencyError("uvicorn", "server")
    _store(ctx).close()  # fail here, with a one-line error, if the repository is broken
    os.environ["TIFFIN_REPO_PATH"] = str(_repo(ctx))
    os.environ["TIFFIN_REGISTRY_TTL"] = str(registry_ttl)
    if ctx.find_root().obj.get("fs_yaml"):
        os.environ["TIFFIN_FS_YAML"] = ctx.find_root().obj["fs_yaml"]
    click.echo(f"Serving project at http://{host}:{port} ({workers} worker(s))", err=True)
    from tiffin.server import workers as supervisor
    # No proxy-header rewriting: nothing here reads the client address, and it is a
    # middleware call per request.
    supervisor.run(host, port, workers, access_log=False, log_level="warning",
                   proxy_headers=False)


@cli.command("registry-dump")
@click.pass_context
def registry_dump(ctx: click.Context) -> None:
    """Print the registry document as JSON."""
    click.echo(json.dumps(_store(ctx).registry.dump(), indent=2, sort_keys=True))


@cli.command()
@click.pass_context
def configuration(ctx: click.Context) -> None:
    """Print the resolved feature_store.yaml (defaults filled in, secrets masked)."""
    click.echo(yaml.safe_dump(_store(ctx).config.redacted(), sort_keys=False).rstrip())


def _parse_tags(tags: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for t in tags:
        if ":" not in t:
            raise click.BadParameter(f"{t!r} is not key:value", param_hint="--tags")
        k, v = t.split(":", 1)
        out[k] = v
    return out


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
             for r in [header, *rows]]
    return "\n".join(lines)


def _ttl(v: Any) -> str:
    return str(v.ttl) if v.ttl else "unlimited"


LISTINGS: dict[str, tuple[str, list[str], Callable[[Any], list[str]]]] = {
    "entities": ("entities", ["NAME", "JOIN KEY", "TYPE", "DESCRIPTION"],
                 lambda e: [e.name, e.join_key, e.value_type.name if e.value_type else "",
                            e.description]),
    "feature-views": ("feature_views", ["NAME", "ENTITIES", "FEATURES", "TTL", "ONLINE"],
                      lambda v: [v.name, ",".join(v.entities), str(len(v.features)), _ttl(v),
                                 str(v.online)]),
    "feature-services": ("feature_services", ["NAME", "FEATURES"],
                         lambda s: [s.name, ", ".join(
                             f"{p['view']}[{','.join(p['features'])}]" if p["features"]
                             else p["view"] for p in s.projections)]),
    "saved-datasets": ("saved_datasets", ["NAME", "FEATURES", "STORAGE", "LOCATION", "CREATED"],
                       lambda d: [d.name, str(len(d.features)), d.storage.storage_type,
                                  d.storage.location,
                                  d.created_timestamp.isoformat(timespec="seconds")
                                  if d.created_timestamp else ""]),
    "data-sources": ("data_sources", ["NAME", "TYPE", "LOCATION"],
                     lambda d: [d.name, d.source_type, getattr(d, "path", "") or (
                         d.batch_source.name if getattr(d, "batch_source", None) else "")]),
}


def _add_object_group(command: str, kind: str, header: list[str],
                      row: Callable[[Any], list[str]]) -> None:
    @cli.group(name=command, cls=_Group)
    def group() -> None:
        pass

    group.help = f"List or describe {command.replace('-', ' ')}."

    @group.command(name="list")
    @click.option("--tags", multiple=True, help="Only objects with all these key:value tags.")
    @click.pass_context
    def list_(ctx: click.Context, tags: tuple[str, ...]) -> None:
        objs = _store(ctx).registry.list(kind, _parse_tags(tags), allow_cache=False)
        click.echo(_table([row(o) for o in objs], header))

    list_.help = f"List {command.replace('-', ' ')}."

    @group.command()
    @click.argument("name")
    @click.pass_context
    def describe(ctx: click.Context, name: str) -> None:
        obj = _store(ctx).registry.get(kind, name, allow_cache=False)
        click.echo(yaml.safe_dump(obj.to_dict(), sort_keys=False).rstrip())

    describe.help = f"Show one of the {command.replace('-', ' ')} as YAML."


for _command, (_kind, _header, _row) in LISTINGS.items():
    _add_object_group(_command, _kind, _header, _row)


def main() -> None:
    cli(prog_name="tiffin")


if __name__ == "__main__":
    main()
