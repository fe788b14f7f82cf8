"""Production refuses the public default secret and short secrets."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from foresight.config import DEFAULT_SECRET, Environment, Settings


@pytest.fixture(autouse=True)
def _no_secret_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FORESIGHT_SECRET_KEY", raising=False)


def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


def test_production_refuses_the_default_secret() -> None:
    with pytest.raises(ValidationError, match="FORESIGHT_SECRET_KEY must be set"):
        _settings(env="production")
    with pytest.raises(ValidationError, match="FORESIGHT_SECRET_KEY must be set"):
        _settings(env="production", secret_key=DEFAULT_SECRET)


def test_production_refuses_a_short_secret() -> None:
    with pytest.raises(ValidationError, match="at least 32 characters"):
        _settings(env="production", secret_key="s3cret-but-short")
    with pytest.raises(ValidationError, match="at least 32 characters"):
        _settings(env="production", secret_key="x" * 31)


def test_production_accepts_a_long_private_secret() -> None:
    settings = _settings(env="production", secret_key="k" * 32)
    assert settings.env is Environment.production
    assert settings.secret_key.get_secret_value() == "k" * 32


def test_production_secret_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORESIGHT_ENV", "production")
    monkeypatch.setenv("FORESIGHT_SECRET_KEY", "an-environment-provided-secret-0123456789")
    assert _settings().env is Environment.production
    monkeypatch.delenv("FORESIGHT_SECRET_KEY")
    with pytest.raises(ValidationError):
        _settings()


@pytest.mark.parametrize("env", ["development", "test"])
def test_other_environments_allow_the_default_secret(env: str) -> None:
    assert _settings(env=env).secret_key.get_secret_value() == DEFAULT_SECRET


def test_secret_is_not_shown_in_repr() -> None:
    settings = _settings(env="production", secret_key="a-very-private-secret-value-0123456789")
    assert "a-very-private-secret-value" not in repr(settings)
