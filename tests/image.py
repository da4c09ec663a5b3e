"""The Dockerfile's image built without a Docker engine: its stages followed in a directory that
stands for the image's root, so that a test can run the image's CMD and HEALTHCHECK for real.

What a directory cannot be is stood in for, and said so: the base images' files are the host's
(Python of the same version for `python:<version>-slim`, the host's uv for the uv image), uv's
cache mount is the host's uv cache, and the final stage's RUN, which creates the service user,
is not run: its effect is reproduced (its directories made, owned by the image's USER). The
processes are not isolated: they see the host's other paths. Every stage is built at the same
path, so an absolute path written by a build stage (the editable install's .pth, the scripts'
shebangs) holds in the final tree only if the final stage copied what it names.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

# The image's own directories: its WORKDIR and its data volume. Every other absolute path is the
# base image's (or the host's).
IMAGE_DIRS = ("/app", "/data")
# The PATH of the official python images.
BASE_PATH = "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"
# What a RUN may need from the host: uv's cache (the cache mount's stand-in) and a proxy.
HOST_ENV = ("HOME", "UV_CACHE_DIR", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


@dataclass
class Dockerfile:
    args: dict[str, str]  # the ARGs declared before the first FROM, with their defaults
    stages: list[Stage]


def parse(text: str) -> Dockerfile:
    """The Dockerfile's global ARGs and its stages: (INSTRUCTION, arguments) pairs, continued
    lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):  # also a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    parsed = Dockerfile({}, [])
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = expand(args, parsed.args).split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            parsed.stages.append(Stage(words[0], name))
        elif parsed.stages:
            parsed.stages[-1].instructions.append((keyword, args))
        elif keyword == "ARG":
            name, _, default = args.partition("=")
            parsed.args[name] = default
    return parsed


def expand(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values.get(m[1] or m[2], ""), text)


