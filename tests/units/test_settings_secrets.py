"""Passwords inside the service URLs never show in the settings' repr (logs, tracebacks, doctor)."""

from __future__ import annotations

import pytest

from labmate.settings import load_settings, mask_url


def test_repr_masks_passwords_in_every_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABMATE_DATABASE_URL", "postgresql://labmate:db-s3cret@db:5432/labmate")
    monkeypatch.setenv("LABMATE_BROKER_URL", "redis://:broker-s3cret@redis:6379/0")
    monkeypatch.setenv("LABMATE_RESULT_BACKEND", "redis://default:results-s3cret@redis:6379/1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://ml:mlflow-s3cret@mlflow:5000")
    settings = load_settings()
    for shown in (repr(settings), str(settings)):
        for secret in ("db-s3cret", "broker-s3cret", "results-s3cret", "mlflow-s3cret"):
            assert secret not in shown
        assert "postgresql://labmate:***@db:5432/labmate" in shown
    assert settings.database_url.endswith("db-s3cret@db:5432/labmate")  # the value itself is intact


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u:p@h/d", "postgresql://u:***@h/d"),
        ("redis://:p@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
        ("postgresql://user@h/d", "postgresql://user@h/d"),
        # anywhere in a text: a log line, git's error quoting the URL it fetched
        ("clone https://bot:tok@git/x.git failed; 'https://bot:tok@git/x.git/'",
         "clone https://bot:***@git/x.git failed; 'https://bot:***@git/x.git/'"),
        ("http://host:8080/path@v1", "http://host:8080/path@v1"),
        ("https://git.example.com:8443/acme/train.git@main", "https://git.example.com:8443/acme/train.git@main"),
        # SQLAlchemy takes a raw `/` in a password (base64 ones often have one)
        ("postgresql+psycopg://u:Xk9/Qw+pw==@h:5432/d", "postgresql+psycopg://u:***@h:5432/d"),
        ("postgresql+psycopg://u@h/d?password=s3cret&sslmode=require", "postgresql+psycopg://u@h/d?password=***&sslmode=require"),
        ("https://h/api?token=abc123", "https://h/api?token=***"),
        # a token as the user name of a web URL (GitHub's https://<token>@github.com/…)
        ("https://ghp_TOKEN42@github.com/acme/train.git@main", "https://***@github.com/acme/train.git@main"),
        ("sqlite:////tmp/a@b.db", "sqlite:////tmp/a@b.db"),
        # an ssh login is a user name, not a token; its password still is a secret
        ("ssh://git@github.com/acme/train.git", "ssh://git@github.com/acme/train.git"),
        ("git+ssh://git:pw@h/x.git", "git+ssh://git:***@h/x.git"),
        ("git+https://ghp_TOKEN42@github.com/acme/train.git", "git+https://***@github.com/acme/train.git"),
        # presigned artifact URLs (MLflow's proxied S3, GCS and Azure stores quote them in errors)
        ("https://b.s3.amazonaws.com/a/model.pkl?X-Amz-Credential=AKIA1%2F2&X-Amz-Signature=f00d&X-Amz-Expires=60",
         "https://b.s3.amazonaws.com/a/model.pkl?X-Amz-Credential=AKIA1%2F2&X-Amz-Signature=***&X-Amz-Expires=60"),
        ("https://s.blob.core.windows.net/c/m.pkl?sv=2022-11-02&sig=abc%2Bdef%3D&se=2026",
         "https://s.blob.core.windows.net/c/m.pkl?sv=2022-11-02&sig=***&se=2026"),
        ("https://storage.googleapis.com/b/m?X-Goog-Signature=beef&x-goog-date=1",
         "https://storage.googleapis.com/b/m?X-Goog-Signature=***&x-goog-date=1"),
        ("https://h/x?refresh_token=r1&client_secret=c2", "https://h/x?refresh_token=***&client_secret=***"),
        # a Google API key, and cloud credentials written into a query
        ("https://www.googleapis.com/x?key=AIzaSyA1&alt=json", "https://www.googleapis.com/x?key=***&alt=json"),
        ("s3://b/p?secret_key=s3&session_token=t4&region=eu", "s3://b/p?secret_key=***&session_token=***&region=eu"),
        ("https://h/x?monkey=1&keyring=2", "https://h/x?monkey=1&keyring=2"),
        # a URL percent-encoded into another's query (a login redirect, an OAuth state)
        ("https://sso/login?next=https%3A%2F%2Fbot%3As3cret%40mlflow%2Fui&x=1",
         "https://sso/login?next=https%3A%2F%2Fbot%3A***%40mlflow%2Fui&x=1"),
        ("https://sso/cb?to=HTTPS%3a%2f%2fh%2Fapi%3Ftoken%3Dabc%26page%3D2",
         "https://sso/cb?to=HTTPS%3A%2F%2Fh%2Fapi%3Ftoken%3D***%26page%3D2"),
        ("https://sso/login?next=https%3A%2F%2Fmlflow%2Fui", "https://sso/login?next=https%3A%2F%2Fmlflow%2Fui"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_repr_and_as_dict_mask_the_nested_tables_urls_too(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from labmate.settings import reset_settings

    monkeypatch.setenv("LABMATE_DATABASE_URL", "postgresql://labmate:db-s3cret@db:5432/labmate")
    (tmp_path / "labmate.toml").write_text(
        '[projects.remote]\nuri = "https://bot:git-s3cret@git.example.com/acme/train.git"\n'
        'entry_points = ["train"]\nexperiment = "remote"\n'
    )
    monkeypatch.chdir(tmp_path)
    reset_settings()
    settings = load_settings()
    assert settings.projects["remote"].uri.startswith("https://bot:git-s3cret@")  # the value itself is intact
    for shown in (repr(settings), str(settings.as_dict())):
        assert "git-s3cret" not in shown and "db-s3cret" not in shown
        assert "https://bot:***@git.example.com/acme/train.git" in shown


def test_a_launchs_output_tail_masks_the_tracking_uris_password(tmp_path) -> None:
    """MLflow ends a run by printing its links, tracking URI and all: the tail goes into the card."""
    from tasks.launches.process import tail

    log = tmp_path / "L5-attempt1.log"
    log.write_text("epoch 1\n🏃 View run sales-agent-L5 at: http://alice:TrkPw55@mlflow:5000/#/experiments/1/runs/4876\n"
                   "ValueError: fail_at_epoch\n")  # fmt: skip
    shown = tail(log)
    assert "TrkPw55" not in shown and "http://alice:***@mlflow:5000/#/experiments/1/runs/4876" in shown
    assert shown.endswith("ValueError: fail_at_epoch")


def test_a_launchs_output_tail_links_to_the_ui_people_open(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In compose the tracking URI is http://mlflow:5000, which no browser reaches: MLflow's 'View run' line
    in a failed run's card pointed there."""
    from labmate.settings import reset_settings
    from tasks.launches.process import tail

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://alice:TrkPw55@mlflow:5000")
    monkeypatch.setenv("LABMATE_MLFLOW_UI_URL", "https://mlflow.example.com/")
    reset_settings()
    log = tmp_path / "L5-attempt1.log"
    log.write_text("🏃 View run sales-agent-L5 at: http://alice:TrkPw55@mlflow:5000/#/experiments/1/runs/4876\n"
                   "🧪 View experiment at: http://alice:TrkPw55@mlflow:5000/#/experiments/1\nValueError: x\n")  # fmt: skip
    try:
        shown = tail(log)
    finally:
        reset_settings()
    assert "https://mlflow.example.com/#/experiments/1/runs/4876" in shown
    assert "https://mlflow.example.com/#/experiments/1\n" in shown and "mlflow:5000" not in shown
