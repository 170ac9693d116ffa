"""Serve the web UI and JSON API: several pre-forked worker processes on one port, or one waitress process.

Why gunicorn with `gthread` workers by default: a search costs CPU in Python (Whoosh), so one process is
capped by the GIL near 1 / (CPU per request); N worker processes share one listening socket and use N
cores. gunicorn's master restarts a crashed or hung worker, drains workers on SIGTERM (what systemd sends),
reloads them on SIGHUP, and is the standard way to run a WSGI app under systemd. A few threads per worker
overlap socket reads/writes and keep-alive connections with the search work of another request.

Why waitress stays (`--server waitress`): it is pure Python and runs where fork does not (Windows), and
`kb demo` uses it because its process also runs the demo site in a thread, and forking a threaded process
is unsafe. It serves from one process, so `workers` does not apply to it.

Fork safety: the Flask app — and with it the Searcher, SQLite connections and index file handles — is
created in each worker after the fork (`preload_app` off); the master only imports modules, so workers
share their code pages copy-on-write and start fast when one is replaced.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import sys
from typing import Any, Callable, Iterable, Mapping

from kb.errors import ConfigError, KBError

log = logging.getLogger(__name__)

SERVERS: tuple[str, ...] = ("gunicorn", "waitress")
MAX_WORKERS = 64
DEFAULT_THREADS = {"gunicorn": 4, "waitress": 8}  # per worker process; waitress has only the one
GRACEFUL_SECONDS = 10  # SIGTERM: finish requests in flight for at most this long, then exit
WORKER_TIMEOUT = 60  # a worker whose main loop misses its heartbeat this long is killed and replaced
KEEPALIVE_SECONDS = 5
WORKER_HEADER = "X-KB-Worker"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def default_server() -> str:
    """gunicorn where processes can fork and it is installed, else waitress."""
    if os.name != "posix":
        return "waitress"
    try:
        import gunicorn  # noqa: F401
    except ImportError:
        return "waitress"
    return "gunicorn"


def worker_count(settings: Mapping[str, Any], workers: int | None = None) -> int:
    """Worker processes to run: the option, else the WORKERS setting; a clear error outside 1..64."""
    value = settings.get("WORKERS") if workers is None else workers
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"Setting WORKERS={value!r} is not a whole number.",
                          "Use a number of worker processes, e.g. the number of CPU cores.") from None
    if not 1 <= count <= MAX_WORKERS:
        raise ConfigError(f"WORKERS={count} is out of range.",
                          f"Use between 1 and {MAX_WORKERS} worker processes (one per CPU core is a good start).")
    return count


def bind_address(host: str, port: int) -> str:
    """host:port as gunicorn expects it; IPv6 addresses go in brackets."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def check_port(host: str, port: int) -> None:
    """Fail early with a remedy when the address cannot be bound (gunicorn would retry, then exit tersely)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host.strip("[]"), port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise KBError(f"Port {port} on {host} is already in use.",
                          "Stop the other server, or choose another port with --port.") from None
        if exc.errno == errno.EACCES:
            raise KBError(f"Not allowed to listen on port {port}.",
                          "Use a port above 1023, or put a reverse proxy on the privileged port.") from None
        raise KBError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}.",
                      "Check --host (an address of this machine, e.g. 127.0.0.1) and --port.") from None


class WorkerHeader:
    """WSGI middleware naming the serving process in `X-KB-Worker` (WORKER_HEADER setting, for tests and
    for checking load balancing); off by default because process ids are nobody else's business."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        pid = str(os.getpid())

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers.append((WORKER_HEADER, pid))
            return start_response(status, headers, exc_info)

        return self.app(environ, start)


def build_app(settings: Mapping[str, Any]) -> Any:
    """The Flask app for one serving process; called in each worker after the fork."""
    from kb.web import create_app

    app = create_app({"DATA_DIR": settings["DATA_DIR"]})
    if app.config.get("WORKER_HEADER"):
        app.wsgi_app = WorkerHeader(app.wsgi_app)  # type: ignore[method-assign]
    return app


