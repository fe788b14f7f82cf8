from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from foresight.config import DEFAULT_SECRET, Settings

ROOT = Path(__file__).resolve().parent.parent


def test_env_example_documents_every_setting() -> None:
    documented = set(
        re.findall(r"^#?\s*(FORESIGHT_[A-Z_]+)=", (ROOT / ".env.example").read_text(), re.M)
    )
    expected = {f"FORESIGHT_{name.upper()}" for name in Settings.model_fields}
    assert expected <= documented, f"undocumented: {sorted(expected - documented)}"
    assert documented <= expected, f"documented but unknown: {sorted(documented - expected)}"


def test_production_refuses_the_default_secret() -> None:
    with pytest.raises(ValidationError, match="FORESIGHT_SECRET_KEY"):
        Settings(_env_file=None, env="production")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="at least 32"):
        Settings(_env_file=None, env="production", secret_key="short")  # type: ignore[call-arg]
    ok = Settings(_env_file=None, env="production", secret_key="s" * 40)  # type: ignore[call-arg]
    assert ok.secret_key.get_secret_value() != DEFAULT_SECRET


def test_database_url_defaults_to_sqlite_in_data_dir(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    assert settings.effective_database_url == f"sqlite:///{tmp_path.as_posix()}/foresight.db"
    pg = Settings(_env_file=None, database_url="postgresql+psycopg://u@h/db")  # type: ignore[call-arg]
    assert pg.effective_database_url.startswith("postgresql+psycopg://")


def test_settings_read_environment_and_dotenv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("FORESIGHT_PORT=9123\nFORESIGHT_LOG_LEVEL=DEBUG\n")
    monkeypatch.setenv("FORESIGHT_LOG_LEVEL", "WARNING")
    settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert settings.port == 9123
    assert settings.log_level == "WARNING"  # the environment wins over .env
