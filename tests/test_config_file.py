"""The config file: its keys are the serve settings; precedence flags > env > file > defaults."""

import os

import pytest

from mlxserve.cli import build_parser, load_settings, main
from mlxserve.config import DEMO_MODEL_PATH, ConfigFileError, Settings, config_path


@pytest.fixture
def config_file(tmp_path, monkeypatch):
    """The default config file location under a temporary HOME, with no MLXSERVE_* variables."""
    for name in list(os.environ):
        if name.startswith("MLXSERVE_") or name == "XDG_CONFIG_HOME":
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    path = tmp_path / ".config" / "mlxserve" / "config.toml"
    path.parent.mkdir(parents=True)
    return path


def settings_for(argv):
    return load_settings(build_parser().parse_args(argv))


def test_default_location_is_under_home(config_file):
    assert config_path() == config_file


def test_missing_default_file_means_defaults(config_file):
    assert not config_file.exists()
    assert settings_for(["serve"]) == Settings.model_construct()


def test_file_values_beat_defaults(config_file):
    config_file.write_text('port = 9100\nmax_tokens = 77\nlog_level = "debug"\ntimeout = 12.5\n')
    s = settings_for(["serve"])
    assert (s.port, s.max_tokens, s.log_level, s.timeout) == (9100, 77, "debug", 12.5)


def test_flags_beat_env_beat_file_beat_defaults(config_file, monkeypatch):
    config_file.write_text("port = 9100\nmax_context = 3\nqueue_size = 5\n")
    monkeypatch.setenv("MLXSERVE_PORT", "9200")
    monkeypatch.setenv("MLXSERVE_MAX_CONTEXT", "4")
    s = settings_for(["serve", "--port", "9300"])
    assert s.port == 9300  # flag
    assert s.max_context == 4  # env over file
    assert s.queue_size == 5  # file over default
    assert s.max_requests == 1  # default


def test_dashed_keys_like_the_flags(config_file):
    config_file.write_text('max-tokens = 77\nserved-model-name = "house-model"\n')
    s = settings_for(["serve"])
    assert s.max_tokens == 77 and s.model_name == "house-model"


def test_demo_keeps_its_bundled_model_over_the_file(config_file):
    config_file.write_text('model = "mlx-community/some-big-model"\nport = 9100\n')
    s = settings_for(["demo"])
    assert s.model == str(DEMO_MODEL_PATH) and s.port == 9100


def test_mlxserve_config_names_another_file(config_file, tmp_path, monkeypatch):
    other = tmp_path / "elsewhere.toml"
    other.write_text("port = 9400\n")
    config_file.write_text("port = 9100\n")
    monkeypatch.setenv("MLXSERVE_CONFIG", str(other))
    assert settings_for(["serve"]).port == 9400


def test_xdg_config_home_is_honoured(config_file, tmp_path, monkeypatch):
    xdg = tmp_path / "xdg"
    (xdg / "mlxserve").mkdir(parents=True)
    (xdg / "mlxserve" / "config.toml").write_text("port = 9500\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    assert settings_for(["serve"]).port == 9500


def test_unknown_key_exits_2_naming_the_key_and_file(config_file, capsys):
    config_file.write_text("port = 9100\ncolour = 'blue'\n")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'colour'" in err and str(config_file) in err
    assert "Traceback" not in err


def test_unknown_key_is_a_config_file_error(config_file):
    config_file.write_text("[server]\nport = 9100\n")
    with pytest.raises(ConfigFileError, match="unknown key 'server'"):
        Settings()


def test_key_given_both_dashed_and_underscored_is_an_error(config_file):
    config_file.write_text("max-tokens = 1\nmax_tokens = 2\n")
    with pytest.raises(ConfigFileError, match="set twice"):
        Settings()


@pytest.mark.parametrize(
    "text, words",
    [
        ("port = \n", ["cannot read config file"]),  # not TOML
        ('port = "eighty"\n', ["port"]),  # TOML, but not a port
    ],
)
def test_bad_file_exits_2(config_file, capsys, text, words):
    config_file.write_text(text)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words) and "Traceback" not in err


def test_named_file_that_does_not_exist_exits_2(config_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLXSERVE_CONFIG", str(tmp_path / "typo.toml"))
    assert main(["serve"]) == 2
    assert "typo.toml" in capsys.readouterr().err
