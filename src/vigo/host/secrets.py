"""The secrets of a run: the age key checks, the env files decrypted to the secrets tmpfs (only
when their ciphertext changed or the tmpfs lost them), and the registry credentials of the
pulls (docs/private-images.md). Every decrypted value goes to the masker first."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vigo.adapters import fs
from vigo.adapters.run import CommandTimeout, Masker
from vigo.adapters.sops import DecryptError, Sops, credential_problem, key_problem
from vigo.config import Settings
from vigo.core import dotenv, reasons, render
from vigo.core.model import DesiredState, Paths, Report
from vigo.core.records import record
from vigo.host import state

if TYPE_CHECKING:  # imported where a stack may change, never by an idle run
    from vigo.core import registries

# What the docker CLI reads from its config folder besides config.json (Secrets.pulls).
CLI_DIRS = ("contexts", "cli-plugins")


def _host_config_dir() -> Path:
    """Root's docker CLI folder: $DOCKER_CONFIG, else ~/.docker."""
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) if base else Path.home() / ".docker"


@record
class Secrets:
    settings: Settings
    sops: Sops
    masker: Masker
    emit: Callable[[str], None]
    warn: Callable[[Report, str], None]

    def key_refused(self, report: Report) -> bool:
        """Every run, before anything is touched: one stat of the age key (docs/security.md)."""
        why = key_problem(self.settings.age_key_file) or credential_problem(self.settings)
        if why:
            report.fail(reasons.SETTINGS_INVALID, why)
            self.emit(f"settings: {why}; nothing changed")
        return bool(why)

    def decrypt(self, desired: DesiredState, candidates: list[str], st: state.RunRecord,
                paths: Paths, *, persist: bool) -> dict[str, str]:
        """Decrypt the env files the candidate stacks use (when their ciphertext changed or
        the tmpfs lost them). Returns failures per stack."""
        s = self.settings
        env_dir = fs.private_dir(paths.secrets / "env", root=fs.private_dir(paths.secrets))
        known: dict[str, str] = st.env if persist else {}
        wanted = {rel for name in candidates for rel in desired.stack(name).env_files}  # type: ignore[union-attr]
        failed: dict[str, str] = {}
        for rel in sorted(wanted):
            src = desired.env_files[rel]
            dst = paths.secrets / rel
            digest = render.digest(src)
            if known.get(rel) == digest and dst.is_file():
                self.masker.add(v for _, v in dotenv.parse_written(dst.read_text()))
                continue
            try:
                pairs = dotenv.parse_sops(self.sops.decrypt_dotenv(src, s.age_key_file))
            except (DecryptError, dotenv.DotenvError, CommandTimeout) as exc:
                failed[rel] = f"{rel}: {exc}"
                fs.remove(dst, root=paths.secrets)
                known.pop(rel, None)
                continue
            self.masker.add(v for _, v in pairs)
            try:
                fs.write_secret(dst, dotenv.format_for_compose(pairs), root=paths.secrets)
            except OSError as exc:  # a full tmpfs: the stacks that use it fail, not the run
                failed[rel] = f"{rel}: cannot write {dst}: {exc.strerror or exc}"
                fs.remove(dst, root=paths.secrets)
                known.pop(rel, None)
                continue
            known[rel] = digest
        for stale in sorted(env_dir.glob("*.env")):
            rel = f"env/{stale.name}"
            if rel not in desired.env_files:
                fs.remove(stale, root=paths.secrets)
                known.pop(rel, None)
        failures: dict[str, str] = {}
        for name in candidates:
            why = [failed[rel] for rel in desired.stack(name).env_files if rel in failed]  # type: ignore[union-attr]
            if why:
                failures[name] = "; ".join(why)
        return failures

    def pulls(self, report: Report, desired: DesiredState, paths: Paths) -> registries.Pulls:
        """The registry credentials of this run (docs/private-images.md): env/registries.env
        (sops) over root's docker login, merged into a docker config.json on the secrets tmpfs
        (0600). Every form of every credential goes to the masker first."""
        from vigo.core import registries

        folder = paths.secrets / "docker"
        repo: dict[str, registries.Credential] = {}
        problem = ""
        src = desired.env_files.get(registries.FILE)
        if src is not None:
            try:
                pairs = dotenv.parse_sops(self.sops.decrypt_dotenv(src, self.settings.age_key_file))
                self.masker.add(v for k, v in pairs if k.endswith("_PASSWORD"))
                repo = registries.parse(pairs)
            except (DecryptError, dotenv.DotenvError, registries.RegistriesError,
                    CommandTimeout) as exc:
                problem = f"{registries.FILE} cannot be used: {exc}"
                self.warn(report, problem)
            for cred in repo.values():
                self.masker.add(cred.secrets())
        host, where = self._host_docker_config(report)
        self.masker.add(registries.host_secrets(host))
        if not repo and not host:
            fs.remove(folder / "config.json")
            return registries.Pulls(problem=problem)
        try:
            fs.write_secret(folder / "config.json",
                            json.dumps(registries.config(host, repo), indent=1))
        except OSError as exc:
            problem = (f"cannot write {folder / 'config.json'}: {exc.strerror or exc}; pulls "
                       "run without the registry credentials")
            self.warn(report, problem)
            return registries.Pulls(problem=problem)
        self._link_cli_dirs(report, paths.secrets, folder)
        sources = {r: where for r in registries.host_registries(host)}
        sources.update({r: registries.FILE for r in repo})
        return registries.Pulls(folder, sources, everything=bool(host.get("credsStore")),
                                problem=problem)

    def _link_cli_dirs(self, report: Report, root: Path, folder: Path) -> None:
        """The docker CLI reads more than config.json from its folder: the docker contexts
        (`currentContext` names one) and the CLI plugins (Compose's own install guide puts
        `docker-compose` in ~/.docker/cli-plugins). Each one root's folder has is linked
        beside the pulls' config.json, so pointing DOCKER_CONFIG there loses neither."""
        base = _host_config_dir()
        for name in CLI_DIRS:
            target = base / name
            try:
                fs.set_link(folder / name, target if target.is_dir() else None, root=root)
            except OSError as exc:  # a link that cannot be made: that CLI feature is missing
                self.warn(report, f"cannot link {folder / name} to {target}: "
                          f"{exc.strerror or exc}; docker commands with the registry "
                          f"credentials run without root's {name}")

    def _host_docker_config(self, report: Report) -> tuple[dict[str, Any], str]:
        """Root's `docker login` ($DOCKER_CONFIG or ~/.docker): its config.json, {} if none."""
        path = _host_config_dir() / "config.json"
        where = f"root's docker login ({path})"
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            return {}, where
        except (OSError, ValueError) as exc:
            self.warn(report, f"{path}: cannot be read as a docker config ({exc}); pulls run "
                       "without the host's registry logins")
            return {}, where
        return (doc if isinstance(doc, dict) else {}), where
