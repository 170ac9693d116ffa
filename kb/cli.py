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
        from kb.store import open_from_settings

        return open_from_settings(self.settings)


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
        from kb.pipeline import crawl_report

        with obj.store() as store:
            _print_crawl_report(crawl_report(store))
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
            for message in stats.messages:
                click.echo(f"{source.name}: {message}", err=True)
        if not no_index:
            _update_index(obj, store)
    if failed == len(sources):
        raise KBError("Nothing could be fetched.", "Check the URL, the network and robots.txt (`kb explain URL`).")


def _print_crawl_report(report: dict[str, Any]) -> None:
    """The last crawls, then the pages they skipped grouped by kind (what to debug with `kb explain`)."""
    if not report["crawls"]:
        click.echo("No crawls recorded yet.")
        return
    for c in report["crawls"]:
        s = c["stats"]
        click.echo(
            f"#{c['id']} {c['source']} {c['started_at']} → {c['finished_at'] or 'unfinished'}: "
            + ", ".join(f"{k} {s.get(k, 0)}" for k in
                        ("fetched", "not_modified", "new", "updated", "removed", "robots", "skipped", "errors"))
            + (f" {s['errors_by_kind']}" if s.get("errors_by_kind") else "")
        )
    if report.get("problems_by_kind"):
        click.echo("\nPages skipped in the last crawls, by kind: "
                   + ", ".join(f"{k} {n}" for k, n in sorted(report["problems_by_kind"].items())))
        for p in report.get("problems", [])[:50]:
            click.echo(f"  {p['url']}  {p['error']}")


def _update_index(obj: Context, store) -> None:
    from kb.index import update

    indexed, deleted = update(store, obj.paths["index"])
    click.echo(f"index: {indexed} indexed, {deleted} removed")


@cli.command()
@click.argument("url")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@pass_ctx
def explain(obj: Context, url: str, as_json: bool) -> None:
    """Fetch one page and show what would be stored, and why (or why it would be skipped). Writes nothing."""
    from kb.pipeline import explain as explain_page

    with obj.store() as store:
        record = explain_page(url, obj.settings, store)
    if as_json:
        click.echo(json.dumps(record, indent=2, ensure_ascii=False, default=str))
        return
    if record.get("skipped"):
        click.echo(f"skipped: {record['skipped']}")
    for key in ("url", "canonical", "title", "audience", "published", "modified", "author", "categories", "tags"):
        if record.get(key):
            click.echo(f"{key}: {record[key]}")
    for section in record.get("sections") or []:
        click.echo(f"  #{section['anchor'] or '(top)'} {section['heading'] or '(introduction)'}: "
                   f"{len(section['text'])} characters")
    if record.get("disclaimer"):
        click.echo("disclaimer: the page carries a medical disclaimer")
    for para in record.get("boilerplate") or []:
        click.echo(f"boilerplate (stripped): {para[:100]}" + ("…" if len(para) > 100 else ""))
    if record.get("text"):
        click.echo("\n" + record["text"][:600] + ("…" if len(record["text"]) > 600 else ""))
    for note in record.get("notes") or []:
        click.echo(f"note: {note}")


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
    from kb.search.pg import open_searcher

    audiences = ("public",) if audience == "public" else ("public", "staff")
    searcher = open_searcher(obj.settings, obj.paths["index"])
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
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", text)).split())


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", type=click.IntRange(1, 64),
              help="Worker processes (default: the WORKERS setting, one per CPU core).")
@click.option("--threads", type=click.IntRange(1, 64), help="Threads per worker process (default: 4; waitress 8).")
@click.option("--server", type=click.Choice(["gunicorn", "waitress"]),
              help="gunicorn: pre-forked workers (default on Linux/macOS); waitress: one process (Windows).")
@click.option("--access-log", is_flag=True, help="Log every request to stderr (off by default).")
@pass_ctx
def serve(obj: Context, host: str, port: int, workers: int | None, threads: int | None, server: str | None,
          access_log: bool) -> None:
    """Serve the web UI and JSON API: several worker processes on one port (SIGTERM stops gracefully)."""
    from kb.serving import serve as run_server

    run_server(obj.settings, host=host, port=port, workers=workers, threads=threads, server=server,
               access_log=access_log, echo=click.echo)