def ignore_patterns(dockerignore: Path) -> list[str]:
    patterns = [
        line.strip()
        for line in dockerignore.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert not any(p.startswith("!") for p in patterns), "exceptions (!) are not followed here"
    return patterns


def ignored(relative: str, patterns: list[str]) -> bool:
    """Whether the build context leaves out `relative` (a path or any folder above it)."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    # `**/x` matches x at any depth, the top included.
    globs = [g for p in patterns for g in ((p, p[3:]) if p.startswith("**/") else (p,))]
    return any(fnmatch.fnmatch(prefix, glob) for prefix in prefixes for glob in globs)


@dataclass
class Image:
    """The final stage's tree at `root`, and how the image runs a process."""

    root: Path
    base_bin: Path  # stands for the base image's /usr/local/bin
    env: dict[str, str]  # as the Dockerfile writes them (the image's paths)
    workdir: str
    uid: int | None
    cmd: list[str]
    healthcheck: list[str]

    def inside(self, value: str) -> str:
        """`value` with the image's paths made paths of the tree standing for it."""

        def mapped(match: re.Match[str]) -> str:
            path = match[0]
            return str(self.base_bin) if path == "/usr/local/bin" else f"{self.root}{path}"

        dirs = "|".join(re.escape(d) for d in (*IMAGE_DIRS, "/usr/local/bin"))
        return re.sub(rf"(?<![\w.])(?:{dirs})(?=/|:|$)", mapped, value)

    def process_env(self, **overrides: str) -> dict[str, str]:
        """The environment of a process of the image (`docker run -e` adds `overrides`)."""
        return {**{name: self.inside(value) for name, value in self.env.items()}, **overrides}

    def popen(self, argv: list[str], log: Path, **overrides: str) -> subprocess.Popen[bytes]:
        """Start `argv` as the image would: its environment, WORKDIR and USER; output to `log`."""
        with log.open("ab") as output:
            return subprocess.Popen(
                argv,
                env=self.process_env(**overrides),
                cwd=self.inside(self.workdir),
                user=self.uid,
                group=self.uid,
                extra_groups=[] if self.uid is not None else None,
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def run(self, argv: list[str], **overrides: str) -> subprocess.CompletedProcess[str]:
        """Run `argv` to its end as the image would (bounded)."""
        return subprocess.run(
            argv,
            env=self.process_env(**overrides),
            cwd=self.inside(self.workdir),
            user=self.uid,
            group=self.uid,
            extra_groups=[] if self.uid is not None else None,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


class Builder:
    """Follows a Dockerfile's instructions, stage after stage, at `root`."""

    def __init__(self, dockerfile: Path, context: Path, root: Path, python: str) -> None:
        self.file = parse(dockerfile.read_text())
        self.context = context
        self.patterns = ignore_patterns(context / ".dockerignore")
        self.root = root
        self.python = python
        # The base image's /usr/local/bin (its Python), and the /bin a stage copies another
        # image's tools into: one path for every stage, as in the image, emptied between them.
        self.base_bin = root.parent / "base-bin"
        self.built: dict[str, Path] = {}  # a finished stage's name -> its tree

    def build(self) -> Image:
        image: Image | None = None
        last = len(self.file.stages) - 1
        for index, stage in enumerate(self.file.stages):
            if not stage.instructions:  # another image, used only by COPY --from
                continue
            shutil.rmtree(self.base_bin, ignore_errors=True)
            self.base_bin.mkdir()
            for name in ("python", "python3"):
                (self.base_bin / name).symlink_to(self.python)
            self.root.mkdir()
            image = self._stage(stage, final=index == last)
            if index != last:
                kept = self.root.rename(self.root.parent / f"stage-{index}")
                if stage.name:
                    self.built[stage.name] = kept
        assert image is not None, "the Dockerfile has no stage to build"
        return image

    def _stage(self, stage: Stage, *, final: bool) -> Image:
        args = dict(self.file.args)
        image = Image(self.root, self.base_bin, {"PATH": BASE_PATH}, "/", None, [], [])
        made: list[str] = []
        for keyword, raw in stage.instructions:
            # The shell expands a RUN's variables; the builder expands the other instructions'.
            text = raw if keyword == "RUN" else expand(raw, {**args, **image.env})
            if keyword == "ARG":
                name, _, default = raw.partition("=")
                args[name] = default or self.file.args.get(name, "")
            elif keyword == "ENV":
                for pair in shlex.split(text):
                    name, _, value = pair.partition("=")
                    image.env[name] = value
            elif keyword == "WORKDIR":
                image.workdir = os.path.join(image.workdir, text)
                Path(image.inside(image.workdir)).mkdir(parents=True, exist_ok=True)
            elif keyword == "COPY":
                self._copy(image, text)
            elif keyword == "RUN" and final:
                # It creates the service user; here only its directories are made, for that user.
                made += re.findall(r"mkdir\s+(/\S+)", text)
            elif keyword == "RUN":
                self._run(image, text, args)
            elif keyword == "USER":
                image.uid = int(text.split(":")[0])
            elif keyword == "HEALTHCHECK":
                image.healthcheck = json.loads(text.partition(" CMD ")[2])
            elif keyword == "CMD":
                image.cmd = json.loads(text)
        for path in made:
            Path(image.inside(path)).mkdir(parents=True)
            if image.uid is not None and os.geteuid() == 0:
                os.chown(image.inside(path), image.uid, image.uid)
        if os.geteuid() != 0:
            image.uid = None  # only root can run a process as another user
        return image

    def _copy(self, image: Image, text: str) -> None:
        words = text.split()
        source_stage = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
        *sources, destination = [w for w in words if not w.startswith("--")]
        if source_stage is not None and source_stage not in self.built:
            # A file of another image (uv's): the host's tool of the same name, on the PATH.
            for source in sources:
                found = shutil.which(Path(source).name)
                assert found, f"COPY --from={source_stage} {source}: no such tool on this host"
                (self.base_bin / Path(source).name).symlink_to(found)
            return
        target = Path(image.inside(os.path.join(image.workdir, destination)))
        for source in sources:
            if source_stage is not None:
                origin = self.built[source_stage] / source.lstrip("/")
            else:
                origin = self.context / source
                assert origin.exists(), f"COPY {source}: no such path in the build context"
                assert not ignored(source, self.patterns), f"COPY {source}: .dockerignore'd"
            into = target / origin.name if destination.endswith("/") else target
            self._copy_tree(origin, into, from_context=source_stage is None)

    def _copy_tree(self, origin: Path, into: Path, *, from_context: bool) -> None:
        if origin.is_dir() and not origin.is_symlink():
            for child in origin.iterdir():
                relative = child.relative_to(self.context).as_posix() if from_context else ""
                if not (from_context and ignored(relative, self.patterns)):
                    self._copy_tree(child, into / child.name, from_context=from_context)
        else:
            into.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, into, follow_symlinks=False)

    def _run(self, image: Image, text: str, args: dict[str, str]) -> None:
        """A RUN of a build stage, in a shell; bind mounts are copies removed after."""
        words = text.split(" ")
        mounts = [w for w in words if w.startswith("--mount=")]
        command = " ".join(w for w in words if not w.startswith("--mount="))
        workdir = Path(image.inside(image.workdir))
        bound: list[Path] = []
        for mount in mounts:
            options = dict(part.split("=", 1) for part in mount[len("--mount=") :].split(","))
            if options["type"] == "bind":
                target = workdir / options["target"]
                shutil.copy2(self.context / options["source"], target)
                bound.append(target)
        host = {name: os.environ[name] for name in HOST_ENV if name in os.environ}
        try:
            result = subprocess.run(
                ["sh", "-c", command],
                cwd=workdir,
                env={**args, **host, **image.process_env()},
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
        finally:
            for target in bound:
                target.unlink()
        assert result.returncode == 0, f"RUN {command}\n{result.stdout}\n{result.stderr}"
