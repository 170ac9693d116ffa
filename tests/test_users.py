"""kb.users and `kb user` / `kb token`: hashed passwords, rehash on sign-in, equal work for unknown names,
sessions that end, hashed API tokens, the audit log; CLI messages instead of tracebacks."""

from __future__ import annotations

import json
import sqlite3
import threading
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from werkzeug.security import generate_password_hash

from kb import users
from kb.cli import cli
from kb.config import data_paths
from kb.store import Store, open_store
from kb.users import UserError

PASSWORD = "correct horse battery"


def all_text(db: sqlite3.Connection) -> str:
    """Every value of every row of every table, so a secret anywhere in the database is found."""
    out = []
    for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
        for row in db.execute(f"SELECT * FROM {table}"):
            out.extend(str(v) for v in tuple(row))
    return "\n".join(out)


def test_passwords_are_stored_only_as_scrypt_hashes(store: Store, data_dir: Path) -> None:
    users.add_user(store, "alice", PASSWORD)
    stored = store.get_user("alice")["password_hash"]
    assert stored.startswith("scrypt:") and PASSWORD not in stored
    assert PASSWORD not in all_text(store.db)
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = b"".join(p.read_bytes() for p in data_dir.glob("kb.sqlite3*"))
    assert PASSWORD.encode() not in raw


def test_authenticate_right_wrong_and_unknown(any_store: Store) -> None:
    created = users.add_user(any_store, "alice", PASSWORD)
    assert users.authenticate(any_store, "alice", PASSWORD).id == created.id
    assert users.authenticate(any_store, "ALICE", PASSWORD).name == "alice"  # names are case-insensitive
    assert users.authenticate(any_store, "alice", PASSWORD + "x") is None
    assert users.authenticate(any_store, "bob", PASSWORD) is None
    assert users.authenticate(any_store, "", "") is None
    assert users.authenticate(any_store, "alice", "x" * 100_000) is None  # overlong input is just wrong


def test_unknown_names_cost_one_hash_check_like_known_ones(any_store: Store, monkeypatch) -> None:
    users.add_user(any_store, "alice", PASSWORD)
    checked: list[str] = []
    original = users.check_password_hash

    def spy(stored: str, password: str) -> bool:
        checked.append(stored.split("$", 1)[0])
        return original(stored, password)

    monkeypatch.setattr(users, "check_password_hash", spy)
    for name in ("alice", "nobody", "bad name!", ""):
        users.authenticate(any_store, name, "wrong password")
    assert checked == [users.PASSWORD_METHOD] * 4  # same method, same cost, whether the name exists or not


def test_old_hash_format_is_upgraded_on_sign_in(any_store: Store) -> None:
    alice = users.add_user(any_store, "alice", PASSWORD)
    old = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")
    any_store.replace_password_hash(alice.id, old)
    assert users.authenticate(any_store, "alice", "wrong password") is None
    assert any_store.get_user("alice")["password_hash"] == old  # no upgrade on failure
    assert users.authenticate(any_store, "alice", PASSWORD) is not None
    new = any_store.get_user("alice")["password_hash"]
    assert new.startswith(users.PASSWORD_METHOD + "$") and new != old
    assert users.authenticate(any_store, "alice", PASSWORD) is not None
    assert any_store.get_user("alice")["password_hash"] == new  # current: left alone


def test_a_damaged_hash_signs_nobody_in(any_store: Store) -> None:
    alice = users.add_user(any_store, "alice", PASSWORD)
    any_store.replace_password_hash(alice.id, "nonsense")
    assert users.authenticate(any_store, "alice", PASSWORD) is None


@pytest.mark.parametrize("name", ["", " ", "a b", "-dash", "x" * 65, "semi;colon", "ünïcode"])
def test_bad_user_names_are_refused_with_a_remedy(any_store: Store, name: str) -> None:
    with pytest.raises(UserError) as err:
        users.add_user(any_store, name, PASSWORD)
    assert "letters" in err.value.remedy