@cli.command()
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535), help="Port of the kb UI.")
@click.option("--site-port", default=8800, show_default=True, type=click.IntRange(0, 65535),
              help="Port of the bundled demo clinic site (fixed, so stored source links keep working).")
@click.option("--no-serve", is_flag=True, help="Crawl and index only; do not start the web UI.")
@pass_ctx
def demo(obj: Context, port: int, site_port: int, no_serve: bool) -> None:
    """Serve the bundled demo site locally, crawl it, index it and serve the UI."""
    from kb.demo import serve_demo_site
    from kb.pipeline import crawl_source
    from kb.serving import interruptible
    from kb.sources import source_from_url

    interruptible()
    server, base_url = serve_demo_site(port=site_port)
    click.echo(f"demo site (a made-up clinic blog): {base_url}")
    settings = dict(obj.settings, CRAWL_DELAY=0.0)  # our own local site: no need to wait between requests
    try:
        with _writer(obj, "crawl"), obj.store() as store:
            try:
                stats = crawl_source(source_from_url(base_url), store, settings, progress=_progress("demo: "))
            finally:
                _end_progress()
            click.echo(f"demo: fetched {stats.fetched}, not modified {stats.not_modified}, stored {stats.stored}, "
                       f"unchanged {stats.unchanged}, errors {stats.errors}")
            _update_index(obj, store)
        if not no_serve:
            click.echo(f"Open http://127.0.0.1:{port}/ and search for sebaceous or VBeam.")
            # waitress: this process also runs the demo site in a thread, and a threaded process must not fork.
            click.get_current_context().invoke(serve, host="127.0.0.1", port=port, server="waitress")
    finally:
        server.shutdown()
        server.server_close()


@cli.command("settings")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def settings_cmd(obj: Context, as_json: bool) -> None:
    """Show every setting with its effective value, default and help."""
    if as_json:
        click.echo(json.dumps({s.name: _shown(s.name, obj.settings[s.name]) for s in config.SETTINGS
                               if s.name != "SECRET_KEY"}, indent=2))
        return
    for s in config.SETTINGS:
        value = _shown(s.name, obj.settings[s.name])
        click.echo(f"{s.name} = {value!r}")
        click.echo(f"    {s.help} Default: {s.default!r}; environment: KB_{s.name}")


def _shown(name: str, value: Any) -> Any:
    """A setting as `kb settings` prints it: SECRET_KEY hidden, passwords in database URLs masked."""
    if name not in config.SECRET_SETTINGS or not value:
        return value
    if name == "SECRET_KEY":
        return "(hidden)"
    from kb.store.postgres_pool import redact

    return ",".join(redact(u.strip()) for u in str(value).split(","))


def main() -> None:  # pragma: no cover - console entry point is `cli`
    cli()


# -- documents and maintenance (library: kb.documents, kb.maintenance, kb.querylog) ---------------

@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--audience", type=click.Choice(["public", "staff"]), default="staff", show_default=True,
              help="Who may find these documents.")
@click.option("--title", help="Title for a single document (default: from the document).")
@pass_ctx
def add(obj: Context, paths: tuple[Path, ...], audience: str, title: str | None) -> None:
    """Add local documents (HTML, Markdown, text, PDF; directories recursively) to the knowledge base."""
    from kb.documents import SUFFIXES, import_paths

    with _writer(obj, "add"), obj.store() as store:
        stats = import_paths(paths, store, audience=audience, title=title, progress=_progress("add: "),
                             timeout=obj.settings["IMPORT_TIMEOUT"])
        _end_progress()
        for skip in stats.skips:
            click.echo(f"skipped {skip['path']}: {skip['reason']}", err=True)
        click.echo(f"added {stats.added} (new {stats.new}, updated {stats.updated}, "
                   f"unchanged {stats.unchanged}), skipped {stats.skipped}")
        if stats.added == 0:
            raise KBError("No document could be added.", f"kb adds {', '.join(SUFFIXES)} files; see the reasons above.")
        _update_index(obj, store)


