"""docs/settings.md is generated from the settings classes, and the settings read what
it says they read: the environment, a TOML file where it says, errors for unknown keys."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import platformdirs
import pytest

from xmodal.api import settings_doc
from xmodal.api.settings import Settings, SettingsError, config_file, load_settings
from xmodal.search.settings import SettingsGroup

DOC = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


@pytest.fixture
def clean(monkeypatch, tmp_path):
    """No XMODAL_* variable from the caller's environment, no ./xmodal.toml and an empty
    platform config folder (returned): only what a test writes is read."""
    for name in list(os.environ):
        if name.upper().startswith("XMODAL_"):
            monkeypatch.delenv(name)
    folder = tmp_path / "config" / "xmodal"
    folder.mkdir(parents=True)
    monkeypatch.setattr(platformdirs, "user_config_dir", lambda *args, **kwargs: str(folder))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return folder


def leaf_keys(model: type = Settings, prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        inner = field.annotation
        if isinstance(inner, type) and issubclass(inner, SettingsGroup):
            keys.append(f"{prefix}{name}")
            keys += leaf_keys(inner, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_committed_page_is_the_rendered_one():
    assert DOC.read_text(encoding="utf-8") == settings_doc.render(), (
        "docs/settings.md is out of date: run `make docs`"
    )


def test_every_field_of_every_group_is_documented():
    text = settings_doc.render()
    keys = leaf_keys()
    assert {"data", "ann.ef_search", "video.keyframes.max_gap", "server.threads"} <= set(keys)
    for key in keys:
        field_or_group = f"`{key}`" in text or f"## {key}\n" in text
        assert field_or_group, f"{key} missing from docs/settings.md"
    for group in ("server", "query", "ann", "indexing", "images", "video", "video.keyframes"):
        assert f"\n## {group}\n" in text
    row = next(line for line in text.splitlines() if line.startswith("| `ann.ef_search`"))
    assert "`XMODAL_ANN__EF_SEARCH`" in row and "`[ann] ef_search`" in row
    assert "`64`" in row and "≥ 1" in row
    row = next(line for line in text.splitlines() if line.startswith("| `server.threads`"))
    assert "(computed)" in row and "twice the cores" in row


def test_check_reports_a_stale_file(tmp_path, capsys):
    page = tmp_path / "settings.md"
    assert settings_doc.main([str(page), "--check"]) == 1
    assert settings_doc.main([str(page)]) == 0
    assert settings_doc.main([str(page), "--check"]) == 0
    page.write_text(page.read_text() + "edited by hand\n")
    assert settings_doc.main([str(page), "--check"]) == 1
    assert "make docs" in capsys.readouterr().err


def test_the_example_file_is_valid(clean, tmp_path, monkeypatch):
    config = tmp_path / "example.toml"
    config.write_text(settings_doc.EXAMPLE_TOML)
    monkeypatch.setenv("XMODAL_CONFIG", str(config))
    settings = load_settings()
    assert settings.ann.ef_search == 128
    assert settings.video.keyframes.max_gap == 10.0
    assert settings.video.sound is False


def test_unknown_toml_key_is_an_error_naming_it(clean, tmp_path, monkeypatch):
    config = tmp_path / "bad.toml"
    config.write_text("[ann]\nef_serch = 128\n")
    monkeypatch.setenv("XMODAL_CONFIG", str(config))
    with pytest.raises(SettingsError, match="ef_serch"):
        load_settings()


def test_unknown_environment_variable_is_an_error_naming_it(clean, monkeypatch):
    monkeypatch.setenv("XMODAL_ANN__EF_SERCH", "128")
    with pytest.raises(SettingsError, match="XMODAL_ANN__EF_SERCH"):
        load_settings()


def test_group_value_from_the_environment_reaches_the_group(clean, monkeypatch):
    monkeypatch.setenv("XMODAL_ANN__EF_SEARCH", "128")
    monkeypatch.setenv("XMODAL_VIDEO__KEYFRAMES__MAX_GAP", "7.5")
    settings = load_settings()
    assert settings.ann.ef_search == 128
    assert settings.video.keyframes.max_gap == 7.5
    assert settings.ann.nprobe == 8  # the rest of the group keeps its defaults


def test_platform_config_folder_is_read_without_a_local_file(clean, monkeypatch):
    (clean / "xmodal.toml").write_text('device = "cpu"\n[ann]\nnprobe = 16\n')
    settings = load_settings()
    assert settings.device == "cpu" and settings.ann.nprobe == 16
    # A ./xmodal.toml comes first; the environment above both.
    Path("xmodal.toml").write_text("[ann]\nnprobe = 4\n")
    assert load_settings().ann.nprobe == 4
    assert load_settings().device == "auto"
    monkeypatch.setenv("XMODAL_ANN__NPROBE", "2")
    assert load_settings().ann.nprobe == 2


@pytest.mark.skipif(sys.platform != "linux", reason="the XDG layout is Linux's")
def test_linux_config_folder_is_xdg_config_home(monkeypatch, tmp_path):
    monkeypatch.delenv("XMODAL_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "xdg" / "xmodal" / "xmodal.toml"
    path.parent.mkdir(parents=True)
    path.write_text("[ann]\nnprobe = 16\n")
    assert config_file() == path


def test_a_broken_settings_file_is_named_in_the_error(tmp_path, monkeypatch):
    from xmodal.api.settings import SettingsError, load_settings

    broken = tmp_path / "broken.toml"
    broken.write_text("not = [toml\n")
    monkeypatch.setenv("XMODAL_CONFIG", str(broken))
    with pytest.raises(SettingsError, match=r"broken\.toml is not valid TOML"):
        load_settings()
    monkeypatch.setenv("XMODAL_CONFIG", str(tmp_path / "absent.toml"))
    with pytest.raises(SettingsError, match=r"absent\.toml"):
        load_settings()
