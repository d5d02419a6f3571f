"""siamrec installs anywhere: the built wheel carries the package and its configs (conf/ as siamrec.conf), and an
installed siamrec runs from any folder. Nothing here touches the network: the wheel is built without build
isolation and installed without dependencies into a fresh venv that borrows the running environment's packages."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _run(args, cwd, env=None, timeout=300):
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the sources (the checkout gets no build/ or egg-info)."""
    src = tmp_path_factory.mktemp("src")
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in ("siamrec", "conf"):
        shutil.copytree(REPO / name, src / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    done = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                 "-q", "-w", str(out), str(src)], cwd=src)
    assert done.returncode == 0, done.stderr[-2000:]
    (found,) = out.glob("siamrec-*.whl")
    return found


def installed_name(path: Path) -> str:
    """Where a source file of the repository lands in the wheel: under its package, or under the package
    pyproject.toml's package-dir maps its folder to (conf/ -> siamrec/conf/, siamrec/beetsplug/ -> beetsplug/)."""
    import tomllib

    mapping = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    rel = path.relative_to(REPO).as_posix()
    for package, folder in sorted(mapping.items(), key=lambda kv: -len(kv[1])):
        if folder not in ("", ".") and rel.startswith(folder.rstrip("/") + "/"):
            return package.replace(".", "/") + "/" + rel[len(folder.rstrip("/")) + 1:]
    return rel


def test_the_wheel_holds_every_module_and_every_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {installed_name(p) for p in (REPO / "siamrec").rglob("*.py")}
    configs = {installed_name(p) for p in (REPO / "conf").rglob("*.yaml")}
    assert "siamrec/conf/config.yaml" in configs and "beetsplug/siamrec.py" in modules
    assert modules - names == set(), "modules missing from the wheel: list their package in pyproject.toml"
    assert configs - names == set(), "configs missing from the wheel: see [tool.setuptools.package-data]"


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed (no dependencies), borrowing this environment's packages through a
    .pth line (a path in a .pth is not a site folder, so an editable siamrec installed there stays out of it)."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=env_dir).stdout.strip())
    borrowed = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "borrowed_dependencies.pth").write_text("\n".join(sorted(borrowed)) + "\n")
    # --ignore-installed: the borrowed packages may hold an (editable) siamrec of the same version; never touch it
    done = _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                 "--ignore-installed", "-q", str(wheel)], cwd=env_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    return python


def _env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing of the checkout
    return {**env, "SIAMREC_CACHE": str(tmp_path / "cache")}


def test_installed_siamrec_runs_from_any_folder(installed, tmp_path):
    env = _env(tmp_path)
    where = _run([str(installed), "-c", "import siamrec, siamrec.configs as c; print(siamrec.__file__); "
                  "print(c.conf_dir())"], cwd=tmp_path, env=env)
    package, conf = where.stdout.split()
    assert Path(package).is_relative_to(installed.parent.parent), "the installed wheel, not the checkout"
    assert Path(conf) == Path(package).parent / "conf"

    shown = _run([str(installed), "-m", "siamrec", "--help"], cwd=tmp_path, env=env)
    assert shown.returncode == 0 and "commands:" in shown.stdout, shown.stderr
    job = _run([str(installed), "-m", "siamrec", "train", "+model=identity", "--cfg", "job"], cwd=tmp_path, env=env)
    assert job.returncode == 0, job.stderr
    assert "backbone:" in job.stdout and "model:" in job.stdout
    assert not (tmp_path / "outputs").exists(), "--cfg makes no run folder"

    # the demo's first step: its corpus generated from the packaged data config (tiny)
    first = _run([str(installed), "-c", "from siamrec.configs import compose; from siamrec.data.sources import "
                  "load_library; cfg = compose('train', ['data.n_per_style=1', 'data.duration=1'], False); "
                  "print(len(load_library(cfg.data, cfg.paths).keys))"], cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    assert int(first.stdout.split()[-1]) >= 6
    assert list((tmp_path / "cache" / "demo").glob("demo-*/manifest.csv"))


def test_users_own_configs_by_config_dir(tmp_path, capsys):
    from siamrec.cli import main

    mine = tmp_path / "mine" / "index"
    mine.mkdir(parents=True)
    (mine / "tiny.yaml").write_text((REPO / "conf" / "index" / "exact.yaml").read_text() + "\n# a user's own\n")
    assert main(["train", "+model=identity", "index=tiny", "--config-dir", str(tmp_path / "mine"), "--cfg"]) == 0
    assert "index:" in capsys.readouterr().out
    assert main(["train", "+model=identity", "index=tiny", "--cfg"]) == 2
    assert "index=tiny: no such option" in capsys.readouterr().err
    assert main(["train", "--config-dir", str(tmp_path / "nowhere"), "--cfg"]) == 2
    assert "--config-dir" in capsys.readouterr().err
