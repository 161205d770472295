"""Table-driven tests of the pure part of promote (vigo.workstation.promote): finding a
service's image on
its line, replacing only that text, tags and image references, history rows. No git, no files."""

import pytest

from vigo.workstation.promote import (
    Edit,
    PromoteError,
    Row,
    VariableImage,
    Version,
    check_tag,
    format_history,
    image_spots,
    images_of,
    parse_target,
    previous,
    replace_image,
    select,
    split_image,
    tag_changes,
    tag_of,
    with_tag,
)

NEW = "sha-5d6e7f8"
DIGEST = "sha256:" + "ab" * 32


def promote(text: str, service: str | None, tag: str) -> str:
    spot = select(image_spots(text), service, "app", "compose.yaml")
    return replace_image(text, spot, with_tag(spot.image, tag))


# (name, compose text, service, tag, expected text): everything but the tag byte for byte.
EDITS = [
    ("plain, comments kept",
     "# app\nservices:\n  web:\n    # pinned by CI\n"
     "    image: ghcr.io/o/web:sha-1a2b3c4  # promote me\n    ports: ['80']\n",
     None, NEW,
     "# app\nservices:\n  web:\n    # pinned by CI\n"
     "    image: ghcr.io/o/web:sha-5d6e7f8  # promote me\n    ports: ['80']\n"),
    ("double quotes kept",
     'services:\n  web:\n    image: "ghcr.io/o/web:sha-1a2b3c4"\n', None, NEW,
     'services:\n  web:\n    image: "ghcr.io/o/web:sha-5d6e7f8"\n'),
    ("single quotes kept",
     "services:\n  web:\n    image:   'ghcr.io/o/web:sha-1a2b3c4'   # x\n", None, NEW,
     "services:\n  web:\n    image:   'ghcr.io/o/web:sha-5d6e7f8'   # x\n"),
    ("flow style service",
     "services:\n  web: {image: ghcr.io/o/web:sha-1a2b3c4, ports: [80]}  # flow\n", None, NEW,
     "services:\n  web: {image: ghcr.io/o/web:sha-5d6e7f8, ports: [80]}  # flow\n"),
    ("flow style services",
     "services: {db: {image: pg:sha-aaaaaaa}, web: {image: 'w:sha-1a2b3c4'}}\n", "web", NEW,
     "services: {db: {image: pg:sha-aaaaaaa}, web: {image: 'w:sha-5d6e7f8'}}\n"),
    ("second of several services, the others untouched",
     "services:\n  web:\n    image: ghcr.io/o/web:sha-1a2b3c4\n  worker:\n"
     "    image: ghcr.io/o/web:sha-1a2b3c4\n",
     "worker", NEW,
     "services:\n  web:\n    image: ghcr.io/o/web:sha-1a2b3c4\n  worker:\n"
     "    image: ghcr.io/o/web:sha-5d6e7f8\n"),
    ("the same image in a comment on the line above",
     "services:\n  web:\n    # was ghcr.io/o/web:sha-1a2b3c4\n"
     "    image: ghcr.io/o/web:sha-1a2b3c4\n",
     None, NEW,
     "services:\n  web:\n    # was ghcr.io/o/web:sha-1a2b3c4\n"
     "    image: ghcr.io/o/web:sha-5d6e7f8\n"),
    ("key order kept, image not first",
     "services:\n  web:\n    restart: always\n    image: w:sha-1a2b3c4\n    labels: [a=b]\n",
     None, NEW,
     "services:\n  web:\n    restart: always\n    image: w:sha-5d6e7f8\n    labels: [a=b]\n"),
    ("a tag to a digest",
     "services:\n  web:\n    image: ghcr.io/o/web:sha-1a2b3c4\n", None, DIGEST,
     f"services:\n  web:\n    image: ghcr.io/o/web@{DIGEST}\n"),
    ("a digest to a tag",
     f"services:\n  web:\n    image: ghcr.io/o/web@{DIGEST}\n", None, NEW,
     "services:\n  web:\n    image: ghcr.io/o/web:sha-5d6e7f8\n"),
    ("tag and digest to a tag",
     f"services:\n  web:\n    image: ghcr.io/o/web:v1@{DIGEST}\n", None, NEW,
     "services:\n  web:\n    image: ghcr.io/o/web:sha-5d6e7f8\n"),
    ("registry port kept",
     "services:\n  web:\n    image: localhost:5000/web:sha-1a2b3c4\n", None, NEW,
     "services:\n  web:\n    image: localhost:5000/web:sha-5d6e7f8\n"),
    ("no tag at all",
     "services:\n  web:\n    image: localhost:5000/web\n", None, NEW,
     "services:\n  web:\n    image: localhost:5000/web:sha-5d6e7f8\n"),
    ("CRLF line endings",
     "services:\r\n  web:\r\n    image: w:sha-1a2b3c4 # c\r\n    ports: [80]\r\n", None, NEW,
     "services:\r\n  web:\r\n    image: w:sha-5d6e7f8 # c\r\n    ports: [80]\r\n"),
    ("the value on the next line",
     "services:\n  web:\n    image:\n      w:sha-1a2b3c4\n", None, NEW,
     "services:\n  web:\n    image:\n      w:sha-5d6e7f8\n"),
    ("an anchor no other service uses",
     "services:\n  web:\n    image: &img w:sha-1a2b3c4\n", None, NEW,
     "services:\n  web:\n    image: &img w:sha-5d6e7f8\n"),
    ("one image among services without one",
     "services:\n  data:\n    volumes: [x:/x]\n  web:\n    image: w:sha-1a2b3c4\n", None, NEW,
     "services:\n  data:\n    volumes: [x:/x]\n  web:\n    image: w:sha-5d6e7f8\n"),
    ("no trailing newline, x- extension and top-level keys kept",
     "x-common: &c {restart: always}\nservices:\n  web:\n    <<: *c\n    image: w:sha-1a2b3c4\n"
     "networks: {default: {external: true, name: proxy}}",
     None, NEW,
     "x-common: &c {restart: always}\nservices:\n  web:\n    <<: *c\n    image: w:sha-5d6e7f8\n"
     "networks: {default: {external: true, name: proxy}}"),
]