@pytest.mark.parametrize("password", ["short", " leading space is bad", "line\nbreak password", "x" * 1025])
def test_weak_or_odd_passwords_are_refused(any_store: Store, password: str) -> None:
    with pytest.raises(UserError):
        users.add_user(any_store, "alice", password)
    assert users.list_users(any_store) == []


def test_duplicate_names_are_refused_whatever_the_case(any_store: Store) -> None:
    users.add_user(any_store, "alice", PASSWORD)
    with pytest.raises(UserError, match="already"):
        users.add_user(any_store, "Alice", PASSWORD)
    assert [u.name for u in users.list_users(any_store)] == ["alice"]


def test_sessions_start_end_expire_and_are_stored_hashed(store: Store) -> None:
    alice = users.add_user(store, "alice", PASSWORD)
    sid = users.start_session(store, alice)
    assert users.session_user(store, sid).name == "alice"
    assert sid not in all_text(store.db)
    assert users.session_user(store, sid + "x") is None and users.session_user(store, "") is None
    assert users.get_user(store, "alice").last_login_at
    users.end_session(store, sid)
    assert users.session_user(store, sid) is None
    expired = users.start_session(store, alice, hours=-1)
    assert users.session_user(store, expired) is None


def test_new_password_ends_sessions_and_removal_ends_everything(any_store: Store) -> None:
    alice = users.add_user(any_store, "alice", PASSWORD)
    sid = users.start_session(any_store, alice)
    _, secret = users.create_token(any_store, "alice", "script")
    users.set_password(any_store, "alice", "another long password")
    assert users.session_user(any_store, sid) is None
    assert users.authenticate(any_store, "alice", PASSWORD) is None
    assert users.authenticate(any_store, "alice", "another long password") is not None
    assert users.token_user(any_store, secret) is not None  # tokens survive a password change
    sid = users.start_session(any_store, alice)
    users.remove_user(any_store, "alice")
    assert users.session_user(any_store, sid) is None and users.token_user(any_store, secret) is None
    assert users.list_users(any_store) == [] and users.list_tokens(any_store) == []
    with pytest.raises(UserError, match="no user"):
        users.remove_user(any_store, "alice")
    with pytest.raises(UserError, match="no user"):
        users.set_password(any_store, "alice", "another long password")