@cli.command()
@click.option("--repair", is_flag=True,
              help="Index missing or stale documents and drop orphans; rebuild a damaged index from the store.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def check(obj: Context, repair: bool, as_json: bool) -> None:
    """Read the index as searches do and compare it with the store; exit 1 when damaged or different."""
    from kb.maintenance import check as check_index

    with _writer(obj, "check"), obj.store() as store:
        report = check_index(store, obj.paths["index"], repair=repair)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        for key in ("generation", "store_articles", "store_duplicates", "index_documents"):
            click.echo(f"{key}: {report.get(key)}")
        damaged = report.get("damaged") or []
        click.echo(f"damaged: {len(damaged)}" + (" (the index cannot be read; it counts as none)" if damaged else ""))
        for problem in damaged[:20]:
            click.echo(f"  {problem}")
        for key in ("missing", "orphaned", "stale"):
            ids = report.get(key) or []
            click.echo(f"{key}: {len(ids)}" + (f" (ids {', '.join(map(str, list(ids)[:10]))}…)" if ids else ""))
        if report.get("repaired"):
            click.echo(f"repaired: {report['repaired']}")
    if not report.get("ok") and not report.get("repaired"):
        click.get_current_context().exit(1)


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def stats(obj: Context, as_json: bool) -> None:
    """Documents per site and audience, last crawl, index generation and size."""
    from kb.maintenance import stats as collect

    with obj.store() as store:
        data = collect(store, obj.paths["index"])
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    _print_tree(data)


def _print_tree(data: Any, indent: int = 0) -> None:
    pad = "  " * indent
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(value, (dict, list)) and value:
                click.echo(f"{pad}{key}:")
                _print_tree(value, indent + 1)
            else:
                click.echo(f"{pad}{key}: {value}")
    elif isinstance(data, list):
        for item in data:
            if isinstance(item, dict):
                click.echo(pad + ", ".join(f"{k}={v}" for k, v in item.items()))
            else:
                click.echo(f"{pad}- {item}")


@cli.command()
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--archive", is_flag=True, help="Write a .tar.gz instead of a directory.")
@pass_ctx
def backup(obj: Context, dest: Path, archive: bool) -> None:
    """Back up the store (SQLite online backup) and the settings files into DEST."""
    from kb.maintenance import backup as make_backup

    click.echo(str(make_backup(obj.paths["root"], dest, archive=archive)))


@cli.command()
@click.argument("src", type=click.Path(exists=True, path_type=Path))
@click.option("--force", is_flag=True, help="Replace an existing store (a safety backup is made first).")
@click.option("--no-reindex", is_flag=True, help="Do not rebuild the index after restoring.")
@pass_ctx
def restore(obj: Context, src: Path, force: bool, no_reindex: bool) -> None:
    """Restore a backup made by `kb backup`, then rebuild the index."""
    from kb.maintenance import restore as do_restore

    result = do_restore(src, obj.paths["root"], force=force, reindex=not no_reindex)
    click.echo(json.dumps(result, indent=2, default=str))


@cli.command("migrate-store")
@click.option("--to", "url", required=True, metavar="URL",
              help="postgresql://USER:PASS@HOST:PORT/DB of an empty database that USER owns.")
@click.option("--force", is_flag=True, help="Replace whatever the target database already holds.")
@click.option("--no-reindex", is_flag=True, help="Do not build the search index on PostgreSQL afterwards.")
@pass_ctx
def migrate_store(obj: Context, url: str, force: bool, no_reindex: bool) -> None:
    """Copy the data directory's SQLite store (articles, users, tokens, logs) into PostgreSQL, all or nothing."""
    from kb.logs import progress
    from kb.store import open_store
    from kb.store.transfer import migrate_data_dir, shown_url

    with _writer(obj, "migrate-store"):
        with progress(label="migrate-store: rows") as bar:
            copied = migrate_data_dir(obj.paths["store"], url, force=force, progress=bar)
        for table, rows in copied.items():
            click.echo(f"{table}: {rows}")
        if not no_reindex:
            from kb.index import rebuild

            with progress(label="reindex: articles") as bar, open_store(url) as target:
                count = rebuild(target, obj.paths["index"], progress=bar, force=True)
            click.echo(f"reindex: {count} articles indexed on PostgreSQL")
    then = "" if not no_reindex else " and run `kb reindex`"
    click.echo(f"Done. Now set DATABASE_URL={shown_url(url)} (KB_DATABASE_URL, or database_url in kb.toml){then}; "
               "keep the same KB_SECRET_KEY (or the data directory's secret_key file) so sign-ins stay valid.")


@cli.group()
def report() -> None:
    """Reports for staff to review."""


@report.command("queries")
@click.option("--days", default=30, show_default=True, type=click.IntRange(1, 3650))
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def report_queries(obj: Context, days: int, as_json: bool) -> None:
    """Top and zero-result queries, with vocabulary candidates for zero-result lay terms."""
    from kb.querylog import printable_tree
    from kb.querylog import report as query_report

    with obj.store() as store:
        data = query_report(store, days)  # every word of a zero-result query is a vocabulary candidate
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))  # query text already printable; JSON is ASCII
    else:
        _print_tree(printable_tree(data))  # patients typed this text: no escape sequence reaches the terminal


