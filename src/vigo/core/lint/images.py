"""Family images: every image is pinned to a sha-<commit> tag or a digest."""

from collections.abc import Iterator

from vigo.core.lint.base import ERROR, WARNING, ComposeFile, Finding, describe, finding, stack_rule
from vigo.core.lint.doc import each_service, key_line, resolve, var_names
from vigo.core.model import DIGEST, SHA_TAG

IDS = describe({
    "image-pinned": "images are pinned to a sha-<hex> tag or an @sha256 digest",
})


def _classify_image(ref: str) -> tuple[str, str]:
    """("pinned" | "tag" | "floating", why) for an image reference."""
    if "@" in ref:
        if DIGEST.match(ref.rsplit("@", 1)[1]):
            return "pinned", "pinned by digest"
        return "floating", "has a malformed digest (expected @sha256:<64 hex>)"
    last = ref.rsplit("/", 1)[-1]
    tag = last.rsplit(":", 1)[1] if ":" in last else None
    if tag is None:
        return "floating", "has no tag (Docker pulls 'latest')"
    if tag == "latest":
        return "floating", "uses the moving tag 'latest'"
    if tag.startswith("branch-"):
        return "floating", f"uses the moving branch tag '{tag}'"
    if SHA_TAG.match(tag):
        return "pinned", "pinned by sha tag"
    return "tag", f"uses the tag '{tag}', which is not an immutable sha-<commit> tag or digest"


@stack_rule
def _image_pinned(cf: ComposeFile) -> Iterator[Finding]:
    if cf.stack in cf.policy.allow_unpinned:
        return
    fix = (
        "Pin the image to `:sha-<commit>` or `@sha256:<digest>`, "
        f"or add '{cf.stack}' to the allow_unpinned setting."
    )
    for name, svc, _ in each_service(cf.doc):
        image = svc.get("image")
        if not isinstance(image, str) or not image:
            continue
        line = key_line(svc, "image")
        resolved = resolve(image, cf.env_keys)
        if resolved is None:
            names = ", ".join(f"${{{v}}}" for v in var_names(image))
            what = (
                f"image '{image}' depends on {names}, whose value cannot be known offline; "
                "cannot check that it is pinned"
            )
            fix_var = "Write the image literally with a sha-<commit> tag or a digest."
            yield finding(cf, "image-pinned", line, name, what, fix_var, WARNING)
            continue
        level, why = _classify_image(resolved)
        shown = f"image '{image}'" + ("" if resolved == image else f" (= '{resolved}')")
        if level == "floating":
            severity = WARNING if cf.is_proxy else ERROR
            yield finding(cf, "image-pinned", line, name, f"{shown} {why}", fix, severity)
        elif level == "tag" and not cf.is_proxy:
            yield finding(cf, "image-pinned", line, name, f"{shown} {why}", fix, WARNING)