def test_api_tokens_are_hashed_revocable_and_their_use_is_audited(store: Store) -> None:
    users.add_user(store, "alice", PASSWORD)
    token, secret = users.create_token(store, "alice", "nightly report")
    assert secret.startswith(users.TOKEN_PREFIX) and len(secret) > 40
    assert secret not in all_text(store.db) and token.hint == secret[:len(token.hint)]
    assert token.active and token.last_used_at is None
    assert users.token_user(store, secret, path="/api/search").name == "alice"
    assert users.list_tokens(store)[0].last_used_at
    assert users.token_user(store, secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert users.token_user(store, "not-a-kb-token") is None
    used = [r for r in users.recent_audit(store) if r["event"] == "token_used"]
    assert used and used[0]["user"] == "alice" and "/api/search" in used[0]["detail"]
    users.revoke_token(store, token.id)
    assert users.token_user(store, secret) is None
    assert not users.list_tokens(store, "alice")[0].active
    with pytest.raises(UserError, match="already revoked"):
        users.revoke_token(store, token.id)
    with pytest.raises(UserError, match="no API token"):
        users.revoke_token(store, 999)
    with pytest.raises(UserError, match="no user"):
        users.create_token(store, "bob")


def test_audit_log_records_account_events_without_secrets(store: Store) -> None:
    users.add_user(store, "alice", PASSWORD)
    users.set_password(store, "alice", "another long password")
    token, secret = users.create_token(store, "alice")
    users.revoke_token(store, token.id)
    users.remove_user(store, "alice")
    events = [r["event"] for r in reversed(users.recent_audit(store))]
    assert events == ["user_added", "password_changed", "token_created", "token_revoked", "user_removed"]
    text = all_text(store.db)
    assert PASSWORD not in text and "another long password" not in text and secret not in text


# -- sign-in attempts --------------------------------------------------------------------------------------------

LIMIT = {"limit": 10, "window": 60.0}


def test_sign_in_attempts_are_counted_per_address_in_the_store(store: Store, data_dir: Path) -> None:
    now = 1_000_000.0
    with open_store(data_paths(data_dir)["store"]) as other_worker:  # another process's connection to the same store
        for n in range(10):
            assert users.begin_login_attempt((store, other_worker)[n % 2], "203.0.113.7", now=now + n, **LIMIT)
        assert users.begin_login_attempt(store, "203.0.113.7", now=now + 10, **LIMIT) is None
        assert users.begin_login_attempt(other_worker, "203.0.113.7", now=now + 10, **LIMIT) is None
        assert users.begin_login_attempt(other_worker, "203.0.113.8", now=now + 10, **LIMIT)  # its own budget
    # The oldest attempt leaves the window a minute after it was made; a refusal did not count.
    assert users.begin_login_attempt(store, "203.0.113.7", now=now + 59.5, **LIMIT) is None
    assert users.begin_login_attempt(store, "203.0.113.7", now=now + 60.5, **LIMIT)
    assert users.begin_login_attempt(store, "203.0.113.7", now=now + 60.6, **LIMIT) is None


def test_a_successful_attempt_is_given_back(store: Store) -> None:
    for _ in range(25):
        attempt = users.begin_login_attempt(store, "198.51.100.1", **LIMIT)
        assert attempt is not None
        users.end_login_attempt(store, attempt)
    assert store.db.execute("SELECT count(*) FROM login_attempts").fetchone()[0] == 0


def test_concurrent_attempts_never_exceed_the_limit(data_dir: Path) -> None:
    path = data_paths(data_dir)["store"]
    open_store(path).close()
    start = threading.Barrier(8)

    def guess() -> int:
        granted = 0
        with open_store(path) as own:  # one connection per thread, as each worker thread has
            start.wait()
            for _ in range(5):
                granted += users.begin_login_attempt(own, "192.0.2.50", **LIMIT) is not None
        return granted

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(lambda _: guess(), range(8))) == 10


def test_ipv6_clients_are_counted_per_64_block(store: Store) -> None:
    assert users.client_key("2001:db8:1:2:aaaa::1") == users.client_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert users.client_key("::ffff:203.0.113.7") == users.client_key("203.0.113.7") == "203.0.113.7"
    assert users.client_key(None) == "?"
    # One client holds a whole /64: a new address per guess must not mean a new budget per guess.
    assert all(users.begin_login_attempt(store, f"2001:db8:5:6::{n + 1:x}", **LIMIT) for n in range(10))
    assert users.begin_login_attempt(store, "2001:db8:5:6:ffff:ffff:ffff:fffe", **LIMIT) is None
    assert users.begin_login_attempt(store, "2001:db8:5:7::1", **LIMIT)  # the next /64 is another client


def test_a_store_from_before_the_limit_gets_its_table(store: Store) -> None:
    users.add_user(store, "alice", PASSWORD)
    store.db.execute("DROP TABLE login_attempts")  # what a store made by the previous release lacks
    store.db.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    with open_store(store.path) as reopened:  # the migration runs when a store opens
        assert users.begin_login_attempt(reopened, "203.0.113.7", **LIMIT)
        assert users.get_user(reopened, "alice") is not None

# -- CLI ----------------------------------------------------------------------------------------------------------

def run_kb(runner, data_dir: Path, *args: str, input: str | None = None):
    return runner.invoke(cli, ["--data-dir", str(data_dir), *args], input=input)


