"""Real `kb` processes over a filled data directory: the command line, a clean environment, varied articles.

Shared by the tests that run kb as separate processes (tests/test_downtime.py, tests/test_crash.py).
"""

from __future__ import annotations

import http.client
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from kb.config import data_paths
from kb.models import Article, Section
from kb.store import open_store

#: `python -m kb.cli` has no __main__ guard, so subprocesses call the click group directly.
KB = [sys.executable, "-c", "from kb.cli import cli; cli()"]

WORDS = ("acne rosacea eczema psoriasis melasma vitiligo urticaria dermatitis keloid wart mole lentigo "
         "retinoid isotretinoin tretinoin niacinamide azelaic benzoyl peroxide clindamycin doxycycline "
         "laser peel microneedling cryotherapy biopsy excision moisturiser emollient barrier itch redness "
         "pigment scar pore sebum follicle collagen elastin ultraviolet sunscreen spf zinc titanium").split()
TOPICS = ("acne", "rosacea", "eczema", "psoriasis", "melasma", "vitiligo")
ARTICLES = 300


def kb_env(**extra: str) -> dict[str, str]:
    """The caller's environment without KB_* settings leaking in from the developer's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KB_")}
    env.update(extra)
    return env


def kb_run(data_dir: Path, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*KB, "--data-dir", str(data_dir), *args], capture_output=True, text=True,
                          env=kb_env(**env), timeout=timeout, stdin=subprocess.DEVNULL)


def make_article(n: int, rng: random.Random, *, extra: str = "") -> Article:
    """A varied article: one main topic (in title, headings and body) and random dermatology words."""
    topic = TOPICS[n % len(TOPICS)]
    body = [f"{topic} is a common skin condition."]
    sections = []
    for s in range(3):
        words = " ".join(rng.choice(WORDS) for _ in range(40))
        text = f"{topic} treatment notes {s}: {words}. Use sunscreen daily. {extra}".strip()
        sections.append(Section(f"{topic.title()} part {s}", f"part-{s}", text))
        body.append(text)
    return Article(url=f"https://clinic.example/articles/{n}", title=f"{topic.title()} guide {n}",
                   text="\n".join(body), sections=sections, site="clinic.example",
                   tags=[topic, rng.choice(WORDS)], categories=["Conditions"],
                   published=f"20{10 + n % 14:02d}-0{1 + n % 9}-1{n % 10}")


def fill_store(data_dir: Path, count: int = ARTICLES, seed: int = 7) -> None:
    rng = random.Random(seed)
    with open_store(data_paths(data_dir)["store"]) as store:
        with store.transaction():
            for n in range(count):
                store.save_article(make_article(n, rng), source="clinic.example")


def wait_healthy(proc: subprocess.Popen, port: int, log: Callable[[], str], *,
                 ready: Callable[[], bool] = lambda: True, timeout: float = 30.0) -> None:
    """Wait until a started `kb serve` answers /healthz with 200 (and `ready()` holds); fail with its log."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"kb serve exited: {log()}"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/healthz", headers={"Connection": "close"})
            if conn.getresponse().status == 200 and ready():
                return
        except OSError:
            pass
        finally:
            conn.close()
        assert time.monotonic() < deadline, f"kb serve did not become healthy: {log()}"
        time.sleep(0.1)
