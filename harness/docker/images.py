"""The Docker images of the harness: a ``debian:bookworm-slim`` base (pulled, or made locally
with debootstrap when no registry answers) and one image per peer kind from ``docker/``.

    python -m harness images build [--only wgref,wireguard-go] [--no-cache] [--rebuild-base]
    python -m harness images list

Builds go through the Docker API (the SDK), so no docker CLI, buildx or BuildKit is needed.
Each image's build context is assembled here as a tar: its Dockerfile, ``ca/`` (the build
machine's local CA certificates, so pip works behind a TLS-inspecting proxy) and, for wgref,
``pyproject.toml``, ``README.md`` and ``wgref/`` (nothing else of the work tree, so unrelated
edits do not invalidate the cache). Images that exist are reused: Docker's layer cache makes a
rebuild of an unchanged image take seconds.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..peers.spec import images as spec_images
from . import labels
from .client import make_client, sdk

ROOT = Path(__file__).resolve().parent.parent.parent
DOCKER_DIR = ROOT / "docker"
BASE_IMAGE = "debian:bookworm-slim"
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")
PULL_TIMEOUT = 30
BUILD_TIMEOUT = 1800


@dataclass(frozen=True, slots=True)
class ImageSpec:
    name: str  # the docker/NAME.Dockerfile
    extra: tuple[str, ...] = ()  # work-tree paths added to the context

    @property
    def tag(self) -> str:
        return labels.image_tag(self.name)

    @property
    def dockerfile(self) -> Path:
        return DOCKER_DIR / f"{self.name}.Dockerfile"


# The router's image and each peer's (peers.spec.PEERS declares which image a peer runs in).
IMAGES: dict[str, ImageSpec] = {image.name: ImageSpec(image.name, image.extra)
                                for image in spec_images()}


class ImageError(RuntimeError):
    """An image could not be made."""


Say = Callable[[str], None]


def _print(line: str) -> None:
    print(line, flush=True)


# -- the base image ---------------------------------------------------------------------------

def apt_mirror(sources: list[Path] | None = None) -> tuple[str, str | None]:
    """The machine's Debian mirror and security mirror (from APT's sources), or the defaults."""
    if sources is None:
        etc = Path("/etc/apt")
        sources = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list")),
                   *sorted((etc / "sources.list.d").glob("*.sources"))]
    mirror: str | None = None
    security: str | None = None
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for uri, suites in _source_entries(text):
            if "debian-security" in uri or any(s.endswith("-security") for s in suites):
                security = security or uri
            elif SUITE in suites and "/debian" in uri:
                mirror = mirror or uri
    return (mirror or DEFAULT_MIRROR).rstrip("/"), security.rstrip("/") if security else None


def _source_entries(text: str) -> Iterator[tuple[str, list[str]]]:
    """(URI, suites) of one-line (``deb URI SUITE ...``) and deb822 (``URIs:``) entries."""
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 3 and words[0] == "deb":
            rest = [w for w in words[1:] if not w.startswith("[")]
            if len(rest) >= 2 and not words[1].startswith("["):
                yield rest[0], [rest[1]]
            elif len(rest) >= 2:
                uri_index = next(i for i, w in enumerate(words) if w.endswith("]")) + 1
                yield words[uri_index], [words[uri_index + 1]]
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if ":" in line and not line.startswith((" ", "#")):
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
        if "uris" in fields and "deb" in fields.get("types", "deb").split():
            for uri in fields["uris"].split():
                yield uri, fields.get("suites", "").split()


def sources_list(mirror: str, security: str | None) -> str:
    lines = [f"deb {mirror} {SUITE} main", f"deb {mirror} {SUITE}-updates main"]
    if security:
        lines.append(f"deb {security} {SUITE}-security main")
    return "\n".join(lines) + "\n"


TAR_EXCLUDES = (
    "./var/cache/apt/archives/*.deb", "./var/cache/apt/archives/partial/*",
    "./var/cache/apt/*.bin", "./var/lib/apt/lists/*", "./var/log/*", "./proc/*", "./sys/*",
    "./dev/*", "./run/*", "./tmp/*", "./debootstrap",
)


def debootstrap_base(client: Any, say: Say = _print) -> str:
    """Make ``debian:bookworm-slim`` from the machine's apt mirror (debootstrap minbase,
    tarred without apt caches, imported); returns the image id."""
    if shutil.which("debootstrap") is None:
        raise ImageError(f"{BASE_IMAGE} cannot be pulled and debootstrap is not installed "
                         "(apt-get install debootstrap)")
    mirror, security = apt_mirror()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="wgref-debootstrap-") as tmp:
        root = Path(tmp) / "root"
        say(f"base: debootstrap --variant=minbase {SUITE} from {mirror} (about 30 s)")
        proc = subprocess.run(
            ["debootstrap", "--variant=minbase", SUITE, str(root), mirror],
            capture_output=True, text=True, timeout=900, check=False)
        if proc.returncode != 0:
            raise ImageError(f"debootstrap failed: {(proc.stderr or proc.stdout)[-800:]}")
        (root / "etc/apt/sources.list").write_text(sources_list(mirror, security))
        (root / "etc/apt/apt.conf.d/docker-clean").write_text(
            'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
            '/var/cache/apt/*.bin || true"; };\nAPT::Update::Post-Invoke { "rm -f '
            '/var/cache/apt/*.bin || true"; };\nDir::Cache::pkgcache ""; '
            'Dir::Cache::srcpkgcache "";\n')
        tar = Path(tmp) / "rootfs.tar"
        say(f"base: tar of the root ({_du(root)}) without apt caches")
        argv = ["tar", "-C", str(root), "--numeric-owner", "-cf", str(tar)]
        argv += [f"--exclude={pattern}" for pattern in TAR_EXCLUDES]
        subprocess.run([*argv, "."], check=True, timeout=300, capture_output=True)
        say(f"base: docker import as {BASE_IMAGE}")
        repo, tag = BASE_IMAGE.split(":")
        out = client.api.import_image_from_file(
            str(tar), repository=repo, tag=tag,
            changes=['CMD ["bash"]', f'LABEL {labels.BASE_LABEL}="debootstrap {mirror}"'])
    image = client.images.get(BASE_IMAGE)
    say(f"base: {BASE_IMAGE} made locally in {time.monotonic() - started:.0f} s "
        f"({image.attrs.get('Size', 0) / 1e6:.0f} MB) {str(out).strip()[:80]}")
    return str(image.id)


def _du(path: Path) -> str:
    result = subprocess.run(["du", "-sh", str(path)], capture_output=True, text=True,
                            check=False, timeout=60)
    words = result.stdout.split()
    return words[0] if result.returncode == 0 and words else "?"


def ensure_base(client: Any, *, rebuild: bool = False, say: Say = _print) -> str:
    """Reuse ``debian:bookworm-slim``, else pull it, else debootstrap it."""
    docker = sdk()

    if not rebuild:
        try:
            image = client.images.get(BASE_IMAGE)
            say(f"base: {BASE_IMAGE} present ({image.short_id}), reused")
            return str(image.id)
        except docker.errors.ImageNotFound:
            pass
        say(f"base: pulling {BASE_IMAGE}")
        try:
            puller = make_client(timeout=PULL_TIMEOUT)
            image = puller.images.pull(BASE_IMAGE)
            say(f"base: pulled {BASE_IMAGE} ({image.short_id})")
            return str(image.id)
        except Exception as exc:
            say(f"base: cannot pull ({str(exc).splitlines()[0][:120]}); making it locally")
    return debootstrap_base(client, say)


# -- the peer images --------------------------------------------------------------------------

def local_cas(directory: Path = LOCAL_CA_DIR) -> list[Path]:
    return sorted(directory.glob("**/*.crt")) if directory.is_dir() else []


def build_context(spec: ImageSpec, root: Path = ROOT, cas: list[Path] | None = None) -> bytes:
    """The build context of one image as an uncompressed tar (reproducible: fixed owners and
    times, sorted)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        _add_bytes(tar, "Dockerfile", spec.dockerfile.read_bytes())
        _add_dir(tar, "ca")
        for ca in cas if cas is not None else local_cas():
            _add_bytes(tar, f"ca/{ca.name}", ca.read_bytes())
        for rel in spec.extra:
            path = root / rel
            files = [path] if path.is_file() else sorted(
                p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                and p.suffix not in (".pyc", ".so") and ".egg-info" not in str(p))
            for file in files:
                _add_bytes(tar, str(file.relative_to(root)), file.read_bytes(),
                           mode=0o755 if file.stat().st_mode & 0o111 else 0o644)
    return buf.getvalue()


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
    tar.addfile(info)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.uid, info.gid = len(data), mode, 0, 0, 0
    tar.addfile(info, io.BytesIO(data))


