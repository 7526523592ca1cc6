"""The workspace as plain data (crates, dependencies, targets, dependency trees), and loading it
from `cargo metadata --no-deps`, `cargo tree` and the files of the tree. Nothing here judges."""

from __future__ import annotations

import json
import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .lexers import Source


@dataclass
class Dep:
    name: str  # the package name (not the rename)
    kind: str | None = None  # None (normal), "dev" or "build"
    optional: bool = False
    features: list[str] = field(default_factory=list)
    uses_default_features: bool = True
    line: int | None = None  # where the manifest declares it, when found

    @property
    def is_dev(self) -> bool:
        return self.kind == "dev"


@dataclass
class Target:
    name: str
    kinds: list[str]  # "lib", "bin", "test", "bench", "example", "custom-build", ...
    src_path: str  # relative to the root
    test: bool = True  # whether `cargo test` builds and runs this target's unit tests


@dataclass
class Crate:
    name: str
    path: str  # folder relative to the workspace root, with `/` ("" for a root package)
    deps: list[Dep] = field(default_factory=list)
    features: dict[str, list[str]] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    manifest_text: str = ""

    @property
    def manifest(self) -> str:
        return f"{self.path}/Cargo.toml" if self.path else "Cargo.toml"

    def where(self, dep: Dep | None = None) -> str:
        """`path/Cargo.toml:line` of a dependency (or just the manifest)."""
        return f"{self.manifest}:{dep.line}" if dep is not None and dep.line else self.manifest


# --------------------------------------------------------------------------------------------------
# cargo metadata
# --------------------------------------------------------------------------------------------------

_SECTION = re.compile(r"^\s*\[\s*([^\]]+?)\s*\]\s*(?:#.*)?$")
_KEY = re.compile(r'^\s*("?)([A-Za-z0-9_.-]+?)\1\s*(?:=|\.)')
_KIND_SECTION = {None: "dependencies", "dev": "dev-dependencies", "build": "build-dependencies"}


def manifest_line(text: str, key: str, kind: str | None) -> int | None:
    """The line declaring dependency `key` (its name, or its rename) of `kind` in a Cargo.toml:
    `key = ...` or `key.workspace = true` under `[dependencies]` (or `[target.'...'.dependencies]`),
    or the header of `[dependencies.key]`."""
    want = _KIND_SECTION[kind]
    section = ""
    for no, line in enumerate(text.splitlines(), 1):
        m = _SECTION.match(line)
        if m:
            section = m.group(1).strip()
            parts = [p.strip().strip("'\"") for p in section.split(".")]
            if parts[-1] == key and len(parts) >= 2 and parts[-2] == want:
                return no
            continue
        tail = section.rsplit(".", 1)[-1].strip()
        if tail == want and (section == want or section.startswith("target.")):
            k = _KEY.match(line)
            if k and k.group(2) == key:
                return no
    return None


def load_crates(meta: dict) -> list[Crate]:
    """Workspace members of `cargo metadata --format-version 1 --no-deps` output."""
    root = Path(meta["workspace_root"]).resolve()
    members = set(meta.get("workspace_members") or [])
    crates = []
    for p in meta["packages"]:
        if members and p["id"] not in members:
            continue
        manifest = Path(p["manifest_path"]).resolve()
        path = manifest.parent.relative_to(root).as_posix()
        path = "" if path == "." else path
        try:
            text = manifest.read_text(encoding="utf-8")
        except OSError:
            text = ""
        deps = []
        for d in p.get("dependencies") or []:
            kind = d.get("kind")
            deps.append(Dep(
                d["name"], kind, bool(d.get("optional")), list(d.get("features") or []),
                bool(d.get("uses_default_features", True)),
                manifest_line(text, d.get("rename") or d["name"], kind),
            ))
        targets = []
        for t in p.get("targets") or []:
            src = Path(t["src_path"]).resolve()
            try:
                rel = src.relative_to(root).as_posix()
            except ValueError:
                rel = src.as_posix()
            targets.append(Target(t["name"], list(t.get("kind") or []), rel, bool(t.get("test", True))))
        crates.append(Crate(p["name"], path, deps, dict(p.get("features") or {}), targets, text))
    return sorted(crates, key=lambda c: c.path)


class CargoError(Exception):
    pass


