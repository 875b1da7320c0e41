"""The documentation stays true: its relative links resolve, the README stays a front page, and every registered
task has what docs/adding-a-task.md's checklist names (one check function per numbered item). No servers, no
training: files, the registry and imports only."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

import tasks
from tasks.kinds import KINDS, kind_of

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CHECKLIST = DOCS / "adding-a-task.md"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
README_MAX_LINES = 200

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.M)
ITEM = re.compile(r"^(\d+)\. \*\*(.+?)\*\*", re.M)
EXTERNAL = ("http://", "https://", "mailto:")


# --- markdown helpers --------------------------------------------------------------------------------------


def prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code spans (links there are examples, not links)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def headings(text: str) -> list[tuple[int, str]]:
    """(level, text) of each ATX heading outside code blocks."""
    return [(len(m.group(1)), m.group(2)) for m in HEADING.finditer(FENCE.sub("", text))]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text lowercased, punctuation but '-' and '_' dropped, spaces to
    '-'. Inline code keeps its text; a link keeps its label."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor the headings of ``text`` define; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    for _, heading in headings(text):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(page: Path) -> list[str]:
    """The relative links of ``page`` whose file, or whose heading anchor in a markdown file, does not exist."""
    bad = []
    for target in LINK.findall(prose(page.read_text())):
        if not target or target.startswith(EXTERNAL):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target}: no file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
            bad.append(f"{target}: no heading #{anchor} in {dest.name}")
    return bad


def section(text: str, title: str) -> str:
    """The body of the first heading called ``title``, up to the next heading of its level or above."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = HEADING.match(line)
        if m and m.group(2) == title:
            level = len(m.group(1))
            body = []
            for rest in lines[i + 1 :]:
                n = HEADING.match(rest)
                if n and len(n.group(1)) <= level:
                    break
                body.append(rest)
            return "\n".join(body)
    raise AssertionError(f"no heading {title!r}")


def sections_naming(text: str, task: str) -> list[str]:
    """Every section of ``text`` whose heading names ``task`` in backticks (its body up to the next heading of
    its level or above)."""
    return [section(text, title) for _, title in headings(text) if f"`{task}`" in title]


# --- links and the front page ------------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_relative_links_point_at_existing_files_and_headings(page):
    assert not broken_links(page)


def test_the_link_checker_finds_broken_links(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other page\n\n## Tumour (`tumor`): detect, in MRI\n")
    page.write_text(
        "# Here\n\n[ok](other.md#tumour-tumor-detect-in-mri) [self](#here) [web](https://example.com/x)\n"
        "[gone](missing.md) [bad anchor](other.md#nowhere) [bad self](#there)\n"
        "```\n[in code](also-missing.md)\n```\n`[inline](nor-this.md)`\n"
    )
    assert [b.split(":")[0] for b in broken_links(page)] == ["missing.md", "other.md#nowhere", "#there"]


def test_slugs_follow_github():
    assert slug("Malaria (`malaria`): classify blood-smear cells") == "malaria-malaria-classify-blood-smear-cells"
    assert slug("Reliability: bad input, faults, time limits, load") == "reliability-bad-input-faults-time-limits-load"
    assert slug("snake_case and [a link](x.md)") == "snake_case-and-a-link"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}


def test_readme_is_a_front_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"


# --- the adding-a-task checklist, one check per item --------------------------------------------------------


def defines(dotted: str) -> bool:
    """Whether ``package.module:attribute`` names a module file that defines ``attribute`` at its top level
    (read, not imported: no framework loads)."""
    module, _, attr = dotted.partition(":")
    found = importlib.util.find_spec(module)
    if found is None or found.origin is None:
        return False
    tree = ast.parse(Path(found.origin).read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.AnnAssign, ast.ImportFrom)):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
            if isinstance(node, ast.ImportFrom):
                names.update(a.asname or a.name for a in node.names)
    return attr in names


def check_spec(task: str) -> None:
    """Item 1, Spec."""
    spec = tasks.TASKS[task]
    assert spec.name == task and tasks.NAME.fullmatch(task), f"task name {task!r}: lowercase letters and digits"
    kind_of(spec)  # raises unless the spec is of its kind's spec class
    assert importlib.util.find_spec(f"tasks.{task}"), f"no tasks/{task}.py"
    module = importlib.import_module(f"tasks.{task}")
    assert any(value is spec for value in vars(module).values()), f"tasks/{task}.py does not define the spec"