def build_image(client: Any, spec: ImageSpec, *, no_cache: bool = False,
                say: Say = _print) -> str:
    """Build one image through the API, printing each step; returns the image id."""
    started = time.monotonic()
    context = build_context(spec)
    say(f"{spec.name}: building {spec.tag} ({len(context) / 1e3:.0f} kB context)")
    image_id: str | None = None
    errors: list[str] = []
    cached = 0
    steps = 0
    stream = client.api.build(
        fileobj=io.BytesIO(context), custom_context=True, tag=spec.tag, rm=True, forcerm=True,
        nocache=no_cache, pull=False, decode=True, timeout=BUILD_TIMEOUT,
        labels={labels.IMAGE_LABEL: spec.name})
    for chunk in stream:
        for text in str(chunk.get("stream", "")).splitlines():
            if text.startswith("Step "):
                steps += 1
                say(f"{spec.name}: {text[:110]}")
            elif "Using cache" in text:
                cached += 1
            elif any(k in text for k in ("Successfully installed", "Collecting ")):
                say(f"{spec.name}:   {text[:100]}")
        if "error" in chunk:
            errors.append(str(chunk["error"]).strip())
        aux = chunk.get("aux")
        if isinstance(aux, dict) and "ID" in aux:
            image_id = str(aux["ID"])
    if errors:
        raise ImageError(f"{spec.name}: {errors[-1][-800:]}")
    image = client.images.get(spec.tag)
    size = image.attrs.get("Size", 0) / 1e6
    say(f"{spec.name}: {spec.tag} ready in {time.monotonic() - started:.0f} s "
        f"({cached}/{steps} steps cached, {size:.0f} MB)")
    return image_id or str(image.id)