def cargo(root: Path, *args: str, timeout: int = 60) -> str:
    """Runs `cargo ARGS` at the root and returns stdout; CargoError with cargo's message on failure."""
    try:
        p = subprocess.run(["cargo", *args], cwd=root, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CargoError(str(e)) from e
    if p.returncode != 0:
        msg = [ln.strip() for ln in p.stderr.splitlines() if ln.strip() and "Blocking waiting" not in ln]
        errors = [ln for ln in msg if ln.startswith("error")]
        raise CargoError(" / ".join(errors[:2] or msg[:4]) or f"exit {p.returncode}")
    return p.stdout


def cargo_metadata(root: Path) -> dict:
    return json.loads(cargo(root, "metadata", "--format-version", "1", "--no-deps", "--offline",
                            "--manifest-path", str(root / "Cargo.toml")))


# --------------------------------------------------------------------------------------------------
# cargo tree
# --------------------------------------------------------------------------------------------------

_TREE_LINE = re.compile(r"^\s*(?:[│├└─ `|\\-]+\s*)?([A-Za-z0-9_.-]+) v(\S+)")


def tree_packages(text: str) -> list[tuple[str, str]]:
    """(name, version) of every line of `cargo tree --prefix none` (or indented) output."""
    out = []
    for line in text.splitlines():
        m = _TREE_LINE.match(line)
        if m:
            out.append((m.group(1), m.group(2)))
    return out


def lock_packages(lock_text: str) -> list[tuple[str, str]]:
    """(name, version) of every `[[package]]` in a Cargo.lock."""
    out, name = [], None
    for line in lock_text.splitlines():
        line = line.strip()
        if line == "[[package]]":
            name = None
        elif line.startswith("name = "):
            name = line.split("=", 1)[1].strip().strip('"')
        elif line.startswith("version = ") and name is not None:
            out.append((name, line.split("=", 1)[1].strip().strip('"')))
            name = None
    return out


# Never let a check rewrite Cargo.lock: a stale lock is reported instead.
TREE_FLAGS = ("-e", "normal", "--prefix", "none", "--offline", "--locked")


@dataclass
class AgentTrees:
    agent: str | None  # `cargo tree -p <agent> -e normal --prefix none`
    inverted: dict[str, str]  # spec -> `cargo tree --workspace -e normal -i <spec> --prefix none`
    errors: list[str]  # commands that failed, with cargo's message


def load_agent_trees(root: Path, agent: str | None, specs: list[str]) -> AgentTrees:
    def run(args: list[str]) -> tuple[str | None, str | None]:
        try:
            return cargo(root, *args), None
        except CargoError as e:
            return None, f"`cargo {' '.join(args)}` failed: {e}"

    jobs = {}
    with ThreadPoolExecutor(max_workers=4) as pool:
        if agent:
            jobs[None] = pool.submit(run, ["tree", "-p", agent, *TREE_FLAGS])
        for spec in specs:
            jobs[spec] = pool.submit(run, ["tree", "--workspace", "-i", spec, *TREE_FLAGS])
    trees = AgentTrees(None, {}, [])
    for spec, job in jobs.items():
        text, err = job.result()
        if err:
            trees.errors.append(err)
        elif spec is None:
            trees.agent = text
        else:
            trees.inverted[spec] = text
    return trees


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------

SKIP_DIRS = {".git", ".tools", ".dev", "target", "node_modules", "__pycache__"}


@dataclass
class Files:
    paths: set[str]  # every file, and every folder with a trailing `/`
    rust: list[Source]  # every .rs file


def read_files(root: Path) -> Files:
    paths: set[str] = set()
    rust: list[Source] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        rel = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if rel == "." else rel + "/"
        if prefix:
            paths.add(prefix)
        for f in sorted(filenames):
            paths.add(prefix + f)
            if f.endswith(".rs"):
                try:
                    text = (Path(dirpath) / f).read_text(encoding="utf-8", errors="replace")
                except OSError:
                    continue
                rust.append((prefix + f, text))
    return Files(paths, rust)


def read_text(root: Path, rel: str) -> str | None:
    try:
        return (root / rel).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def under(path: str, folder: str) -> bool:
    """Whether `path` is inside `folder` (both relative; `*` in folder matches one folder name)."""
    if "*" in folder:
        rx = re.escape(folder.rstrip("/")).replace(r"\*", "[^/]+")
        return re.match(rx + "/", path) is not None
    return path.startswith(folder.rstrip("/") + "/")