@pytest.mark.parametrize(("text", "service", "tag", "expected"),
                         [case[1:] for case in EDITS], ids=[case[0] for case in EDITS])
def test_replace_changes_only_the_tag(text, service, tag, expected):
    assert promote(text, service, tag) == expected


# (name, compose text, service, words the error must contain)
REFUSED = [
    ("two services with an image, none named",
     "services:\n  web: {image: 'w:sha-1a2b3c4'}\n  db: {image: 'd:sha-1a2b3c4'}\n", None,
     ["2 services", "web, db", "app/web"]),
    ("unknown service",
     "services:\n  web: {image: 'w:sha-1a2b3c4'}\n  db: {image: 'd:sha-1a2b3c4'}\n", "api",
     ["no service 'api'", "web, db"]),
    ("service without an image", "services:\n  web:\n    build: .\n", "web", ["no image"]),
    ("no service has an image", "services:\n  web:\n    build: .\n", None, ["0 services"]),
    ("image from a merge key",
     "x-c: &c\n  image: w:sha-1a2b3c4\nservices:\n  web:\n    <<: *c\n", "web", ["merge key"]),
    ("an anchor shared with another service",
     "services:\n  web:\n    image: &i w:sha-1a2b3c4\n  worker:\n    image: *i\n", "web",
     ["more than"]),
    ("an alias",
     "services:\n  web:\n    image: &i w:sha-1a2b3c4\n  worker:\n    image: *i\n", "worker",
     ["more than"]),
    ("an escape in a double-quoted scalar",
     'services:\n  web:\n    image: "w:sha\\x2d1a2b3c4"\n', None, ["plain text"]),
    ("a tagged scalar", "services:\n  web:\n    image: !!str w:sha-1a2b3c4\n", None,
     ["not a string"]),
    ("not YAML", "services:\n  web: [\n", None, ["not valid YAML"]),
    ("no services", "volumes: {}\n", None, ["no top-level `services`"]),
]


@pytest.mark.parametrize(("text", "service", "words"), [case[1:] for case in REFUSED],
                         ids=[case[0] for case in REFUSED])
