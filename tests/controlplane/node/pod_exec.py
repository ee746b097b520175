"""Become one container of a pod: private mount namespace, container root, volumes, user, then exec.

Run by the node agent as root, with the standard library only (`python -I -S pod_exec.py SPEC.json`), in
its own session (the agent kills the process group). Steps:

1. unshare(CLONE_NEWNS) and make every mount private, so nothing below leaks to the host.
2. An overlay of the host's `/` (lower) with a per-container upper dir on disk as the container's root:
   the process sees the host's files (so the project's venv and tools work), but what it writes outside
   its volumes lands in the container's own writable layer and disappears with it, like a container
   image layer. Mount points for volumes are created in that layer, never on the host.
3. /proc and /sys from the host, a private /dev (tmpfs with the usual device nodes bound in, devpts,
   /dev/shm) and the host's other mounts (so nothing that the host can reach disappears).
4. Volumes bound at their real mount paths (read-only where asked), the termination-message file, and
   the working directory; readOnlyRootFilesystem remounts the overlay read-only.
5. For non-root users: directories on the way to the interpreter, the venv and the repo get o+x in the
   container's layer only (e.g. /root is 0700 on the host), so a pod with runAsUser can still run them.
6. chroot, setgroups/setgid/setuid, no_new_privs if allowPrivilegeEscalation is false, umask, exec.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import stat
import sys
from typing import NoReturn

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]

CLONE_NEWNS = 0x00020000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
PR_SET_NO_NEW_PRIVS = 38


def die(msg: str, code: int = 128) -> NoReturn:
    sys.stderr.write(f"pod_exec: {msg}\n")
    sys.stderr.flush()
    os._exit(code)


def mount(src: str | None, dst: str, fstype: str | None = None, flags: int = 0, data: str | None = None) -> None:
    def enc(s: str | None) -> bytes | None:
        return s.encode() if s is not None else None

    if libc.mount(enc(src), enc(dst), enc(fstype), flags, enc(data)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount {src} -> {dst} ({fstype}, flags={flags:#x}, {data}): {os.strerror(e)}")


def bind(src: str, dst: str, ro: bool = False, rec: bool = True) -> None:
    mount(src, dst, None, MS_BIND | (MS_REC if rec else 0))
    if ro:
        mount(None, dst, None, MS_REMOUNT | MS_BIND | MS_RDONLY)


def ensure_target(path: str, is_dir: bool) -> None:
    if os.path.lexists(path):
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if is_dir:
        os.mkdir(path)
    else:
        open(path, "a").close()


def in_root(root: str, path: str) -> str:
    """The host path of PATH inside the container root, following symlinks *within* the root (so an
    absolute link such as /var/run -> /run stays inside it, like a container runtime's securejoin)."""
    parts = [p for p in path.split("/") if p and p != "."]
    cur = root
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            cur = os.path.dirname(cur) if cur != root else root
            if not (cur + "/").startswith(root.rstrip("/") + "/"):
                cur = root
            continue
        nxt = os.path.join(cur, part)
        if os.path.islink(nxt):
            hops += 1
            if hops > 40:
                raise OSError(40, f"too many levels of symbolic links in {path}")
            target = os.readlink(nxt)
            if target.startswith("/"):
                cur = root
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        cur = nxt
    return cur


def host_mounts() -> list[str]:
    """Mount points of the host (this namespace's copy), outermost first."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            mp = parts[4].encode().decode("unicode_escape")
            out.append(mp)
    return out


def main() -> None:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    root = spec["root"]

    if libc.unshare(CLONE_NEWNS) != 0:
        die(f"unshare: {os.strerror(ctypes.get_errno())}")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    # The container's own mount namespace names every process of it, daemons that left the session
    # included: the node agent kills them all when the main process exits (containers.reap).
    with contextlib.suppress(OSError), open(os.path.join(os.path.dirname(spec["upper"]), "mntns"), "w") as f:
        f.write(os.readlink("/proc/self/ns/mnt"))

    # 2. container root: overlay of the host's / with a private writable layer
    os.makedirs(spec["upper"], exist_ok=True)
    os.makedirs(spec["work"], exist_ok=True)
    os.makedirs(root, exist_ok=True)
    try:
        mount("overlay", root, "overlay", 0, f"lowerdir=/,upperdir={spec['upper']},workdir={spec['work']}")
    except OSError:
        # e.g. the host's / is itself an overlay (an upper dir cannot live on overlayfs): keep the
        # container's layer in memory instead
        layer = os.path.join(os.path.dirname(spec["upper"]), "memlayer")
        os.makedirs(layer, exist_ok=True)
        mount("tmpfs", layer, "tmpfs", 0, "mode=755")
        os.makedirs(f"{layer}/upper")
        os.makedirs(f"{layer}/work")
        mount("overlay", root, "overlay", 0, f"lowerdir=/,upperdir={layer}/upper,workdir={layer}/work")

    def R(p: str) -> str:
        return in_root(root, p)

    # 3. host mounts (/proc, /sys, others), a private /dev
    skip_prefixes = ("/dev", root, spec.get("state", root))
    done: list[str] = []
    for mp in host_mounts():
        if mp == "/" or any(mp == s or mp.startswith(s.rstrip("/") + "/") for s in skip_prefixes):
            continue
        if any(mp.startswith(d.rstrip("/") + "/") for d in done):
            continue  # already covered by a recursive bind of a parent
        if not os.path.isdir(mp):
            continue
        try:
            os.makedirs(R(mp), exist_ok=True)
            bind(mp, R(mp), rec=True)
            done.append(mp)
        except OSError as e:
            sys.stderr.write(f"pod_exec: warning: {e}\n")
    dev = R("/dev")
    os.makedirs(dev, exist_ok=True)
    mount("tmpfs", dev, "tmpfs", MS_NOSUID, "mode=755,size=65536k")
    for node in ("null", "zero", "full", "random", "urandom", "tty"):
        if os.path.exists(f"/dev/{node}"):
            ensure_target(f"{dev}/{node}", False)
            bind(f"/dev/{node}", f"{dev}/{node}", rec=False)
    os.mkdir(f"{dev}/pts")
    try:
        mount("devpts", f"{dev}/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620")
        os.symlink("pts/ptmx", f"{dev}/ptmx")
    except OSError:
        pass
    os.mkdir(f"{dev}/shm")
    mount("shm", f"{dev}/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=1g")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{name}")

    # 4. volumes and the termination-message file, at their real paths inside the container root
    for m in spec["mounts"]:
        src, dst, ro = m["source"], m["target"], m.get("readOnly", False)
        is_dir = os.path.isdir(src)
        t = R(dst)
        try:
            if os.path.islink(t):
                os.unlink(t)
            ensure_target(t, is_dir)
            bind(src, t, ro=ro)
        except OSError as e:
            die(f"mounting volume {m.get('name', src)} at {dst}: {e}")

    # A volume over an ancestor of the venv or repo (an emptyDir at /tmp while the checkout lives under
    # /tmp) would hide the interpreter the container runs: put those host paths back, read-only.
    targets = [os.path.abspath(m["target"]) for m in spec["mounts"]]
    for p in spec.get("expose", []):
        p = os.path.abspath(p)
        if os.path.isdir(p) and any(p == t or p.startswith(t.rstrip("/") + "/") for t in targets):
            try:
                ensure_target(R(p), True)
                bind(p, R(p), ro=True)
            except OSError as e:
                die(f"re-exposing {p} under a volume: {e}")

    uid, gid = spec.get("uid", 0), spec.get("gid", 0)
    if uid != 0:
        # 5. make the way to the interpreter, venv, repo and working dir traversable for this user
        for p in spec.get("expose", []):
            parts = os.path.abspath(p).split("/")
            for i in range(2, len(parts) + 1):
                d = "/".join(parts[:i])
                try:
                    st = os.stat(R(d))
                except OSError:
                    break
                if stat.S_ISDIR(st.st_mode) and not st.st_mode & 0o001:
                    with contextlib.suppress(OSError):  # e.g. inside a read-only bind mount
                        os.chmod(R(d), stat.S_IMODE(st.st_mode) | 0o011)

    cwd = spec.get("cwd") or "/"
    if not os.path.isdir(R(cwd)):
        os.makedirs(R(cwd), exist_ok=True)
        if uid != 0:
            os.chown(R(cwd), uid, gid)
    home = spec["env"].get("HOME")
    if home and uid != 0 and not os.path.exists(R(home)):
        os.makedirs(R(home), exist_ok=True)
        os.chown(R(home), uid, gid)

    if spec.get("readOnlyRootFilesystem"):
        mount(None, root, None, MS_REMOUNT | MS_RDONLY, None)

    # 6. become the container process
    os.chroot(root)
    os.chdir(cwd)
    os.setgroups(spec.get("groups", []))
    os.setgid(gid)
    os.setuid(uid)
    if spec.get("noNewPrivs"):
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    os.umask(0o022)
    argv = spec["argv"]
    env = spec["env"]
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as e:
        msg = f'exec: "{argv[0]}": {e.strerror}'
        tm = spec.get("terminationMessagePath")
        if tm:
            try:
                with open(tm, "w") as f:
                    f.write(msg)
            except OSError:
                pass
        die(msg, 127 if e.errno == 2 else 126)


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except BaseException as e:  # anything before exec is a container start error
        die(f"{type(e).__name__}: {e}")
