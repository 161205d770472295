"""docker compose and docker: argv builders and output parsers. Decides nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from vigo.adapters import engine
from vigo.adapters.run import UNTRUSTED_DATA_LIMIT, Result, Runner
from vigo.core.model import (
    COMPOSE_CONFIG_HASH,
    COMPOSE_PROJECT,
    COMPOSE_SERVICE,
    LABEL_INSTANCE,
    LABEL_STACK,
    Container,
)

# Output that is parsed, never printed (ps, inspect, images, config --hash), is not masked: a
# secret equal to a stack, service or image name (POSTGRES_DB=shop) would otherwise hide the
# containers from vigo and redeploy them every run. What vigo prints goes through the masker.

# Remote includes from git or OCI are on by default in compose: never for vigo.
COMPOSE_ENV = {"COMPOSE_EXPERIMENTAL_GIT_REMOTE": "false",
               "COMPOSE_EXPERIMENTAL_OCI_REMOTE": "false"}

_PS_FORMAT = "{" + ",".join(
    f'"{key}":{{{{json {expr}}}}}' for key, expr in (
        ("id", ".ID"), ("name", ".Names"), ("state", ".State"), ("status", ".Status"),
        ("image", ".Image"), ("stack", f'(.Label "{LABEL_STACK}")'),
        ("instance", f'(.Label "{LABEL_INSTANCE}")'),
        ("project", f'(.Label "{COMPOSE_PROJECT}")'),
        ("service", f'(.Label "{COMPOSE_SERVICE}")'),
        ("config_hash", f'(.Label "{COMPOSE_CONFIG_HASH}")'),
    )) + "}"


class DockerError(Exception):
    pass


def _pull_env(docker_config: Path | None) -> dict[str, str]:
    """Compose's environment, plus the registry credentials folder for the calls that pull
    (docs/private-images.md): nothing else gets it."""
    if docker_config is None:
        return COMPOSE_ENV
    return {**COMPOSE_ENV, "DOCKER_CONFIG": str(docker_config)}


class Listing:
    """A container list asked of the engine, read by `result()` (once); `close()` drops it."""

    def __init__(self, read: Callable[[], bytes], close: Callable[[], None]) -> None:
        self._read = read
        self.close = close
        self.at = time.monotonic()  # when it was asked

    def result(self) -> tuple[Container, ...]:
        try:
            return engine.parse_containers(self._read())
        except engine.EngineError as exc:
            raise DockerError(f"cannot list containers: {exc}") from None


class Compose:
    def __init__(self, runner: Runner, timeout: float = 600) -> None:
        self.runner = runner
        self.timeout = timeout
        self._socket: str | None = None  # the engine's unix socket, "" for the CLI

    def _argv(self, project: str, files: Sequence[Path], env_files: Sequence[Path]) -> list[str]:
        argv = ["docker", "compose", "--project-name", project]
        for f in files:
            argv += ["--file", str(f)]
        # Always name env files: without one compose would read a stack's own `.env`.
        for e in env_files or (Path("/dev/null"),):
            argv += ["--env-file", str(e)]
        return argv

    def config(self, project: str, files: Sequence[Path], env_files: Sequence[Path]) -> Result:
        """The resolved model as JSON (env_file values not inlined). Output is not masked:
        callers parse it and never print it."""
        argv = [*self._argv(project, files, env_files), "config", "--format", "json",
                "--no-env-resolution"]
        return self.runner.run(argv, env=COMPOSE_ENV, timeout=120, mask_output=False,
                               limit_data=UNTRUSTED_DATA_LIMIT)

    def validate(self, compose_file: Path) -> str | None:
        """'' when compose accepts the file (no interpolation, no env files read), the reason
        when it does not, None when docker compose is not installed."""
        argv = ["docker", "compose", "--project-name", "vigo-check", "--file", str(compose_file),
                "--env-file", "/dev/null", "config", "--quiet", "--no-interpolate",
                "--no-env-resolution"]
        res = self.runner.run(argv, env=COMPOSE_ENV, timeout=60, limit_data=UNTRUSTED_DATA_LIMIT)
        if res.returncode == 127 or "is not a docker command" in res.stderr:
            return None
        return "" if res.ok else res.error(3)

    def version(self) -> str:
        """`docker compose version --short` ('' when docker compose is not installed or does
        not answer): part of the cache keys of `vigo check`."""
        try:
            res = self.runner.run(("docker", "compose", "version", "--short"), env=COMPOSE_ENV,
                                  timeout=60)
        except FileNotFoundError:
            return ""
        return res.stdout.strip() if res.ok else ""

    def resolve_offline(self, project: str, compose_file: Path, env_file: Path) -> Result | None:
        """The resolved model of one file with the placeholder env file of `vigo check`; None
        when docker compose is not installed."""
        try:
            res = self.config(project, [compose_file], [env_file])
        except FileNotFoundError:
            return None
        if res.returncode == 127 or "is not a docker command" in res.stderr:
            return None
        return res

    def up(self, project: str, files: Sequence[Path], env_files: Sequence[Path],
           docker_config: Path | None = None, services: Sequence[str] = ()) -> Result:
        """`up` of the whole project, or of the named services only (`--no-deps`: the services
        left out completed and must not run again)."""
        argv = [*self._argv(project, files, env_files), "up", "--detach", "--remove-orphans",
                "--quiet-pull"]
        if services:
            argv += ["--no-deps", *services]
        return self.runner.run(argv, env=_pull_env(docker_config), timeout=self.timeout)

    def resolved(self, project: str, files: Sequence[Path], env_files: Sequence[Path]) -> Result:
        """The fully resolved model, env files inlined: the replayable state of a stack. Holds
        secrets: callers write it to the secrets folder only and never print it."""
        argv = [*self._argv(project, files, env_files), "config", "--format", "json"]
        return self.runner.run(argv, env=COMPOSE_ENV, timeout=120, mask_output=False)

    def config_hashes(self, project: str, files: Sequence[Path],
                      env_files: Sequence[Path]) -> dict[str, str]:
        """service -> the config hash compose would give its container now."""
        argv = [*self._argv(project, files, env_files), "config", "--hash", "*"]
        # It parses what the repo holds, also beside the model before the policy has judged
        # it (Resolver._guess): under the same data limit as `config`.
        res = self.runner.run(argv, env=COMPOSE_ENV, timeout=120, mask_output=False,
                              limit_data=UNTRUSTED_DATA_LIMIT)
        if not res.ok:
            raise DockerError(f"docker compose config --hash: {res.error(3)}")
        return dict(line.split(None, 1) for line in res.stdout.splitlines() if " " in line)

    def up_service(self, project: str, files: Sequence[Path], env_files: Sequence[Path],
                   service: str, scale: int, docker_config: Path | None = None) -> Result:
        """Start `scale` containers of one service without recreating the running ones (the
        first step of a zero-downtime rollout)."""
        argv = [*self._argv(project, files, env_files), "up", "--detach", "--no-deps",
                "--no-recreate", "--quiet-pull", "--scale", f"{service}={scale}", service]
        return self.runner.run(argv, env=_pull_env(docker_config), timeout=self.timeout)

    def run_job(self, project: str, files: Sequence[Path], env_files: Sequence[Path],
                service: str, timeout: float, docker_config: Path | None = None) -> Result:
        """Run a release job (x-vigo.jobs): compose's own `up` of that one service, attached,
        until it exits; its exit code is the job's. Raises CommandTimeout after `timeout` (the
        whole process group is killed; the container may still run: the caller removes it)."""
        argv = [*self._argv(project, files, env_files), "--ansi", "never", "up", "--no-deps",
                "--quiet-pull", "--no-log-prefix", "--exit-code-from", service, service]
        return self.runner.run(argv, env=_pull_env(docker_config), timeout=timeout)

    def up_model(self, project: str, model: Path, docker_config: Path | None = None) -> Result:
        """Bring a project back to a saved resolved model (a rollback)."""
        argv = ["docker", "compose", "--project-name", project, "--file", str(model),
                "--env-file", "/dev/null", "up", "--detach", "--remove-orphans", "--quiet-pull"]
        return self.runner.run(argv, env=_pull_env(docker_config), timeout=self.timeout)

    def down(self, project: str) -> Result:
        argv = ["docker", "compose", "--project-name", project, "down", "--remove-orphans"]
        return self.runner.run(argv, env=COMPOSE_ENV, timeout=self.timeout)

    def socket(self) -> str:
        """The engine's unix socket vigo asks directly, '' when the docker CLI must (DOCKER_HOST
        tcp:// or ssh://, a docker context): decided once, from the environment."""
        if self._socket is None:
            env = self.runner.env()
            self._socket = engine.socket_path(
                env, None if env.get("DOCKER_HOST") or env.get("DOCKER_CONTEXT")
                else engine.cli_config(env)) or ""
        return self._socket

    def api(self, timeout: float = 60) -> engine.Reads:
        """The engine's API for reads: its unix socket, or `docker system dial-stdio` when
        DOCKER_HOST or a docker context names another endpoint (the same requests)."""
        if self.socket():
            return engine.Engine(self._socket, timeout=timeout)
        return engine.Dialed(self.runner, timeout=timeout)

    def get(self, target: str, timeout: float = 60) -> bytes:
        """One GET to the engine's API (`api`), shown with -v; EngineError when it fails."""
        if self.runner.verbose and self.runner.log:
            where = f"unix://{self._socket}" if self.socket() else "(docker system dial-stdio) "
            self.runner.log("$ " + self.runner.masker(f"GET {where}{target}"))
        return self.api(timeout).get(target)

    def containers(self, project: str = "", instance: str = "") -> tuple[Container, ...]:
        """Every container that carries vigo's stack label (of one compose project and one
        vigo instance, if named): one request to the engine's API (adapters/engine.py), on
        its unix socket or through `docker system dial-stdio` for any other endpoint."""
        return self.containers_soon(project, instance).result()

    def containers_soon(self, project: str = "", instance: str = "") -> Listing:
        """`containers`, asked now and read when `result()` is called: on the unix socket
        the engine lists while vigo fetches and renders (through the CLI: asked at `result`)."""
        labels = [LABEL_STACK]
        if instance:
            labels.append(f"{LABEL_INSTANCE}={instance}")
        if project:
            labels.append(f"{COMPOSE_PROJECT}={project}")
        target = engine.list_query(labels)
        if self.socket():
            if self.runner.verbose and self.runner.log:
                self.runner.log("$ " + self.runner.masker(f"GET unix://{self._socket}{target}"))
            asked = engine.Engine(self._socket, timeout=60).ask(target)
            return Listing(asked.result, asked.close)
        return Listing(lambda: self.get(target), lambda: None)

    def engine_cpus(self) -> int:
        """The CPUs of the engine's host (its /info NCPU)."""
        try:
            info = json.loads(self.get("/info", timeout=30))
        except (engine.EngineError, ValueError) as exc:
            raise DockerError(f"docker info: {exc}") from None
        return int(info.get("NCPU") or 0) if isinstance(info, dict) else 0

    def containers_cli(self, labels: Sequence[str]) -> tuple[Container, ...]:
        """`containers` through `docker ps` in vigo's format: no run uses it any more (every
        endpoint is asked through the API: `get`); the reference the API parser is held to
        (tests/unit/test_recorded.py, tests/e2e/test_engine.py)."""
        argv = ["docker", "ps", "--all", "--no-trunc"]
        for label in labels:
            argv += ["--filter", f"label={label}"]
        res = self.runner.run((*argv, "--format", _PS_FORMAT), timeout=60, mask_output=False)
        if not res.ok:
            raise DockerError(f"cannot list containers: {res.error(3)}")
        out = []
        for line in res.stdout.splitlines():
            if line.strip():
                row = json.loads(line)
                out.append(Container(**{k: str(v or "") for k, v in row.items()}))
        return tuple(out)

    def inspect(self, ids: Sequence[str]) -> list[dict[str, object]]:
        """The engine's JSON of each container (the gone ones left out): one GET per id on the
        engine's unix socket (the health gate asks every poll: no docker CLI process each
        time), or `docker inspect` when DOCKER_HOST or a docker context points elsewhere."""
        if not ids:
            return []
        if self.socket():
            if self.runner.verbose and self.runner.log:
                self.runner.log(f"$ GET unix://{self._socket}/containers/<id>/json x{len(ids)}")
            try:
                return engine.Engine(self._socket).inspect(list(ids))
            except engine.EngineError as exc:
                raise DockerError(f"docker inspect: {exc}") from None
        res = self.runner.run(("docker", "inspect", "--type", "container", *ids), timeout=60,
                              mask_output=False)
        if not res.ok and not res.stdout.strip().startswith("["):
            raise DockerError(f"docker inspect: {res.error(2)}")
        return json.loads(res.stdout or "[]")

    def logs(self, container: str, lines: int = 10) -> str:
        """The last lines a container printed (masked like every output)."""
        res = self.runner.run(("docker", "logs", "--tail", str(lines), container), timeout=30)
        return "\n".join((res.stdout + res.stderr).strip().splitlines()[-lines:])

    def exec(self, container: str, *argv: str) -> Result:
        return self.runner.run(("docker", "exec", container, *argv), timeout=30)

    def remove(self, container: str, stop_timeout: int = 10) -> Result:
        res = self.runner.run(("docker", "stop", "--time", str(stop_timeout), container),
                              timeout=stop_timeout + 30)
        if not res.ok:
            return res
        return self.runner.run(("docker", "rm", container), timeout=60)

    def local_images(self) -> set[str]:
        """Every image reference the engine holds: repo:tag and repo@digest. One request to the
        engine's unix socket (a deploy's image check costs no docker CLI process), or `docker
        images` when DOCKER_HOST or a docker context points elsewhere."""
        if self.socket():
            if self.runner.verbose and self.runner.log:
                self.runner.log(f"$ GET unix://{self._socket}{engine.IMAGES}")
            try:
                return engine.Engine(self._socket).images()
            except engine.EngineError as exc:
                raise DockerError(f"docker images: {exc}") from None
        res = self.runner.run(("docker", "images", "--digests", "--format",
                               "{{.Repository}}:{{.Tag}} {{.Repository}}@{{.Digest}}"),
                              timeout=60, mask_output=False)
        if not res.ok:
            raise DockerError(f"docker images: {res.error(2)}")
        return {ref for line in res.stdout.splitlines() for ref in line.split()
                if not ref.endswith((":<none>", "@<none>"))}

    def pull(self, image: str, docker_config: Path | None = None) -> Result:
        return self.runner.run(("docker", "pull", "--quiet", image),
                               env=_pull_env(docker_config), timeout=self.timeout)

    def remove_image(self, image: str) -> Result:
        """Remove an image unless a container uses it (docker refuses then)."""
        return self.runner.run(("docker", "image", "rm", image), timeout=120)

    def engine_ok(self) -> str:
        res = self.runner.run(("docker", "version", "--format", "{{.Server.Version}}"),
                              timeout=30)
        if not res.ok:
            raise DockerError(f"the Docker engine does not answer: {res.error(2)}")
        return res.stdout.strip()
