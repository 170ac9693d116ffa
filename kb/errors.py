"""Exceptions, including documented flow-control ones (after Scrapy's DropItem, IgnoreRequest)."""


class KBError(Exception):
    """An error with a message fit to show a user; `remedy` says what to do next."""

    exit_code = 1

    def __init__(self, message: str, remedy: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.remedy = remedy

    def __str__(self) -> str:
        return f"{self.message} {self.remedy}".strip()


class ConfigError(KBError):
    """A setting or the sources file is invalid."""

    exit_code = 2


class SkipPage(KBError):
    """Raised while fetching or extracting: this URL yields no article, for `reason` (recorded, not fatal)."""

    def __init__(self, reason: str, kind: str = "skipped") -> None:
        super().__init__(reason)
        self.kind = kind


class BlockedByRobots(SkipPage):
    """robots.txt disallows this URL for our user agent."""

    def __init__(self, url: str) -> None:
        super().__init__(f"robots.txt disallows {url}", kind="robots")


class FetchError(SkipPage):
    """The request failed (network, timeout, HTTP error status, too large)."""

    def __init__(self, reason: str, kind: str = "fetch", status: int | None = None) -> None:
        super().__init__(reason, kind=kind)
        self.status = status


class IndexUnavailable(KBError):
    """No searchable index yet (or it cannot be read)."""

    exit_code = 3


class IndexDamaged(IndexUnavailable):
    """The current index generation cannot be read: it counts as no index until `kb reindex` replaces it."""

    def __init__(self, message: str, remedy: str = "Run `kb reindex` to rebuild it from the store "
                 "(no crawl needed).") -> None:
        super().__init__(message, remedy)


class LockHeld(KBError):
    """Another writer (crawl, reindex, update) holds the data-directory lock."""

    exit_code = 75  # EX_TEMPFAIL: try again later
