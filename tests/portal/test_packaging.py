"""The product's wheel holds the product and nothing of the development tools, and the portal
starts without those tools (a production install has no `devtools`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import pytest
from cryptography.fernet import Fernet

from tests.conftest import ROOT

pytestmark = pytest.mark.timeout(120)

PRODUCT = ("core", "connections", "graphsync", "portal")
NOT_SHIPPED = ("emulator", "devtools", "tests", "bench")
# What a clean checkout does not have: local state, caches and earlier builds.
NOT_COPIED = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "var",
    "test-artifacts",
    "*.egg-info",
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    ".ruff_cache",
    "db.sqlite3*",
    ".env",
)


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> list[str]:
    """Build the wheel as a release would, offline, with the venv's setuptools (dev extra).

    From a copy of the checkout: setuptools builds inside the source folder, where a stale
    `build/lib` would end up in the wheel and parallel runs would share it."""
    source = tmp_path_factory.mktemp("source") / "graphport"
    shutil.copytree(ROOT, source, ignore=NOT_COPIED)
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--quiet",
            "-w",
            str(out),
            str(source),
        ],
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = out.glob("graphport-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def source_modules(package: str) -> set[str]:
    return {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / package).rglob("*.py")
        if "__pycache__" not in path.parts
    }


@pytest.mark.parametrize("package", PRODUCT)
def test_wheel_holds_every_module_of_the_product(wheel_names, package):
    modules = source_modules(package)
    assert f"{package}/__init__.py" in modules
    assert modules - set(wheel_names) == set()


def test_wheel_holds_the_migrations(wheel_names):
    migrations = {
        name
        for package in PRODUCT
        for name in source_modules(package)
        if name.split("/")[1] == "migrations"
    }
    assert {"connections/migrations/0001_initial.py", "graphsync/migrations/0001_initial.py"} <= (
        migrations
    )
    assert migrations - set(wheel_names) == set()


def test_wheel_holds_nothing_of_the_development_tools(wheel_names):
    shipped = {name.split("/")[0] for name in wheel_names if ".dist-info/" not in name}
    assert shipped - set(PRODUCT) == set()
    assert [name for name in wheel_names if name.startswith(NOT_SHIPPED)] == []


# `sys.modules["devtools"] = None` makes `find_spec("devtools")` answer None, as in a production
# install without the package.
PROBE = """
import sys
if sys.argv[1] == "without":
    sys.modules["devtools"] = None
import django
django.setup()
from django.conf import settings
from django.core.management import call_command, get_commands
call_command("check")
print("devtools" in settings.INSTALLED_APPS, "runportal" in get_commands())
"""


@pytest.mark.parametrize(
    ("debug", "devtools", "expected"),
    [
        ("true", "with", "True True"),
        ("false", "with", "False False"),
        ("true", "without", "False False"),
    ],
)
def test_devtools_are_installed_only_in_debug_and_when_present(debug, devtools, expected):
    env = {
        **os.environ,
        "ENV_FILE": os.devnull,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DEBUG": debug,
        "SECRET_KEY": "packaging-test-" + "0123456789abcdef" * 3,
        "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "DATABASE_URL": "sqlite:////tmp/graphport-packaging-test.sqlite3",
    }
    result = subprocess.run(
        [sys.executable, "-c", PROBE, devtools],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[-2] == expected
