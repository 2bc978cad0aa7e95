"""`.env.example` documents every variable the settings read."""

import re

from tests.processes import PROJECT_DIR


def test_every_environment_variable_read_by_the_settings_is_in_env_example():
    settings_source = (PROJECT_DIR / "heavylift" / "settings.py").read_text()
    read = set(re.findall(r"""env_\w+\(\s*["']([A-Z][A-Z0-9_]+)["']""", settings_source))
    read |= set(re.findall(r"""os\.environ(?:\.get\(|\[)\s*["']([A-Z][A-Z0-9_]+)["']""", settings_source))
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", (PROJECT_DIR / ".env.example").read_text(), re.M))

    assert len(read) > 30
    assert read - documented == set()
