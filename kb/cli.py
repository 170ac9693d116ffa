"""The `kb` command line: thin click commands over the library (sqlite-utils style).

Commands parse arguments, take the writer lock where they write, call one library
function and print its outcome. Errors are KBError messages with a remedy and a
distinct exit code, never tracebacks.
"""

from __future__ import annotations

import json
import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import click

from kb import __version__, config
from kb.errors import KBError

log = logging.getLogger(__name__)


class Context:
    """What every command needs: the effective settings and the data paths."""

    def __init__(self, data_dir: str | None, verbose: bool) -> None:
        self.settings = config.load({"DATA_DIR": data_dir})
        self.paths = config.data_paths(self.settings["DATA_DIR"])
        self.verbose = verbose

    def store(self):
        from kb.store import Store

        return Store(self.paths["store"])


pass_ctx = click.make_pass_decorator(Context)


class KBGroup(click.Group):
    """Turns KBError into a clear message and its exit code instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KBError as exc:
            click.echo(f"Error: {exc.message}", err=True)
            if exc.remedy:
                click.echo(exc.remedy, err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=KBGroup)
@click.option("--data-dir", envvar="KB_DATA_DIR", type=click.Path(file_okay=False),
              help="Data directory (store, index, sources.toml). Default: ./index")
@click.option("-v", "--verbose", is_flag=True, help="Log more detail.")
@click.version_option(__version__, prog_name="kb")
@click.pass_context
def cli(ctx: click.Context, data_dir: str | None, verbose: bool) -> None:
    """kb: a searchable dermatology knowledge base."""
    _setup_logging(verbose)
    ctx.obj = Context(data_dir, verbose)


def _setup_logging(verbose: bool) -> None:
    try:
        from kb.logs import setup_logging
    except ImportError:  # pragma: no cover - kb.logs ships with kb
        logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING)
    else:
        setup_logging(verbose)


def _progress(prefix: str = "") -> Callable[[str], None]:
    """A progress line that redraws itself on a terminal and logs one line per step otherwise."""
    tty = sys.stderr.isatty()

    def report(message: str) -> None:
        if tty:
            click.echo(f"\r\x1b[2K{prefix}{message[:150]}", err=True, nl=False)
        else:
            log.info("%s%s", prefix, message)

    return report


def _end_progress() -> None:
    if sys.stderr.isatty():
        click.echo("\r\x1b[2K", err=True, nl=False)


@contextmanager
def _writer(obj: Context, name: str) -> Iterator[None]:
    """Hold the data directory's writer lock so crawl, reindex and update never overlap."""
    obj.paths["root"].mkdir(parents=True, exist_ok=True)
    from kb.lock import writer_lock

    with writer_lock(obj.paths["root"], name):
        yield


@cli.command()
@click.argument("urls", nargs=-1)
@click.option("--force", is_flag=True, help="Remove vanished pages even beyond the removal guard.")
@click.option("--report", "show_report", is_flag=True, help="Show the last crawls instead of crawling.")
@click.option("--no-index", is_flag=True, help="Do not update the search index after crawling.")
@pass_ctx
def crawl(obj: Context, urls: tuple[str, ...], force: bool, show_report: bool, no_index: bool) -> None:
    """Crawl sites (URLs, or those in sources.toml) into the store, then update the index."""
    from kb.pipeline import crawl_source
    from kb.sources import load_sources, source_from_url

    if show_report:
        with obj.store() as store:
            _print_crawl_report(store.recent_crawls(10))
        return
    if urls:
        sources = [source_from_url(u) for u in urls]
    else:
        if not obj.paths["sources"].is_file():
            raise KBError(f"No URL given and no sources file at {obj.paths['sources']}.",
                          "Run `kb crawl URL` or write sources.toml (see README).")
        sources = load_sources(obj.paths["sources"])
    failed = 0
    with _writer(obj, "crawl"), obj.store() as store:
        for source in sources:
            try:
                stats = crawl_source(source, store, obj.settings, progress=_progress(f"{source.name}: "),
                                     force=force)
            finally:
                _end_progress()
            failed += stats.fetched == 0 and stats.not_modified == 0 and stats.errors > 0
            click.echo(
                f"{source.name}: fetched {stats.fetched}, not modified {stats.not_modified}, "
                f"stored {stats.stored} (new {stats.new}, updated {stats.updated}), unchanged {stats.unchanged}, "
                f"removed {stats.removed}, skipped {stats.skipped} (robots {stats.robots}), errors {stats.errors}"
                + (f" {dict(sorted(stats.errors_by_kind.items()))}" if stats.errors_by_kind else "")
            )
        if not no_index:
            _update_index(obj, store)
    if failed == len(sources):
        raise KBError("Nothing could be fetched.", "Check the URL, the network and robots.txt (`kb explain URL`).")


def _print_crawl_report(crawls: list[dict[str, Any]]) -> None:
    if not crawls:
        click.echo("No crawls recorded yet.")
        return
    for c in crawls:
        s = c["stats"]
        click.echo(
            f"#{c['id']} {c['source']} {c['started_at']} → {c['finished_at'] or 'unfinished'}: "
            + ", ".join(f"{k} {s.get(k, 0)}" for k in
                        ("fetched", "not_modified", "new", "updated", "removed", "robots", "skipped", "errors"))
            + (f" {s['errors_by_kind']}" if s.get("errors_by_kind") else "")
        )