def test_refused(text, service, words):
    with pytest.raises(PromoteError) as exc:
        promote(text, service, NEW)
    assert exc.value.code == 2
    for word in words:
        assert word in str(exc.value)


@pytest.mark.parametrize(("image", "variables"), [
    ("${WEB_IMAGE}", ["WEB_IMAGE"]),
    ("ghcr.io/o/web:${WEB_TAG}", ["WEB_TAG"]),
    ("$REGISTRY/web:${TAG:-sha-1a2b3c4}", ["REGISTRY", "TAG"]),
])
def test_variable_images_are_refused(image, variables):
    text = f"services:\n  web:\n    image: {image}\n"
    with pytest.raises(VariableImage) as exc:
        promote(text, None, NEW)
    assert exc.value.variables == variables


@pytest.mark.parametrize(("tag", "unpinned_ok", "error"), [
    ("sha-1a2b3c4", False, None),
    ("sha-" + "0123456789abcdef0123456789abcdef01234567", False, None),
    ("sha-1A2B3C4", False, None),
    (DIGEST, False, None),
    ("sha-1a2b3c", False, "not pinned"),  # 6 hex
    ("sha-" + "a" * 41, False, "not pinned"),
    ("sha-1a2b3cg", False, "not pinned"),
    ("latest", False, "not pinned"),
    ("branch-main", False, "not pinned"),
    ("v1.2.3", False, "not pinned"),
    ("latest", True, None),
    ("v1.2.3", True, None),
    ("sha256:abc", True, "not a valid digest"),
    ("sha256:" + "AB" * 32, False, "not a valid digest"),
    ("", True, "not a valid image tag"),
    ("a b", True, "not a valid image tag"),
    ("-x", True, "not a valid image tag"),
    ("x" * 129, True, "not a valid image tag"),
])
def test_check_tag(tag, unpinned_ok, error):
    if error is None:
        check_tag(tag, unpinned_ok)
    else:
        with pytest.raises(PromoteError, match=error):
            check_tag(tag, unpinned_ok)


@pytest.mark.parametrize(("ref", "parts", "tag"), [
    ("nginx", ("nginx", "", ""), "(no tag)"),
    ("nginx:1.27", ("nginx", "1.27", ""), "1.27"),
    ("ghcr.io/o/web:sha-1a2b3c4", ("ghcr.io/o/web", "sha-1a2b3c4", ""), "sha-1a2b3c4"),
    ("localhost:5000/web", ("localhost:5000/web", "", ""), "(no tag)"),
    ("localhost:5000/web:sha-1a2b3c4", ("localhost:5000/web", "sha-1a2b3c4", ""), "sha-1a2b3c4"),
    (f"web@{DIGEST}", ("web", "", DIGEST), DIGEST),
    (f"web:v1@{DIGEST}", ("web", "v1", DIGEST), f"v1@{DIGEST}"),
])
def test_image_references(ref, parts, tag):
    assert split_image(ref) == parts
    assert tag_of(ref) == tag
    assert with_tag(ref, NEW) == f"{parts[0]}:{NEW}"
    assert with_tag(ref, DIGEST) == f"{parts[0]}@{DIGEST}"


@pytest.mark.parametrize(("spec", "parsed"), [
    ("whoami", ("whoami", None)),
    ("whoami/web", ("whoami", "web")),
    ("proxy/traefik", ("proxy", "traefik")),
    ("my_app-2", ("my_app-2", None)),
    ("Whoami", None), ("../etc", None), ("a/b/c", None), ("a/", None), ("", None),
])
def test_parse_target(spec, parsed):
    if parsed is None:
        with pytest.raises(PromoteError):
            parse_target(spec)
    else:
        assert parse_target(spec) == parsed


