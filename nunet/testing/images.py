"""Container images built on this machine, for tests, the demo and benchmarks: no registry is
needed. `ensure_busybox_image()` imports a rootfs holding a static busybox and a link per applet
(`docker import`), once; later calls find it present."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import tarfile
from pathlib import Path

from nunet.errors import ExecutorError, ExecutorUnavailable

BUSYBOX_TAG = "nunet-test/busybox:latest"
# Marks an image this module built; an image under the same tag without it (made by hand, with a
# few applets only) is rebuilt.
BUILT_BY_LABEL = "nunet-testing.image"
BUILT_BY_VALUE = "busybox-all-applets-1"
_PT_INTERP = 3


def _is_static_elf(path: Path) -> bool:
    """No program interpreter: it runs in an empty rootfs without a dynamic loader."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF":
        return False
    is64, little = data[4] == 2, data[5] == 1
    e = "<" if little else ">"
    if is64:
        (phoff,) = struct.unpack_from(e + "Q", data, 0x20)
        phentsize, phnum = struct.unpack_from(e + "HH", data, 0x36)
    else:
        (phoff,) = struct.unpack_from(e + "I", data, 0x1C)
        phentsize, phnum = struct.unpack_from(e + "HH", data, 0x2A)
    for i in range(phnum):
        (p_type,) = struct.unpack_from(e + "I", data, phoff + i * phentsize)
        if p_type == _PT_INTERP:
            return False
    return True


def find_static_busybox() -> Path:
    candidates = [os.environ.get("NUNET_BUSYBOX", ""), "/bin/busybox", shutil.which("busybox")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and _is_static_elf(Path(candidate)):
            return Path(candidate)
    raise ExecutorError(
        "no static busybox found (Debian: apt-get install busybox-static, or set NUNET_BUSYBOX)"
    )


def busybox_rootfs(busybox: Path) -> bytes:
    """A tar of a minimal root filesystem: /bin/busybox, a link per applet, /etc/passwd."""
    applets = subprocess.run(
        [str(busybox), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:

        def add(name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.linkname, info.size = kind, mode, link, len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)

        for d in ("bin", "etc", "root", "proc", "sys", "dev", "usr", "usr/bin", "var"):
            add(d, tarfile.DIRTYPE, 0o755)
        add("tmp", tarfile.DIRTYPE, 0o1777)
        add("bin/busybox", tarfile.REGTYPE, 0o755, busybox.read_bytes())
        for applet in sorted(set(applets) - {"busybox"}):
            add(f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox")
        add(
            "etc/passwd",
            tarfile.REGTYPE,
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        )
        add("etc/group", tarfile.REGTYPE, 0o644, b"root:x:0:\nnogroup:x:65534:\n")
    return out.getvalue()


def _docker(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    if shutil.which("docker") is None:
        raise ExecutorUnavailable("the docker command is not installed")
    return subprocess.run(
        ["docker", *args], input=data, capture_output=True, check=False, timeout=120
    )


def ensure_busybox_image(tag: str = BUSYBOX_TAG) -> str:
    """`tag`, imported from a busybox-static rootfs unless the engine has it already."""
    found = _docker("image", "inspect", "--format", "{{json .Config.Labels}}", tag)
    if found.returncode == 0:
        labels = json.loads(found.stdout or b"null") or {}
        if labels.get(BUILT_BY_LABEL) == BUILT_BY_VALUE:
            return tag
    rootfs = busybox_rootfs(find_static_busybox())
    changes = ("--change", 'CMD ["sh"]', "--change", f"LABEL {BUILT_BY_LABEL}={BUILT_BY_VALUE}")
    done = _docker("import", *changes, "-", tag, data=rootfs)
    if done.returncode != 0:
        raise ExecutorError(f"docker import of {tag} failed: {done.stderr.decode().strip()}")
    return tag
