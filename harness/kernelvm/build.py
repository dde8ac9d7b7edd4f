"""Build (once per kernel version) what the kernel VM boots, and find it again later.

Debian's ``linux-image-amd64`` is resolved with `apt-cache depends`, fetched with
`apt-get download` (never installed) and unpacked with `dpkg-deb -x`. From it we keep the
bzImage, the uncompressed ``vmlinux`` inside it (the XZ payload; it has a PVH entry note, so
QEMU can boot it directly, about twice as fast under TCG) and the modules that WireGuard,
virtio-net and virtio-rng need, resolved from each module's ``depends=`` string (the package
ships no modules.dep). The initramfs holds busybox, the host's wg, ip (busybox's cannot create
a wireguard link) and iperf3 with their shared libraries, the modules and :data:`guest.INIT`.

Everything lands in ``~/.cache/wgref/kernel-vm/<kernel-release>/`` (``$WGREF_KERNEL_VM_CACHE``
or ``$XDG_CACHE_HOME`` move it); a later run reuses it, rebuilding only the initramfs when the
init script or the host tools changed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from . import cpio, elf, guest

META_PACKAGE = "linux-image-amd64"
ROOT_MODULES = ("virtio_pci", "virtio_net", "virtio_rng", "wireguard")
REQUIRED_TOOLS = ("wg", "ip")
OPTIONAL_TOOLS = ("iperf3",)
BUILD_FORMAT = 1  # bump when the layout of the cache changes
XZ_MAGIC = b"\xfd7zXZ\x00"
APT_OPTIONS = ("-o", "APT::Sandbox::User=root")


class BuildError(RuntimeError):
    """The VM artefacts could not be resolved, downloaded or built."""


class Progress:
    """Step-by-step progress on stderr: what is happening, and how long each step took."""

    def __init__(self, stream: IO[str] | None = None, *, quiet: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def note(self, text: str) -> None:
        if not self.quiet:
            print(f"kernel-vm: {text}", file=self.stream, flush=True)

    def live(self, text: str) -> None:
        """A line that the next one replaces on a terminal (download progress)."""
        if self.quiet:
            return
        if self.tty:
            print(f"\rkernel-vm:   {text}\x1b[K", end="", file=self.stream, flush=True)
        else:
            print(f"kernel-vm:   {text}", file=self.stream, flush=True)

    def end_live(self) -> None:
        if self.tty and not self.quiet:
            print(file=self.stream, flush=True)

    @contextlib.contextmanager
    def step(self, text: str) -> Iterator[None]:
        self.note(f"{text} ...")
        started = time.monotonic()
        yield
        self.note(f"  done in {time.monotonic() - started:.1f} s")


@dataclass(frozen=True, slots=True)
class Artefacts:
    """A built kernel VM: what QEMU boots."""

    release: str  # "6.1.0-56-amd64"
    package: str  # "linux-image-6.1.0-56-amd64"
    package_version: str  # "6.1.192-2"
    folder: Path
    bzimage: Path
    vmlinux: Path | None  # the uncompressed kernel with a PVH entry, when it could be extracted
    initramfs: Path
    modules: tuple[str, ...]

    @property
    def kernel(self) -> Path:
        """The image to boot: vmlinux (PVH, faster) when there is one, else the bzImage."""
        return self.vmlinux or self.bzimage

    def describe(self) -> str:
        return (f"Debian {self.package} {self.package_version} "
                f"(booting {self.kernel.name}, {len(self.modules)} modules)")


def cache_root() -> Path:
    explicit = os.environ.get("WGREF_KERNEL_VM_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "wgref" / "kernel-vm"


# -- resolving the package -----------------------------------------------------------------


def _run(argv: list[str], *, timeout: float, cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                              check=False)
    except FileNotFoundError:
        raise BuildError(f"{argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise BuildError(f"`{' '.join(argv)}` timed out after {timeout:g} s") from None
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip())[-500:]
        raise BuildError(f"`{' '.join(argv)}` exited {proc.returncode}: {tail}")
    return proc.stdout


def _apt_depends(meta: str) -> str | None:
    try:
        out = _run(["apt-cache", "depends", meta], timeout=60)
    except BuildError:
        return None
    for line in out.splitlines():
        key, _, value = line.strip().partition(":")
        value = value.strip()
        if key in ("Depends", "|Depends") and value.startswith("linux-image-"):
            return value
    return None


def resolve_package(progress: Progress) -> str:
    """The versioned kernel package behind the meta package (``$WGREF_KERNEL_VM_PACKAGE``
    overrides it). Runs `apt-get update` once when the package lists are empty and we are root."""
    explicit = os.environ.get("WGREF_KERNEL_VM_PACKAGE")
    if explicit:
        return explicit
    package = _apt_depends(META_PACKAGE)
    if package is None and os.geteuid() == 0:
        with progress.step("the apt package lists know no kernel; running apt-get update"):
            _run(["apt-get", "update", "-q"], timeout=300)
        package = _apt_depends(META_PACKAGE)
    if package is None:
        raise BuildError(f"`apt-cache depends {META_PACKAGE}` names no kernel package: run "
                         "`apt-get update` (as root) on a Debian-based host")
    return package


def release_of(package: str) -> str:
    return package.removeprefix("linux-image-").removesuffix("-unsigned")


# -- the cache -----------------------------------------------------------------------------


def _manifest_path(folder: Path) -> Path:
    return folder / "manifest.json"


def _load(folder: Path) -> Artefacts | None:
    try:
        data: dict[str, Any] = json.loads(_manifest_path(folder).read_text())
    except (OSError, ValueError):
        return None
    if data.get("format") != BUILD_FORMAT:
        return None
    vmlinux = folder / "vmlinux" if data.get("vmlinux") else None
    art = Artefacts(
        release=data["release"], package=data["package"],
        package_version=data["package_version"], folder=folder,
        bzimage=folder / "vmlinuz", vmlinux=vmlinux, initramfs=folder / "initramfs.cpio",
        modules=tuple(data["modules"]),
    )
    needed = [art.bzimage, art.initramfs] + ([vmlinux] if vmlinux else [])
    if not all(path.is_file() for path in needed):
        return None
    return art


def cached(release: str | None = None) -> Artefacts | None:
    """A complete build in the cache (of this release, else the newest), without building."""
    root = cache_root()
    if release is not None:
        return _load(root / release)
    if not root.is_dir():
        return None
    builds = [art for folder in root.iterdir() if folder.is_dir()
              if (art := _load(folder)) is not None]
    builds.sort(key=lambda art: _manifest_path(art.folder).stat().st_mtime)
    return builds[-1] if builds else None


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure(progress: Progress | None = None, *, rebuild: bool = False) -> Artefacts:
    """The artefacts for the current Debian kernel: from the cache, or built now."""
    progress = progress or Progress()
    root = cache_root()
    try:
        package = resolve_package(progress)
    except BuildError:
        fallback = cached()
        if fallback is None or rebuild:
            raise
        progress.note(f"apt cannot resolve {META_PACKAGE}; using the cached {fallback.release}")
        package = fallback.package
    release = release_of(package)
    folder = root / release
    with _locked(root):
        art = None if rebuild else _load(folder)
        if art is None:
            started = time.monotonic()
            progress.note(f"building the VM for {package} in {folder}")
            art = _build_kernel(package, folder, progress)
            progress.note(f"kernel ready in {time.monotonic() - started:.0f} s")
        if rebuild or _initramfs_key(art) != _read_manifest(folder).get("initramfs_key"):
            art = _build_initramfs(art, progress)
    return art


def _read_manifest(folder: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(_manifest_path(folder).read_text())
        return data
    except (OSError, ValueError):
        return {}


def _write_manifest(folder: Path, data: dict[str, Any]) -> None:
    tmp = _manifest_path(folder).with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(_manifest_path(folder))


# -- downloading and unpacking ---------------------------------------------------------------


def download(package: str, into: Path, progress: Progress, *, timeout: float = 900) -> Path:
    """`apt-get download PACKAGE` into a folder, showing the bytes fetched so far."""
    into.mkdir(parents=True, exist_ok=True)
    argv = ["apt-get", *APT_OPTIONS, "download", package]
    done = threading.Event()

    def watch() -> None:
        started = time.monotonic()
        while not done.wait(1.0 if progress.tty else 5.0):
            size = sum(p.stat().st_size for p in into.rglob("*") if p.is_file())
            elapsed = time.monotonic() - started
            progress.live(f"{package}: {size / 1e6:.1f} MB after {elapsed:.0f} s")

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        _run(argv, timeout=timeout, cwd=into)
    finally:
        done.set()
        watcher.join()
        progress.end_live()
    debs = sorted(into.glob(f"{package}_*.deb"))
    if not debs:
        raise BuildError(f"apt-get download {package} left no .deb in {into}")
    size = debs[-1].stat().st_size
    progress.note(f"  {debs[-1].name}: {size / 1e6:.1f} MB")
    return debs[-1]


def deb_version(deb: Path) -> str:
    return _run(["dpkg-deb", "-f", str(deb), "Version"], timeout=60).strip()


def extract_vmlinux(bzimage: bytes) -> tuple[bytes, int] | None:
    """The uncompressed kernel (an ELF with a PVH note) inside a bzImage, and the offset of
    its XZ payload; None when there is no such payload."""
    start = 0
    while (offset := bzimage.find(XZ_MAGIC, start)) >= 0:
        start = offset + 1
        try:
            data = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(bzimage[offset:])
        except lzma.LZMAError:
            continue
        try:
            if elf.has_pvh_entry(data):
                return data, offset
        except elf.ElfError:
            continue
    return None


def _norm(name: str) -> str:
    return name.replace("-", "_")


def module_index(modules_dir: Path) -> dict[str, Path]:
    """Module name (with underscores) -> .ko path, for every module of a kernel tree."""
    index: dict[str, Path] = {}
    for path in sorted(modules_dir.rglob("*.ko")):
        index.setdefault(_norm(path.stem), path)
    return index


def resolve_modules(index: dict[str, Path], roots: tuple[str, ...],
                    builtin: set[str]) -> list[str]:
    """The modules to load for ``roots``, dependencies first (from ``depends=``)."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        name = _norm(name)
        if name in builtin or state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise BuildError(f"module dependency cycle: {' -> '.join((*chain, name))}")
        if name not in index:
            raise BuildError(f"module {name} (needed by {' -> '.join(chain) or 'the VM'}) "
                             "is not in the kernel package")
        state[name] = "visiting"
        for dep in elf.module_depends(index[name]):
            visit(dep, (*chain, name))
        state[name] = "done"
        order.append(name)

    for root in roots:
        visit(root, ())
    return order