def test_cli_user_commands_read_passwords_from_stdin(runner, data_dir: Path) -> None:
    result = run_kb(runner, data_dir, "user", "add", "alice", input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert "alice" in result.output and PASSWORD not in result.output
    with open_store(data_paths(data_dir)["store"]) as store:
        assert users.authenticate(store, "alice", PASSWORD) is not None
    listed = run_kb(runner, data_dir, "user", "list", "--json")
    assert [u["name"] for u in json.loads(listed.output)] == ["alice"]
    assert run_kb(runner, data_dir, "user", "passwd", "alice", input="a new long password\n").exit_code == 0
    with open_store(data_paths(data_dir)["store"]) as store:
        assert users.authenticate(store, "alice", "a new long password") is not None
    assert "alice" in run_kb(runner, data_dir, "user", "list").output
    audit = run_kb(runner, data_dir, "user", "audit").output
    assert "user_added" in audit and "password_changed" in audit and PASSWORD not in audit
    assert run_kb(runner, data_dir, "user", "remove", "alice").exit_code == 0
    assert "No users yet" in run_kb(runner, data_dir, "user", "list").output


def test_cli_user_add_prompts_twice_on_a_terminal(runner, data_dir: Path, monkeypatch) -> None:
    import kb.cli as cli_module

    fake_sys = types.SimpleNamespace(stdin=types.SimpleNamespace(isatty=lambda: True), stderr=cli_module.sys.stderr)
    monkeypatch.setattr(cli_module, "sys", fake_sys)
    result = run_kb(runner, data_dir, "user", "add", "alice", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert "Repeat for confirmation" in result.output and PASSWORD not in result.output
    with open_store(data_paths(data_dir)["store"]) as store:
        assert users.authenticate(store, "alice", PASSWORD) is not None


def test_cli_errors_are_messages_not_tracebacks(runner, data_dir: Path) -> None:
    short = run_kb(runner, data_dir, "user", "add", "alice", input="short\n")
    assert short.exit_code == 2 and "too short" in short.output and "Traceback" not in short.output
    empty = run_kb(runner, data_dir, "user", "add", "alice", input="")
    assert empty.exit_code != 0 and "No password on standard input" in empty.output
    assert run_kb(runner, data_dir, "user", "add", "bad name", input=PASSWORD + "\n").exit_code == 2
    run_kb(runner, data_dir, "user", "add", "alice", input=PASSWORD + "\n")
    again = run_kb(runner, data_dir, "user", "add", "alice", input=PASSWORD + "\n")
    assert again.exit_code == 2 and "already" in again.output
    for args in (("user", "remove", "bob"), ("user", "passwd", "bob"), ("token", "create", "bob"),
                 ("token", "revoke", "42")):
        result = run_kb(runner, data_dir, *args, input=PASSWORD + "\n")
        assert result.exit_code == 2 and "Error:" in result.output and "Traceback" not in result.output, args


def test_cli_token_commands(runner, data_dir: Path) -> None:
    run_kb(runner, data_dir, "user", "add", "alice", input=PASSWORD + "\n")
    created = run_kb(runner, data_dir, "token", "create", "alice", "--name", "reports")
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip().splitlines()[0]
    assert secret.startswith("kb_")
    with open_store(data_paths(data_dir)["store"]) as store:
        assert users.token_user(store, secret).name == "alice"
    listed = run_kb(runner, data_dir, "token", "list")
    assert "reports" in listed.output and secret not in listed.output and "active" in listed.output
    token_id = json.loads(run_kb(runner, data_dir, "token", "list", "--json").output)[0]["id"]
    assert run_kb(runner, data_dir, "token", "revoke", str(token_id)).exit_code == 0
    assert "revoked" in run_kb(runner, data_dir, "token", "list", "--user", "alice").output
    with open_store(data_paths(data_dir)["store"]) as store:
        assert users.token_user(store, secret) is None