# -- staff users and API tokens (library: kb.users) ------------------------------------------------------------

def _read_password(prompt: str) -> str:
    """Ask twice on a terminal; read one line from standard input otherwise (scripts, CI)."""
    if sys.stdin.isatty():
        return click.prompt(prompt, hide_input=True, confirmation_prompt=True)
    line = sys.stdin.readline()
    if not line:
        raise KBError("No password on standard input.", "Pipe the password in, e.g. `printf '%s\\n' \"$PW\" | kb user add NAME`.")
    return line.rstrip("\r\n")


@cli.group()
def user() -> None:
    """Staff accounts for the web sign-in (patients need none)."""


@user.command("add")
@click.argument("name")
@pass_ctx
def user_add(obj: Context, name: str) -> None:
    """Create a staff user; the password is asked for (or read from standard input)."""
    from kb.users import add_user, check_name

    check_name(name)
    with obj.store() as store:
        if _user_exists(store, name):
            from kb.users import UserError

            raise UserError(f"There is already a user called {name!r}.", "Change the password with `kb user passwd`.")
        created = add_user(store, name, _read_password(f"Password for {name}"))
    click.echo(f"user {created.name} added (staff)")


def _user_exists(store, name: str) -> bool:
    from kb.users import get_user

    return get_user(store, name) is not None


@user.command("remove")
@click.argument("name")
@pass_ctx
def user_remove(obj: Context, name: str) -> None:
    """Delete a user; their sessions and API tokens stop working at once."""
    from kb.users import remove_user

    with obj.store() as store:
        remove_user(store, name)
    click.echo(f"user {name} removed")


@user.command("passwd")
@click.argument("name")
@pass_ctx
def user_passwd(obj: Context, name: str) -> None:
    """Set a new password (asked for, or read from standard input); open sessions of the user end."""
    from kb.users import UserError, set_password

    with obj.store() as store:
        if not _user_exists(store, name):
            raise UserError(f"There is no user called {name!r}.", "See `kb user list`.")
        set_password(store, name, _read_password(f"New password for {name}"))
    click.echo(f"password of {name} changed")


@user.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def user_list(obj: Context, as_json: bool) -> None:
    """Staff users with their creation time and last sign-in."""
    from kb.users import list_users

    with obj.store() as store:
        found = list_users(store)
    if as_json:
        click.echo(json.dumps([{"name": u.name, "role": u.role, "created_at": u.created_at,
                                "last_login_at": u.last_login_at} for u in found], indent=2))
        return
    if not found:
        click.echo("No users yet. Add one with `kb user add NAME`.")
    for u in found:
        click.echo(f"{u.name}  {u.role}  created {u.created_at}  last sign-in {u.last_login_at or 'never'}")


@user.command("audit")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def user_audit(obj: Context, limit: int, as_json: bool) -> None:
    """Recent sign-ins, failed sign-ins, token use and account changes, newest first."""
    from kb.users import recent_audit

    with obj.store() as store:
        rows = recent_audit(store, limit)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['at']}  {row['event']:<16} {row['user'] or '-'}  {row['detail']}".rstrip())