def _update_index(obj: Context, store) -> None:
    from kb.index import update

    indexed, deleted = update(store, obj.paths["index"])
    click.echo(f"index: {indexed} indexed, {deleted} removed")


@cli.command()
@click.option("--force", is_flag=True, help="Swap in the new index even if it lost many documents.")
@pass_ctx
def reindex(obj: Context, force: bool) -> None:
    """Rebuild the search index from the store (no network), then swap it in atomically."""
    from kb.index import rebuild

    def progress(done: int, total: int) -> None:
        _progress("reindex: ")(f"{done}/{total} articles")

    with _writer(obj, "reindex"), obj.store() as store:
        try:
            count = rebuild(store, obj.paths["index"], progress=progress, force=force)
        finally:
            _end_progress()
    click.echo(f"reindex: {count} articles indexed")


@cli.command()
@pass_ctx
def update(obj: Context) -> None:
    """Index only what changed in the store since the last update."""
    with _writer(obj, "update"), obj.store() as store:
        _update_index(obj, store)


@cli.command()
@click.argument("query")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 100), help="Results per page.")
@click.option("--page", default=1, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--audience", type=click.Choice(["public", "staff", "all"]), default="all", show_default=True,
              help="Whose view to search: the public FAQ view, or staff (everything).")
@click.option("--sort", type=click.Choice(["relevance", "date"]), default="relevance", show_default=True)
@pass_ctx
def search(obj: Context, query: str, as_json: bool, limit: int, page: int, audience: str, sort: str) -> None:
    """Search the index and print ranked results with their source links."""
    from kb.search import Searcher

    audiences = ("public",) if audience == "public" else ("public", "staff")
    searcher = Searcher(obj.paths["index"])
    try:
        results = searcher.search(query, page=page, per_page=limit, sort=sort, audiences=audiences)
    finally:
        searcher.close()
    if as_json:
        click.echo(json.dumps(results.to_json(), ensure_ascii=False, indent=2))
        return
    if results.notice:
        click.echo(results.notice)
    click.echo(f"{results.total} result{'s' * (results.total != 1)} for {query!r}")
    if results.suggestions:
        click.echo("Did you mean: " + ", ".join(results.suggestions) + "?")
    start = (results.page - 1) * results.per_page
    for n, hit in enumerate(results.hits, start + 1):
        click.echo(f"\n{n}. {hit.title}" + (f" — {hit.section}" if hit.section else ""))
        click.echo(f"   {hit.link}")
        click.echo(f"   {_plain(hit.snippet_html)}")


def _plain(snippet_html: str) -> str:
    """Snippet text for a terminal: highlight tags become *stars*, entities are decoded."""
    import html
    import re

    text = re.sub(r"</?mark[^>]*>", "*", snippet_html)
    return html.unescape(re.sub(r"<[^>]+>", "", text))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 64))
@pass_ctx
def serve(obj: Context, host: str, port: int, threads: int) -> None:
    """Serve the web UI and JSON API with the waitress production WSGI server."""
    from waitress import serve as waitress_serve

    from kb.web import create_app

    app = create_app({"DATA_DIR": obj.settings["DATA_DIR"]})
    click.echo(f"kb: serving on http://{host}:{port}/ (Ctrl-C to stop)")
    waitress_serve(app, host=host, port=port, threads=threads, ident="kb")


@cli.command()
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--no-serve", is_flag=True, help="Crawl and index only; do not start the web UI.")
@pass_ctx
def demo(obj: Context, port: int, no_serve: bool) -> None:
    """Serve the bundled demo site locally, crawl it, index it and serve the UI."""
    from kb.demo import serve_demo_site
    from kb.pipeline import crawl_source
    from kb.sources import source_from_url

    server, base_url = serve_demo_site()
    click.echo(f"demo site: {base_url}")
    settings = dict(obj.settings, CRAWL_DELAY=0.0)  # our own local site: no need to wait
    try:
        source = source_from_url(base_url)
        with _writer(obj, "crawl"), obj.store() as store:
            stats = crawl_source(source, store, settings, progress=_progress("demo: "))
            _end_progress()
            click.echo(f"demo: fetched {stats.fetched}, stored {stats.stored}, errors {stats.errors}")
            _update_index(obj, store)
    finally:
        if no_serve:
            server.shutdown()
    if not no_serve:
        click.echo(f"Open http://127.0.0.1:{port}/ and search for sebaceous or VBeam.")
        obj_ctx = click.get_current_context()
        obj_ctx.invoke(serve, host="127.0.0.1", port=port, threads=8)


@cli.command("settings")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def settings_cmd(obj: Context, as_json: bool) -> None:
    """Show every setting with its effective value, default and help."""
    if as_json:
        click.echo(json.dumps({s.name: obj.settings[s.name] for s in config.SETTINGS
                               if s.name != "SECRET_KEY"}, indent=2))
        return
    for s in config.SETTINGS:
        value = "(hidden)" if s.name == "SECRET_KEY" and obj.settings[s.name] else obj.settings[s.name]
        click.echo(f"{s.name} = {value!r}")
        click.echo(f"    {s.help} Default: {s.default!r}; environment: KB_{s.name}")


def main() -> None:  # pragma: no cover - console entry point is `cli`
    cli()