def test_edit_line_and_message():
    edit = Edit("whoami", "web", "stacks/whoami/docker-compose.yml",
                "ghcr.io/o/whoami:sha-1a2b3c4", "ghcr.io/o/whoami:sha-5d6e7f8")
    assert edit.line() == ("whoami/web: sha-1a2b3c4 -> sha-5d6e7f8 "
                           "(stacks/whoami/docker-compose.yml)")
    subject, blank, *body = edit.message().splitlines()
    assert subject == "promote whoami/web: sha-1a2b3c4 -> sha-5d6e7f8"
    assert blank == ""
    assert "  from ghcr.io/o/whoami:sha-1a2b3c4" in body
    assert "  to   ghcr.io/o/whoami:sha-5d6e7f8" in body
    assert edit.message("rollback").startswith("rollback whoami/web: ")
    same = Edit("whoami", "web", "f.yml", "w:sha-1a2b3c4", "w:sha-1a2b3c4")
    assert not same.changed and same.line() == "whoami/web: already at sha-1a2b3c4 (f.yml)"


def test_images_of():
    assert images_of("services:\n  a: {image: x}\n  b: {build: .}\n  c: {image: 3}\n") == {
        "a": "x"}
    assert images_of("services: [\n") == {}
    assert images_of("- a\n") == {}
    assert images_of(None) == {}


def version(n: int, images: dict[str, str], subject: str = "") -> Version:
    return Version(f"{n:040x}", f"{n:07x}", "Ann", f"2024-01-{n:02d}", subject or f"c{n}", images)


# Versions newest first, as git log gives them.
VERSIONS = [
    version(6, {"web": "w:sha-bbbbbbb", "db": "d:sha-2222222"}),
    version(5, {"web": "w:sha-aaaaaaa", "db": "d:sha-2222222"}),  # rollback of web
    version(4, {"web": "w:sha-bbbbbbb", "db": "d:sha-2222222"}),  # db only
    version(3, {"web": "w:sha-bbbbbbb", "db": "d:sha-1111111"}, "labels only"),
    version(2, {"web": "w:sha-bbbbbbb", "db": "d:sha-1111111"}),
    version(1, {"web": "w:sha-aaaaaaa", "db": "d:sha-1111111"}),
]


def test_tag_changes_one_row_per_change_newest_first():
    web = tag_changes(VERSIONS, "web")
    assert [(r.tag, r.short) for r in web] == [
        ("sha-bbbbbbb", "0000006"), ("sha-aaaaaaa", "0000005"), ("sha-bbbbbbb", "0000002"),
        ("sha-aaaaaaa", "0000001")]
    both = tag_changes(VERSIONS)
    assert [(r.service, r.short) for r in both] == [
        ("web", "0000006"), ("web", "0000005"), ("db", "0000004"), ("web", "0000002"),
        ("web", "0000001"), ("db", "0000001")]
    assert tag_changes([], "web") == []


@pytest.mark.parametrize(("current", "expected"), [
    ("w:sha-bbbbbbb", "w:sha-aaaaaaa"),  # from the newest row: the one before it
    ("w:sha-aaaaaaa", "w:sha-bbbbbbb"),  # uncommitted? no: the newest row with it, then older
    ("w:sha-ccccccc", "w:sha-bbbbbbb"),  # never committed: the newest committed one
])
def test_previous(current, expected):
    row = previous(tag_changes(VERSIONS, "web"), current)
    assert row is not None and row.image == expected


def test_previous_nothing_to_roll_back_to():
    rows = tag_changes([version(1, {"web": "w:sha-aaaaaaa"})], "web")
    assert previous(rows, "w:sha-aaaaaaa") is None
    assert previous([], "w:sha-aaaaaaa") is None


def test_format_history_fits_80_columns():
    long = Row("a-very-long-service-name", "sha-" + "f" * 40, "w:x", "c" * 40, "c" * 12,
               "Someone With A Very Long Name", "2024-01-01", "s" * 200)
    digest = Row("db", DIGEST, f"d@{DIGEST}", "d" * 40, "ddddddd", "Ann", "2024-01-02",
                 "promote app/db: sha-1a2b3c4 -> " + DIGEST)
    for services in (True, False):
        lines = format_history([long, digest], services=services)
        assert len(lines) == 3
        assert all(len(line) <= 80 for line in lines), lines
        assert lines[0].split()[:2] == (["SERVICE", "TAG"] if services else ["TAG", "COMMIT"])
    short = format_history(tag_changes(VERSIONS, "web"))
    assert short[1].split()[:4] == ["sha-bbbbbbb", "0000006", "2024-01-06", "Ann"]
    assert "sha256:abababababab…" in format_history([digest])[1]