@cli.group()
def token() -> None:
    """API tokens for staff scripts, sent as `Authorization: Bearer TOKEN`."""


@token.command("create")
@click.argument("user_name", metavar="USER")
@click.option("--name", "label", default="", help="What the token is for (shown by `kb token list`).")
@pass_ctx
def token_create(obj: Context, user_name: str, label: str) -> None:
    """Create a token for USER and print it once (only its hash is kept)."""
    from kb.users import create_token

    with obj.store() as store:
        created, secret = create_token(store, user_name, label)
    click.echo(secret)
    click.echo(f"token {created.id} for {created.user} created; it is shown only now, keep it secret. "
               f"Revoke it with `kb token revoke {created.id}`.", err=True)


@token.command("revoke")
@click.argument("token_id", metavar="ID", type=int)
@pass_ctx
def token_revoke(obj: Context, token_id: int) -> None:
    """Revoke a token by its id (see `kb token list`); it stops working at once."""
    from kb.users import revoke_token

    with obj.store() as store:
        revoked = revoke_token(store, token_id)
    click.echo(f"token {revoked.id} of {revoked.user} revoked")


@token.command("list")
@click.option("--user", "user_name", help="Only this user's tokens.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def token_list(obj: Context, user_name: str | None, as_json: bool) -> None:
    """Tokens with their first characters, creation, last use and revocation (never the token itself)."""
    from kb.users import list_tokens

    with obj.store() as store:
        found = list_tokens(store, user_name)
    if as_json:
        click.echo(json.dumps([t.__dict__ for t in found], indent=2))
        return
    if not found:
        click.echo("No API tokens. Create one with `kb token create USER`.")
    for t in found:
        state = f"revoked {t.revoked_at}" if t.revoked_at else "active"
        click.echo(f"{t.id}  {t.user}  {t.name or '-'}  {t.hint}…  created {t.created_at}  "
                   f"last used {t.last_used_at or 'never'}  {state}")


@cli.group()
def vocab() -> None:
    """The medical vocabulary: lay <-> clinical, brand <-> generic, devices (kb/data/vocabulary.toml)."""


_vocab_file = click.option("--file", "path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                           help="A vocabulary file to use instead of the shipped one.")


@vocab.command("list")
@click.option("--kind", help="Only entries of this kind (lay, brand, device, procedure, abbreviation, synonym).")
@_vocab_file
def vocab_list(kind: str | None, path: Path | None) -> None:
    """One line per entry: label, other terms, kind and relation, source."""
    from kb.vocab import list_lines, vocabulary

    for line in list_lines(vocabulary(path), kind):
        click.echo(line)


@vocab.command("check")
@_vocab_file
def vocab_check(path: Path | None) -> None:
    """Check the vocabulary (sources, duplicates, forms the analyzer would split); exit 1 on problems."""
    from kb.vocab import Vocabulary

    vocabulary = Vocabulary.load(path)
    problems = vocabulary.check()
    for problem in problems:
        click.echo(problem, err=True)
    if problems:
        raise KBError(f"{len(problems)} problem(s) in the vocabulary.", "Fix the entries listed above.")
    click.echo(f"vocabulary ok: {len(vocabulary.entries)} entries")


@vocab.command("test")
@click.argument("terms", nargs=-1, required=True)
@_vocab_file
def vocab_test(terms: tuple[str, ...], path: Path | None) -> None:
    """Show how TERMS are analysed, rewritten and expanded, and which words are never fuzzed."""
    from kb.vocab import explain_lines, vocabulary

    for line in explain_lines(vocabulary(path), " ".join(terms)):
        click.echo(line)


# -- measurement: benchmarks and evaluation live in kb/bench/, wired here --------------------------

def _add_bench_commands() -> None:
    from kb.bench.eval import eval_command
    from kb.bench.extract import extract_command
    from kb.bench.perf import bench_command

    bench_command.add_command(extract_command)
    cli.add_command(bench_command, "bench")
    cli.add_command(eval_command, "eval")


_add_bench_commands()


if __name__ == "__main__":  # `python -m kb.cli ...`
    cli()
