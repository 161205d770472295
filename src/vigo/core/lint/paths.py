"""Family paths: relative paths stay inside the tree, no remote include, no host path, no build,
and a stack's env files and included files are its own."""

import posixpath
from collections.abc import Iterator

from vigo.core.lint.base import WARNING, ComposeFile, Finding, describe, finding, stack_rule
from vigo.core.lint.doc import (
    DOCKER_SOCKS,
    REMOTE,
    bind_mounts,
    each_service,
    escapes,
    key_line,
    path_fields,
    resolve,
    under,
)
from vigo.core.model import PROXY

IDS = describe({
    "path-escape": "relative paths stay inside the tree",
    "host-path": "no absolute host path outside the allowlist",
    "remote-include": "no remote include or extends (git, oci, http)",
    "build": "no build: images come from a registry",
    "env-file": "a stack's env files are env/global.env, env/<stack>.env or files in its own "
    "folder; include/extends files are in its own folder",
})


@stack_rule
def _paths(cf: ComposeFile) -> Iterator[Finding]:
    for service, what, raw, line, _follow in path_fields(cf.doc):
        if what.endswith(("env_file", "label_file")) and isinstance(raw, str) and "$" in raw:
            continue  # a variable file name: rule env-file (_env_file_scope) refuses it
        yield from _check_path(cf, service, what, raw, line)
    for name, svc, _ in each_service(cf.doc):
        if "build" in svc and not cf.resolved:
            what = "`build:` builds the image on the host"
            fix = "Build and push the image in the app repo's CI and reference it with `image:`."
            yield finding(cf, "build", key_line(svc, "build"), name, what, fix)
        for raw, resolved, _ro, mline in bind_mounts(cf, svc):
            if resolved is not None and posixpath.normpath(resolved) in DOCKER_SOCKS:
                continue  # the Docker socket is rule docker-sock's business
            if cf.resolved and (resolved is None or resolved.startswith(("/", "~"))):
                continue  # policy.judge reads the source from the resolved model
            yield from _check_path(cf, name, "bind mount source", raw, mline)


def _check_path(
    cf: ComposeFile, service: str | None, what: str, raw: object, line: int | None
) -> Iterator[Finding]:
    if not isinstance(raw, str) or not raw:
        return
    value = resolve(raw, cf.env_keys)
    inside = "Keep the file inside the infra repo and refer to it by a relative path."
    if value is None:
        problem = "depends on variables unknown offline; cannot check it stays inside the repo"
        fix = "Write the path literally, relative to the compose file."
        yield finding(cf, "path-escape", line, service, f"{what} '{raw}' {problem}", fix, WARNING)
    elif REMOTE.match(value):
        problem = "is fetched from a remote (git, OCI or HTTP) at deploy time"
        yield finding(cf, "remote-include", line, service, f"{what} '{raw}' {problem}", inside)
    elif value.startswith("~") or (
        value.startswith("/")
        and not any(under(value, prefix) for prefix in cf.policy.allow_host_paths)
    ):
        problem = "is an absolute host path outside the allowed prefixes"
        fix = (
            "Use a path relative to the compose file or a named volume, "
            "or add the prefix to the allow_host_paths setting."
        )
        yield finding(cf, "host-path", line, service, f"{what} '{raw}' {problem}", fix)
    elif not value.startswith("/") and escapes(posixpath.join(cf.folder, value)):
        problem = "resolves outside the repo tree"
        yield finding(cf, "path-escape", line, service, f"{what} '{raw}' {problem}", inside)


@stack_rule
def _env_file_scope(cf: ComposeFile) -> Iterator[Finding]:
    """`env_file: ../../env/${X:-db}.env` or `../../env/other.env` hands another stack's secrets
    to this one, without registering them for masking or redeploys; an `include:`/`extends:`
    of another stack's file pulls in its env files and changes it without redeploying this one.
    A stack reads env/global.env, env/<stack>.env and files of its own folder only."""
    own = {"env/global.env", f"env/{cf.stack}.env"}
    folder = PROXY if cf.is_proxy else f"stacks/{cf.stack}"
    for service, what, raw, line, follow in path_fields(cf.doc):
        if not isinstance(raw, str) or not raw or not (
                follow or what in ("env_file", "label_file", "include env_file")):
            continue
        if "$" in raw:
            problem = (f"{what} '{raw}' is chosen by a variable: vigo cannot know which file it "
                       "reads (another stack's secrets?)")
            fix = (f"Write the path literally: ../../env/{cf.stack}.env, ../../env/global.env "
                   "or a file in the stack's folder.")
            yield finding(cf, "env-file", line, service, problem, fix)
            continue
        if raw.startswith(("/", "~")) or REMOTE.match(raw):
            continue  # rules host-path and remote-include
        target = posixpath.normpath(posixpath.join(cf.folder, raw))
        if escapes(target) or target.startswith(folder + "/"):
            continue  # rule path-escape; or the stack's own file
        if follow and not target.startswith(("stacks/", "proxy/", "env/")):
            continue  # a shared fragment outside every stack (common/db.yml)
        if follow:
            problem = (f"{what} '{raw}' is {target}, a file of another stack: the env files and "
                       "paths it names are that stack's, and its changes would not redeploy "
                       "this one")
            fix = f"Copy what is needed into {folder}/ (or into a shared folder such as common/)."
        elif target in own and what != "label_file":
            continue
        elif target in own:
            problem = (f"{what} '{raw}' is {target}: labels are no place for the stack's "
                       "secrets (every `docker inspect` shows them)")
            fix = f"Keep label files in {folder}/, in plain text."
        elif target.startswith("env/"):
            problem = (f"{what} '{raw}' is {target}, another stack's env file: a stack may use "
                       f"env/global.env and env/{cf.stack}.env only")
            fix = (f"Move the variables it needs into env/{cf.stack}.env (or env/global.env "
                   "for every stack).")
        else:
            problem = (f"{what} '{raw}' is {target}, outside the stack's folder: a stack may use "
                       f"env/global.env, env/{cf.stack}.env and files of {folder}/ only")
            fix = f"Move the file into {folder}/ or its variables into env/{cf.stack}.env."
        yield finding(cf, "env-file", line, service, problem, fix)
