from __future__ import annotations

from pathlib import Path

import pytest

from sovra.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "sovra.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_demo_config_loads() -> None:
    cfg = load_config(Path(__file__).resolve().parents[1] / "demo" / "sovra.toml")
    assert [s.name for s in cfg.sources] == ["handbook", "runbooks", "tickets"]
    assert cfg.resolve(cfg.sources[0].path).name == "handbook"


def test_unknown_field_is_named(tmp_path: Path) -> None:
    p = write(tmp_path, "[search]\nkk = 3\n")
    with pytest.raises(ConfigError, match=r"search\.kk: unknown field"):
        load_config(p)


def test_bad_value_is_named(tmp_path: Path) -> None:
    p = write(tmp_path, "[search]\nk = 0\n")
    with pytest.raises(ConfigError, match=r"search\.k"):
        load_config(p)


def test_unknown_classification_names_source(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        '[[sources]]\nname = "docs"\nkind = "folder"\npath = "."\nclassification = "secret"\n',
    )
    with pytest.raises(ConfigError, match=r"docs.*unknown classification 'secret'"):
        load_config(p)


def test_bad_access_string(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        '[[sources]]\nname = "docs"\nkind = "folder"\npath = "."\naccess = ["everyone"]\n',
    )
    with pytest.raises(ConfigError, match=r"sources\.0\.folder\.access.*'everyone'"):
        load_config(p)


def test_duplicate_source_names(tmp_path: Path) -> None:
    block = '[[sources]]\nname = "docs"\nkind = "folder"\npath = "."\n'
    with pytest.raises(ConfigError, match="used twice"):
        load_config(write(tmp_path, block + block))


def test_not_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[search\n"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_home_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOVRA_HOME", str(tmp_path / "elsewhere"))
    cfg = load_config(write(tmp_path, ""))
    assert cfg.home == (tmp_path / "elsewhere").resolve()


def test_answer_endpoint_auto_hands_the_choice_to_the_router(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, '[answer]\nendpoint = "auto"\n')).answer.endpoint == "auto"
    with pytest.raises(ConfigError, match=r"answer\.endpoint: 'gpt' is not a configured"):
        load_config(write(tmp_path, '[answer]\nendpoint = "gpt"\n'))