def _builtin_modules(tree: Path) -> set[str]:
    path = tree / "modules.builtin"
    if not path.is_file():
        return set()
    return {_norm(Path(line.strip()).stem) for line in path.read_text().splitlines() if line}


def _build_kernel(package: str, folder: Path, progress: Progress) -> Artefacts:
    folder.mkdir(parents=True, exist_ok=True)
    release = release_of(package)
    with tempfile.TemporaryDirectory(prefix="unpack-", dir=folder.parent) as tmp_name:
        tmp = Path(tmp_name)
        with progress.step(f"downloading {package} (apt-get download)"):
            deb = download(package, tmp / "deb", progress)
        version = deb_version(deb)
        with progress.step(f"unpacking {deb.name} (dpkg-deb -x)"):
            _run(["dpkg-deb", "-x", str(deb), str(tmp / "root")], timeout=300)
        boot = tmp / "root" / "boot"
        images = sorted(boot.glob("vmlinuz-*"))
        if not images:
            raise BuildError(f"{deb.name} has no /boot/vmlinuz-*")
        shutil.copyfile(images[-1], folder / "vmlinuz")
        for config in boot.glob("config-*"):
            shutil.copyfile(config, folder / "config")
        trees = sorted((tmp / "root" / "lib" / "modules").glob("*"))
        if not trees:
            raise BuildError(f"{deb.name} has no /lib/modules/<release>/")
        tree = trees[-1]
        with progress.step("resolving modules from their depends= strings"):
            index = module_index(tree / "kernel")
            modules = resolve_modules(index, ROOT_MODULES, _builtin_modules(tree))
            mod_dir = folder / "modules"
            shutil.rmtree(mod_dir, ignore_errors=True)
            mod_dir.mkdir()
            for name in modules:
                shutil.copyfile(index[name], mod_dir / f"{name}.ko")
        progress.note(f"  {len(modules)} modules: {', '.join(modules)}")
    with progress.step("extracting vmlinux (the bzImage's XZ payload)"):
        found = extract_vmlinux((folder / "vmlinuz").read_bytes())
        if found is None:
            progress.note("  no XZ payload with a PVH entry: QEMU will boot the bzImage")
            (folder / "vmlinux").unlink(missing_ok=True)
        else:
            (folder / "vmlinux").write_bytes(found[0])
            progress.note(f"  XZ payload at offset {found[1]}: vmlinux "
                          f"{len(found[0]) / 1e6:.0f} MB with a PVH entry")
    _write_manifest(folder, {
        "format": BUILD_FORMAT, "release": release, "package": package,
        "package_version": version, "vmlinux": found is not None, "modules": modules,
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    return Artefacts(
        release=release, package=package, package_version=version, folder=folder,
        bzimage=folder / "vmlinuz", vmlinux=folder / "vmlinux" if found else None,
        initramfs=folder / "initramfs.cpio", modules=tuple(modules),
    )


# -- the initramfs ---------------------------------------------------------------------------


def _busybox(folder: Path, progress: Progress) -> Path:
    """The host's busybox (static or not; its libraries come along), else busybox-static
    downloaded into the cache."""
    found = shutil.which("busybox")
    if found:
        return Path(found)
    local = folder.parent / "busybox-static" / "busybox"
    if local.is_file():
        return local
    with tempfile.TemporaryDirectory(prefix="busybox-", dir=folder.parent) as tmp_name:
        tmp = Path(tmp_name)
        with progress.step("no busybox on the host: downloading busybox-static"):
            deb = download("busybox-static", tmp / "deb", progress)
            _run(["dpkg-deb", "-x", str(deb), str(tmp / "root")], timeout=120)
        candidates = [tmp / "root" / "bin" / "busybox", tmp / "root" / "usr" / "bin" / "busybox"]
        source = next((c for c in candidates if c.is_file()), None)
        if source is None:
            raise BuildError("the busybox-static package has no busybox binary")
        local.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, local)
        local.chmod(0o755)
    return local


def shared_libraries(program: Path) -> list[Path]:
    """The libraries (and loader) a program needs, as ldd names them."""
    if not elf.has_interpreter(program.read_bytes()):
        return []
    out = _run(["ldd", str(program)], timeout=30)
    libs: list[Path] = []
    for line in out.splitlines():
        line = line.strip()
        if "=>" in line:
            target = line.split("=>", 1)[1].strip().split(" (")[0].strip()
            if target == "not found":
                raise BuildError(f"{program} needs a library that is missing: {line}")
        else:
            target = line.split(" (")[0].strip()
        if target.startswith("/"):
            libs.append(Path(target))
    return libs


def _tools() -> dict[str, Path]:
    tools: dict[str, Path] = {}
    for name in (*REQUIRED_TOOLS, *OPTIONAL_TOOLS):
        found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
        if found:
            tools[name] = Path(found).resolve()
        elif name in REQUIRED_TOOLS:
            package = "wireguard-tools" if name == "wg" else "iproute2"
            raise BuildError(f"{name} is not installed on the host (apt-get install {package})")
    return tools


def _initramfs_key(art: Artefacts) -> str:
    digest = hashlib.sha256()
    digest.update(f"{BUILD_FORMAT}\n{guest.INIT}\n{art.modules}\n".encode())
    for name, path in sorted(_tools().items()):
        stat = path.stat()
        digest.update(f"{name}={path}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    busybox = shutil.which("busybox")
    if busybox:  # busybox and busybox-static both install /bin/busybox: tell them apart
        stat = Path(busybox).resolve().stat()
        busybox += f":{stat.st_size}:{stat.st_mtime_ns}"
    digest.update(f"busybox={busybox}\n".encode())
    return digest.hexdigest()


def _applets(busybox: Path) -> list[str]:
    out = _run([str(busybox), "--list"], timeout=30)
    return [name for name in out.split() if name and "/" not in name]


def _build_initramfs(art: Artefacts, progress: Progress) -> Artefacts:
    with progress.step("building the initramfs (busybox, wg, ip, iperf3, modules, /init)"):
        busybox = _busybox(art.folder, progress)
        tools = _tools()
        entries: list[cpio.Entry] = []
        dirs: set[str] = set()

        def add_dir(path: str) -> None:
            parts = path.strip("/").split("/")
            for i in range(1, len(parts) + 1):
                sub = "/".join(parts[:i])
                if sub and sub not in dirs:
                    dirs.add(sub)
                    entries.append(cpio.directory(sub))

        def add_file(path: str, data: bytes, perm: int = 0o644) -> None:
            add_dir(str(Path(path).parent))
            entries.append(cpio.file(path.lstrip("/"), data, perm))

        for top in ("bin", "sbin", "usr/bin", "usr/sbin", "usr/local/bin", "etc/kernelvm",
                    "lib/modules", "proc", "sys", "dev", "tmp", "run", "root"):
            add_dir(top)
        entries.append(cpio.char_device("dev/console", 5, 1))
        add_file("/bin/busybox", busybox.read_bytes(), 0o755)
        libs: set[Path] = set(shared_libraries(busybox))
        for name, path in tools.items():
            add_file(f"{guest.TOOLS_DIR}/{name}", path.read_bytes(), 0o755)
            libs.update(shared_libraries(path))
        for lib in sorted(libs):
            add_file(str(lib), lib.resolve().read_bytes(), 0o755)
        for applet in _applets(busybox):
            if applet not in tools and applet != "busybox":
                entries.append(cpio.symlink(f"bin/{applet}", "busybox"))
        for name in art.modules:
            add_file(f"/lib/modules/{name}.ko", (art.folder / "modules" / f"{name}.ko")
                     .read_bytes())
        add_file(guest.MODULE_LIST, ("\n".join(art.modules) + "\n").encode())
        add_file("/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        add_file("/etc/group", b"root:x:0:\n")
        add_file("/init", guest.INIT.encode(), 0o755)
        tmp = art.initramfs.with_suffix(".tmp")
        with tmp.open("wb") as out:
            cpio.write(out, entries)
        tmp.replace(art.initramfs)
    missing = [name for name in OPTIONAL_TOOLS if name not in tools]
    progress.note(f"  {art.initramfs.stat().st_size / 1e6:.1f} MB: busybox, "
                  f"{', '.join(tools)} and {len(libs)} libraries"
                  + (f" (no {', '.join(missing)} on the host)" if missing else ""))
    manifest = _read_manifest(art.folder)
    manifest["initramfs_key"] = _initramfs_key(art)
    manifest["tools"] = sorted(tools)
    _write_manifest(art.folder, manifest)
    return art
