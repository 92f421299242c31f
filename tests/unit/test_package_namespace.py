"""Installed, the folders import as manifold.* and nothing generic lands in site-packages."""
import subprocess
import sys


def _import_from_elsewhere(module: str, tmp_path) -> subprocess.CompletedProcess:
    # Run outside the repository so that the working directory is not on sys.path.
    return subprocess.run([sys.executable, "-c", f"import {module}"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=180)


def test_the_packages_import_under_manifold(tmp_path):
    for module in ("manifold.broker.core", "manifold.adapters.amqp", "manifold.persistence.filestore",
                   "manifold.config.settings"):
        result = _import_from_elsewhere(module, tmp_path)
        assert result.returncode == 0, result.stderr


def test_the_generic_top_level_names_do_not_import(tmp_path):
    for module in ("broker", "adapters", "persistence", "config"):
        result = _import_from_elsewhere(module, tmp_path)
        assert result.returncode != 0
        assert "ModuleNotFoundError" in result.stderr
