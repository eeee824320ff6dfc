"""The gateway on PostgreSQL (store.backend = "postgres"), through the real binary.

``vectorway migrate status|up`` against a fresh database, a schema newer than the binary
refused by both ``migrate status`` and ``serve``, and two gateways on one database: a key
created through the first authenticates on the second (the OpenAI SDK sees the wallet's
balance, not an unknown key).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import openai
import pytest

from conftest import (
    CLIENT_TIMEOUT_S,
    UPSTREAM_API_KEY,
    ManagedProcess,
    _wait_for_gateway,
    child_env,
)


def pg_env(url: str, data_dir: Path, upstream: str) -> dict[str, str]:
    return child_env(
        {
            "VECTORWAY_SERVER__LISTEN": "127.0.0.1:0",
            "VECTORWAY_STORE__DATA_DIR": str(data_dir),
            "VECTORWAY_STORE__BACKEND": "postgres",
            "VECTORWAY_STORE__POSTGRES_URL": url,
            "VECTORWAY_UPSTREAM__BASE_URL": upstream,
            "VECTORWAY_X402__FACILITATOR_URL": f"{upstream}/facilitator",
            "GEMINI_API_KEY": UPSTREAM_API_KEY,
        }
    )


def run(binary: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), *args], env=env, capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_migrate_status_up_and_a_newer_schema(
    vectorway_bin: Path, postgres_url: str, postgres_cluster, tmp_path: Path
) -> None:
    env = pg_env(postgres_url, tmp_path, "http://127.0.0.1:9")
    status = run(vectorway_bin, env, "migrate", "status")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    # Every migration the binary knows is pending on a fresh database, oldest first.
    assert report["applied"] == [] and report["pending"][0] == 1
    assert report["pending"] == sorted(report["pending"])
    assert report["pending"][-1] == report["latest"]

    up = run(vectorway_bin, env, "migrate", "up")
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)["applied_now"] == report["pending"]
    again = json.loads(run(vectorway_bin, env, "migrate", "up").stdout)
    assert again["applied_now"] == [] and again["applied"] == report["pending"]

    db = postgres_url.rsplit("/", 1)[1]
    postgres_cluster.psql(db, "INSERT INTO schema_migrations (version, name) VALUES (9999, 'future')")
    newer = run(vectorway_bin, env, "migrate", "status")
    assert newer.returncode == 1
    assert json.loads(newer.stdout)["unknown"] == [9999]
    serve = run(vectorway_bin, env, "serve")
    assert serve.returncode != 0
    assert "newer than this gateway knows" in serve.stderr + serve.stdout


def test_a_key_made_on_one_gateway_works_on_another(
    vectorway_bin: Path,
    postgres_url: str,
    simulator: ManagedProcess,
    tmp_path_factory: pytest.TempPathFactory,
    log_dir: Path,
    request: pytest.FixtureRequest,
) -> None:
    upstream = simulator.wait_for_url()

    def start(name: str) -> tuple[str, Path, dict[str, str]]:
        data_dir = tmp_path_factory.mktemp(name)
        env = pg_env(postgres_url, data_dir, upstream)
        proc = ManagedProcess(name, [str(vectorway_bin), "serve"], env, log_dir / f"{name}.log")
        request.addfinalizer(proc.stop)
        return _wait_for_gateway(proc, data_dir), data_dir, env

    url_a, dir_a, env_a = start("pg-a")
    made = run(vectorway_bin, env_a, "admin", "create-key", "--data-dir", str(dir_a),
               "--wallet", "0x" + "3" * 40, "--name", "shared")
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout.strip().splitlines()[-1])["api_key"]
    # Gateway B starts after the key was made, on its own data directory: it finds the key in
    # PostgreSQL. (B loads keys at start; visibility without a restart is issue 17's next step.)
    url_b, _, _ = start("pg-b")
    for url in (url_a, url_b):
        c = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=CLIENT_TIMEOUT_S)
        with pytest.raises(openai.APIStatusError) as err:
            c.chat.completions.create(
                model="gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}]
            )
        # Known key, no credits: 402, where an unknown key would be 401.
        assert err.value.status_code == 402, (url, err.value.body)
    bad = openai.OpenAI(base_url=f"{url_b}/v1", api_key=key[:-2] + "zz", max_retries=0,
                        timeout=CLIENT_TIMEOUT_S)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}])
