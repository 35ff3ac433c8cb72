"""The Homebrew formula: valid Ruby, the same dependencies as pyproject.toml, and
a service that behaves like `mlxserve service install`'s launchd agent."""

import plistlib
import re
import shutil
import subprocess
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from mlxserve.service_mgr.launchd import render_plist
from mlxserve.service_mgr.spec import ServiceSpec

ROOT = Path(__file__).resolve().parents[1]
FORMULA = ROOT / "packaging" / "homebrew" / "mlxserve.rb"
# Provided by Homebrew formulae (mlx, numpy) or only needed on Python 3.10 (tomli).
NOT_FROM_PYPI = {"mlx", "numpy", "tomli"}


def requirement_name(spec: str) -> str:
    return re.split(r"[\s\[<>=~!;]", spec, maxsplit=1)[0].lower()


def test_formula_is_valid_ruby():
    ruby = shutil.which("ruby")
    assert ruby, "the packaging tests need ruby (apt-get install ruby)"
    result = subprocess.run([ruby, "-c", str(FORMULA)], capture_output=True, text=True)
    assert result.returncode == 0 and "Syntax OK" in result.stdout, result.stderr


def test_formula_lists_every_runtime_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {requirement_name(d) for d in project["dependencies"]} - NOT_FROM_PYPI
    match = re.search(r"extra_packages:\s*%w\[([^\]]*)\]", FORMULA.read_text())
    assert match, "the formula's pypi_packages has no extra_packages list"
    assert set(match.group(1).split()) == wanted


def test_formula_service_runs_serve_kept_alive_like_our_launchd_agent():
    service = re.search(r"service do\n(.*?)\n  end", FORMULA.read_text(), re.S).group(1)
    lines = {line.strip() for line in service.splitlines()}
    for dsl in ('run [opt_bin/"mlxserve", "serve"]', "keep_alive true", 'working_dir var',
                'log_path var/"log/mlxserve.log"', 'error_log_path var/"log/mlxserve.log"'):
        assert dsl in lines, f"the formula's service block lacks `{dsl}`"
    # `process_type :interactive` is what Homebrew writes as ProcessType Interactive, as ours has.
    ours = plistlib.loads(render_plist(ServiceSpec(label="x", argv=("/bin/mlxserve", "serve"))))
    assert "process_type :interactive" in lines and ours["ProcessType"] == "Interactive"
    assert ours["KeepAlive"]  # both keep the server running