def build_all(client: Any, names: list[str] | None = None, *, no_cache: bool = False,
              rebuild_base: bool = False, say: Say = _print) -> dict[str, str]:
    unknown = [n for n in names or [] if n not in IMAGES]
    if unknown:
        raise ImageError(f"unknown image {', '.join(unknown)} (known: {', '.join(IMAGES)})")
    started = time.monotonic()
    ensure_base(client, rebuild=rebuild_base, say=say)
    wanted = names or list(IMAGES)
    if "router" not in wanted:
        wanted = ["router", *wanted]  # every topology needs it
    out = {name: build_image(client, IMAGES[name], no_cache=no_cache, say=say)
           for name in wanted}
    say(f"images: {len(out)} ready in {time.monotonic() - started:.0f} s")
    return out


def image_rows(client: Any) -> list[tuple[str, str, float, str]]:
    """(tag, id, MB, created) of the base and the harness images that exist."""
    docker = sdk()

    rows = []
    for tag in [BASE_IMAGE, *(spec.tag for spec in IMAGES.values())]:
        try:
            image = client.images.get(tag)
        except docker.errors.ImageNotFound:
            rows.append((tag, "-", 0.0, "missing"))
            continue
        rows.append((tag, image.short_id.split(":")[-1], image.attrs.get("Size", 0) / 1e6,
                     str(image.attrs.get("Created", ""))[:19]))
    return rows
