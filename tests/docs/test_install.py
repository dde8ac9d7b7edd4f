"""README's Install block, run as written in a fresh clone, as a new user on Debian 12 would:
root, only Debian's /usr/bin/python3 on PATH (PEP 668 in force), then the commands README
says work afterwards: ``wgref --version``, ``wgref genkey``, ``python -m harness list`` in that
shell, and ``wgref --version`` in a new shell where the venv is not active.

The clone is of this repository's committed HEAD (CI tests a fresh clone anyway). The block's
``ln -sf … /usr/local/bin/wgref`` lands in a tmpfs mounted over /usr/local/bin in a mount
namespace of the test's own, so the machine's /usr/local/bin is left alone. It needs root
(apt-get, mounts) and PyPI; pip's downloads are cached in ~/.cache/wgref/pip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.docs.readme import REPO, section_block

DEBIAN_PYTHON = Path("/usr/bin/python3")
DEBIAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # root's default
PIP_CACHE = Path.home() / ".cache" / "wgref" / "pip"
TIMEOUT = 1200  # apt-get update + pip downloads on a cold cache


def _externally_managed() -> bool:
    """Whether Debian's python3 refuses pip installs (its stdlib holds EXTERNALLY-MANAGED)."""
    if not DEBIAN_PYTHON.exists():
        return False
    stdlib = subprocess.run(
        [str(DEBIAN_PYTHON), "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
        capture_output=True, text=True, check=False).stdout.strip()
    return bool(stdlib) and (Path(stdlib) / "EXTERNALLY-MANAGED").exists()


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (apt-get, a mount namespace); CI runs it as root"
    for tool in ("apt-get", "unshare", "git", "mount"):
        if shutil.which(tool) is None:
            return f"needs {tool} (Debian)"
    if not _externally_managed():
        return "needs Debian's /usr/bin/python3 with PEP 668 in force"
    if not (REPO / ".git").exists():
        return "needs a git checkout to clone"
    return None


SCRIPT = """\
mount -t tmpfs wgref-test /usr/local/bin   # README's `ln` lands here (this namespace only)
cd "$CLONE"
test "$(command -v python3)" = /usr/bin/python3
if python3 -m pip install --dry-run nox >/dev/null 2>&1; then
  echo "PEP 668 is not in force for /usr/bin/python3" >&2; exit 1
fi
echo "=== README Install block"
{block}
echo "=== after install"
wgref --version
wgref genkey > "$CLONE/genkey.out"
python -m harness list
echo "=== a new shell"
env -i HOME="$HOME" PATH="$PATH_DEFAULT" bash -c 'cd / && command -v wgref && wgref --version'
"""


@pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))
def test_readme_install_block_in_a_fresh_clone(tmp_path: Path) -> None:
    block = section_block("Install").text
    clone = tmp_path / "wgref"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=120)
    PIP_CACHE.mkdir(parents=True, exist_ok=True)
    apt_config = tmp_path / "apt.conf"  # others' apt-get on a shared machine: wait, not fail
    apt_config.write_text('DPkg::Lock::Timeout "600";\n')
    env = {
        "APT_CONFIG": str(apt_config), "PATH": DEBIAN_PATH, "PATH_DEFAULT": DEBIAN_PATH,
        "HOME": str(Path.home()),
        "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive", "CLONE": str(clone),
        "PIP_CACHE_DIR": str(PIP_CACHE), "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    started = time.monotonic()
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-e", "-c",
         SCRIPT.format(block=block)],
        env=env, text=True, capture_output=True, timeout=TIMEOUT, check=False)
    seconds = time.monotonic() - started
    log = f"--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-6000:]}"
    assert result.returncode == 0, f"README's Install failed after {seconds:.0f} s\n{log}"
    after = result.stdout.split("=== after install", 1)[1]
    assert re.search(r"^wgref v\d+\.\d+", after, re.M), log
    key = (clone / "genkey.out").read_text().strip()
    assert re.fullmatch(r"[A-Za-z0-9+/]{43}=", key), key
    assert "peers:" in after and "scenarios:" in after and "handshake" in after, log
    new_shell = after.split("=== a new shell", 1)[1]
    assert "/usr/local/bin/wgref" in new_shell and "wgref v" in new_shell, log
    print(f"README Install + checks: {seconds:.0f} s\n{log}")
