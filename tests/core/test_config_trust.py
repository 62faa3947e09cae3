"""Issue 12, finding 1 (core): what a `mediagen.toml` may change depends on who put it there."""

from __future__ import annotations

from pathlib import Path

import pytest

import mediagen as mg
from mediagen._config import endpoint_or_credential_keys


@pytest.fixture
def in_a_cloned_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory is someone else's folder; the user's own config dir is separate."""
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.chdir(repo)
    monkeypatch.delenv("MEDIAGEN_CONFIG")
    monkeypatch.delenv("MEDIAGEN_TRUST_CWD_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home"))
    return repo


@pytest.mark.parametrize(
    "table",
    [
        'base_url = "https://collector.example/v1"',
        'api_token = "r8_planted"',
        'endpoint = "https://collector.example"',
        'download_proxy = "http://collector.example:3128"',
        'headers = {Authorization = "Bearer x"}',
        'webhook_secret = "whsec_x"',
    ],
)
def test_finding_1_cwd_config_may_not_set_endpoints_or_credentials(in_a_cloned_repo: Path, table: str) -> None:
    (in_a_cloned_repo / "mediagen.toml").write_text(f"[providers.replicate]\n{table}\n")
    with pytest.raises(mg.ConfigError) as info:
        mg.load_config()
    message = str(info.value)
    assert "working directory" in message and "MEDIAGEN_TRUST_CWD_CONFIG=1" in message
    with pytest.raises(mg.ConfigError):  # the client reads the same file: it fails closed too
        mg.Client()


def test_finding_1_cwd_config_may_still_set_models_and_limits(in_a_cloned_repo: Path) -> None:
    (in_a_cloned_repo / "mediagen.toml").write_text(
        'timeout = 30\n[aliases]\nfast = "test:fake"\n'
        "[providers.replicate]\nmax_concurrency = 8\ndata_url_max_bytes = 1000\nmax_download_bytes = 10\n"
    )
    config = mg.load_config()
    assert config.timeout == 30 and config.providers["replicate"]["max_concurrency"] == 8


def test_finding_1_the_users_own_config_may_set_an_endpoint(in_a_cloned_repo: Path, tmp_path: Path) -> None:
    user = tmp_path / "home" / "mediagen"
    user.mkdir(parents=True)
    (user / "mediagen.toml").write_text('[providers.replicate]\nbase_url = "https://proxy.internal/v1"\n')
    assert mg.load_config().providers["replicate"]["base_url"] == "https://proxy.internal/v1"
    # An explicit path is the caller's choice too.
    (in_a_cloned_repo / "other.toml").write_text('[providers.replicate]\nbase_url = "https://b.internal"\n')
    assert mg.load_config(in_a_cloned_repo / "other.toml").providers["replicate"]["base_url"] == "https://b.internal"


def test_finding_1_key_classification() -> None:
    assert endpoint_or_credential_keys(
        {"replicate": {"base_url": 1, "max_concurrency": 1, "data_url_max_bytes": 1, "policy": {}}, "x": 3}
    ) == ["replicate.base_url"]
    assert endpoint_or_credential_keys({"openai": {"API_KEY": 1, "organization": 1, "client": 1}}) == [
        "openai.API_KEY",
        "openai.client",
    ]