def check_kind(task: str) -> None:
    """Item 2, Kind."""
    kind = kind_of(tasks.TASKS[task])
    assert KINDS[kind.name] is kind
    names = [kind.spec, kind.trainer, kind.store_writer, kind.sample.bodies, kind.benchmark_run]
    names += [*kind.exporters.values(), *([kind.panel] if kind.panel else [])]
    missing = [name for name in names if not defines(name)]
    missing += [m for m in (kind.service, kind.benchmark) if importlib.util.find_spec(m) is None]
    assert not missing, f"kind {kind.name}: nothing at {', '.join(missing)}"


def check_synthetic_data(task: str) -> None:
    """Item 3, Synthetic data."""
    spec = tasks.TASKS[task]
    assert spec.synthetic and defines(spec.synthetic), f"{task}: no generator at {spec.synthetic!r}"


def check_export(task: str) -> None:
    """Item 4, Export check."""
    spec, kind = tasks.TASKS[task], kind_of(tasks.TASKS[task])
    assert spec.export_format == kind.default_format and spec.export_format in kind.exporters
    tolerance = getattr(spec, "export_atol", None) or getattr(spec, "export_max_cer_diff", None)
    assert tolerance is not None and tolerance > 0, f"{task}: no parity tolerance"


def check_service(task: str) -> None:
    """Item 5, Service."""
    import services

    kind = kind_of(tasks.TASKS[task])
    assert services.target(task) == f"{kind.service}:{task.capitalize()}"
    assert services.load(task).name == task


def check_kubernetes(task: str) -> None:
    """Item 6, Kubernetes."""
    import services

    manifest = ROOT / "k8s" / "base" / "tasks" / f"{task}.yaml"
    assert manifest.is_file(), f"run `python -m k8s.generate`: no {manifest.relative_to(ROOT)}"
    assert services.target(task) in manifest.read_text()


def check_demo_model_test(task: str) -> None:
    """Item 7, Demo model test."""
    text = (ROOT / "tests" / "test_demo_slow.py").read_text()
    assert re.search(rf"[\"']{task}[\"']", text), f"tests/test_demo_slow.py does not build the {task} demo model"


def check_readme_row(task: str) -> None:
    """Item 8, README row."""
    table = section(README.read_text(), "What it serves")
    rows = [line for line in table.splitlines() if line.startswith(f"| `{task}` |")]
    assert len(rows) == 1, f"README.md: {len(rows)} rows for {task} in 'What it serves'"
    route = f"/v1/{task}/{kind_of(tasks.TASKS[task]).sample.route}"
    assert "curl " in rows[0] and route in rows[0], f"README.md: the {task} row has no curl of {route}"
    assert LINK.search(rows[0]), f"README.md: the {task} row links to no API section"


def check_api_section(task: str) -> None:
    """Item 9, API section."""
    found = sections_naming((DOCS / "api.md").read_text(), task)
    assert found, f"docs/api.md: no heading names `{task}`"
    route = f"/v1/{task}/{kind_of(tasks.TASKS[task]).sample.route}"
    assert any(route in body for body in found), f"docs/api.md: the {task} section never shows {route}"


CHECKS = [
    check_spec,
    check_kind,
    check_synthetic_data,
    check_export,
    check_service,
    check_kubernetes,
    check_demo_model_test,
    check_readme_row,
    check_api_section,
]


def cited(check) -> tuple[int, str]:
    """The (number, title) a check's docstring cites: "Item 3, Synthetic data."."""
    m = re.fullmatch(r"Item (\d+), (.+)\.", check.__doc__.strip())
    assert m, check.__name__
    return int(m.group(1)), m.group(2)


def test_each_checklist_item_has_its_check():
    items = [(int(n), title.rstrip(":")) for n, title in ITEM.findall(CHECKLIST.read_text())]
    assert items == [(i, title) for i, (_, title) in enumerate(items, 1)], "items must be numbered 1, 2, 3, ..."
    assert items == [cited(check) for check in CHECKS]


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
@pytest.mark.parametrize("task", list(tasks.TASKS))
def test_every_task_has_what_the_checklist_names(task, check):
    check(task)


def test_the_checks_fail_for_a_task_that_is_not_documented(monkeypatch):
    from tests.extra_task import TEXTURE

    monkeypatch.setattr(tasks, "TASKS", {**tasks.TASKS, "texture": TEXTURE})
    for check in (check_spec, check_kubernetes, check_demo_model_test, check_readme_row, check_api_section):
        with pytest.raises(AssertionError):
            check("texture")