def gunicorn_options(settings: Mapping[str, Any], *, host: str, port: int, workers: int, threads: int,
                     access_log: bool = False) -> dict[str, Any]:
    """gunicorn settings for `kb serve` (documented in the README's production section)."""
    options: dict[str, Any] = {
        "bind": [bind_address(host, port)],
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        "preload_app": False,  # the app (Searcher, SQLite) is built in each worker, never before the fork
        "accesslog": "-" if access_log else None,
        "errorlog": "-",
        "loglevel": "info",
        "graceful_timeout": GRACEFUL_SECONDS,
        "timeout": WORKER_TIMEOUT,
        "keepalive": KEEPALIVE_SECONDS,
        "proc_name": "kb",
        # X-Forwarded-* are trusted through PROXY_HOPS (kb.web.auth) only, not from any local client.
        "forwarded_allow_ips": "",
        # Another kb serve (or any gunicorn) of this user must not share a control socket in ~/.gunicorn.
        "control_socket_disable": True,
    }
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        options["worker_tmp_dir"] = "/dev/shm"  # heartbeat files off disk (a slow disk must not look like a hang)
    return options


def _gunicorn_application(factory: Callable[[], Any], options: Mapping[str, Any]) -> Any:
    try:
        from gunicorn.app.base import BaseApplication
        from gunicorn.arbiter import Arbiter
    except ImportError:
        raise KBError("gunicorn is not installed, so kb cannot run several worker processes.",
                      "Install it (pip install 'gunicorn>=22'), or use --server waitress.") from None

    class KBApplication(BaseApplication):  # type: ignore[misc]
        """gunicorn configured from a mapping, not from sys.argv or a config file."""

        def load_config(self) -> None:
            known = self.cfg.settings
            for key, value in options.items():
                if key in known:  # settings newer than the installed gunicorn are skipped
                    self.cfg.set(key, value)

        def load(self) -> Any:
            try:
                return factory()
            except KBError as exc:  # a clear line in the log instead of a worker traceback, then the
                # exit code that makes the master stop, rather than respawn workers that cannot start
                print(f"Error: {exc.message}\n{exc.remedy}".rstrip(), file=sys.stderr, flush=True)
                raise SystemExit(Arbiter.APP_LOAD_ERROR) from None

    return KBApplication()


def serve(settings: Mapping[str, Any], *, host: str = "127.0.0.1", port: int = 5000, workers: int | None = None,
          threads: int | None = None, server: str | None = None, access_log: bool = False,
          echo: Callable[[str], None] = print) -> None:
    """Serve until SIGTERM or Ctrl-C; `workers` defaults to the WORKERS setting, `server` to gunicorn."""
    server = server or default_server()
    if server not in SERVERS:
        raise ConfigError(f"Unknown server {server!r}.", f"Use one of: {', '.join(SERVERS)}.")
    count = worker_count(settings, workers)
    threads = threads or DEFAULT_THREADS[server]
    check_port(host, port)
    if server == "waitress":
        if workers is not None and workers > 1:  # asked for on the command line, not the WORKERS default
            log.warning("waitress serves from one process: --workers %d does not apply", workers)
        echo(f"kb: serving on http://{bind_address(host, port)}/ with waitress, one process, "
             f"{threads} threads (Ctrl-C to stop)")
        _serve_waitress(settings, host=host, port=port, threads=threads, access_log=access_log)
        return
    import kb.search  # noqa: F401 - import (never open) in the master: workers share these pages
    import kb.web  # noqa: F401

    options = gunicorn_options(settings, host=host, port=port, workers=count, threads=threads,
                               access_log=access_log)
    application = _gunicorn_application(lambda: build_app(settings), options)
    echo(f"kb: serving on http://{bind_address(host, port)}/ with gunicorn, {count} worker processes x "
         f"{threads} threads (Ctrl-C or SIGTERM to stop)")
    from gunicorn.errors import HaltServer

    try:
        application.run()
    except HaltServer as exc:  # workers could not start: they logged why; the master must not respawn forever
        raise KBError(f"kb serve stopped: {exc.reason}",
                      "The lines above say why the workers could not start; fix that and start again.") from None


def _serve_waitress(settings: Mapping[str, Any], *, host: str, port: int, threads: int, access_log: bool) -> None:
    from waitress import serve as waitress_serve

    if access_log:
        log.warning("waitress writes no access log; use --server gunicorn for one")
    app = build_app(settings)

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)  # waitress closes its sockets on SystemExit, as on Ctrl-C

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        waitress_serve(app, host=host, port=port, threads=threads, ident="kb")
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        app.extensions["kb"].close()


def interruptible() -> None:
    """Let Ctrl-C (SIGINT) stop this process even when a shell started it in the background.

    A non-interactive shell starts `cmd &` with SIGINT ignored, and Python then installs no KeyboardInterrupt
    handler: `kill -INT` and a later Ctrl-C after `fg` would do nothing.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
