"""`adamlab report`: the studies' committed full-size results as one HTML page, a markdown
page and the README's studies table, all generated from summary.json; and a headless
Chromium that opens the page and finds every study section and every figure rendered."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pipelines import cli
from pipelines.studies import STUDIES
from pipelines.studies.engine import site

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--virtual-time-budget=15000"]


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """A studies folder with one tiny saddle run, marked full-size, and nothing else."""
    from test_studies import TINY

    from pipelines import study

    root = tmp_path_factory.mktemp("studies")
    run = root / "runs" / "saddle"
    os.environ["WANDB_MODE"] = "disabled"
    study.main(["saddle", f"hydra.run.dir={run}", *TINY["saddle"]])
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "size": "full"}))
    docs = root / "docs"
    docs.mkdir()
    assert site.collect(root / "runs", docs) == ["saddle"]
    return docs


def test_report_writes_every_study_from_its_summary(studies):
    cli.main(["report", "--studies", str(studies)])
    md = (studies / "README.md").read_text()
    for name in STUDIES:
        assert f"## {name}" in md
    info = json.loads((studies / "saddle" / "summary.json").read_text())
    assert info["claim"] in md and f"**Verdict: {info['verdict']}.**" in md
    for c in info["checks"]:
        assert c["criterion"] in md
    for fig in info["figures"]:
        assert (studies / "saddle" / fig).is_file() and f"saddle/{fig}" in md
    assert info["command"] in md and info["commit"][:12] in md
    table = (studies / "table.md").read_text().splitlines()
    assert len(table) == 2 + len(STUDIES)
    assert "not run at full size" in next(line for line in table if "| valley |" in line)


def test_collect_takes_the_newest_full_size_run(tmp_path, studies):
    runs = tmp_path / "runs"
    for i, size in enumerate(("full", "full", "quick")):
        d = runs / f"r{i}"
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps({"study": "ridge", "size": size,
                                                    "figures": [], "n": i}))
        os.utime(d / "summary.json", (1000 + i, 1000 + i))
    assert site.collect(runs, tmp_path / "docs") == ["ridge"]
    assert json.loads((tmp_path / "docs" / "ridge" / "summary.json").read_text())["n"] == 1


def test_report_refuses_a_missing_folder(tmp_path):
    with pytest.raises(SystemExit, match="is not a folder"):
        site.main(["--studies", str(tmp_path / "nope")])


def open_in_chromium(page: Path, profile: Path) -> str:
    out = subprocess.run([BROWSER, *FLAGS, f"--user-data-dir={profile}", "--dump-dom",
                          page.resolve().as_uri()], capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def check_page_rendered(dom: str, infos: dict) -> None:
    assert 'data-loaded="yes"' in dom, "the page's load handler did not run"
    for name, info in infos.items():
        section = re.search(rf'<section[^>]*id="study-{name}".*?</section>', dom, re.S)
        assert section, f"no section for {name}"
        if info is None:
            continue
        body = section.group(0)
        images = re.findall(r"<img[^>]*>", body)
        assert len(images) == len(info["figures"]) > 0, name
        for img in images:
            assert 'data-rendered="yes"' in img, f"{name}: figure not rendered: {img}"
        assert info["verdict"] in body


needs_browser = pytest.mark.skipif(
    BROWSER is None and not os.environ.get("ADAMLAB_REQUIRE_BROWSER"),
    reason="Debian's chromium is not installed (.ci/run installs it and sets "
           "ADAMLAB_REQUIRE_BROWSER, so CI never skips this)")


@needs_browser
def test_browser_renders_every_section_and_figure(studies, tmp_path):
    assert BROWSER, "chromium is required (ADAMLAB_REQUIRE_BROWSER is set)"
    out = tmp_path / "site"
    site.write(studies, out)  # the page in another folder: figure paths stay relative
    dom = open_in_chromium(out / "index.html", tmp_path / "profile")
    check_page_rendered(dom, site.load(studies))
    # a missing figure is caught, not silently accepted
    fig = next((studies / "saddle").glob("*.png"))
    moved = fig.rename(fig.with_suffix(".bak"))
    try:
        dom = open_in_chromium(out / "index.html", tmp_path / "profile2")
        assert 'data-rendered="no"' in dom and "figure missing" in dom
    finally:
        moved.rename(fig)


def test_committed_report_is_what_adamlab_report_writes():
    """docs/studies/{index.html, README.md, table.md} are generated, never typed: they equal
    what `adamlab report` renders from the committed results."""
    for name, text in site.render().items():
        path = site.DOCS / name
        assert path.is_file(), f"{path} is not committed: run `adamlab report`"
        assert path.read_text() == text, f"{path} is stale: run `adamlab report`"


@needs_browser
def test_browser_renders_the_committed_report(tmp_path):
    assert BROWSER, "chromium is required (ADAMLAB_REQUIRE_BROWSER is set)"
    dom = open_in_chromium(site.DOCS / "index.html", tmp_path / "profile")
    check_page_rendered(dom, site.load(site.DOCS))


def test_readme_block_is_replaced_and_nothing_else():
    table = "| study |\n|---|\n| saddle |\n"
    text = (f"# adamlab\n\nintro\n\n{site.TABLE_START}\nold typed table\n{site.TABLE_END}\n"
            "\n## after\n")
    new = site.readme_with_table(text, table)
    assert new == f"# adamlab\n\nintro\n\n{site.TABLE_START}\n{table}{site.TABLE_END}\n\n## after\n"
    assert site.readme_with_table(new, table) == new  # idempotent
    assert site.readme_with_table("# no markers\n", table) is None
    for bad in (f"{site.TABLE_END}\n{site.TABLE_START}\n",
                f"{site.TABLE_START}\n{site.TABLE_END}\n{site.TABLE_START}\n{site.TABLE_END}\n",
                f"{site.TABLE_START}\nno end\n"):
        with pytest.raises(ValueError, match="expected one"):
            site.readme_with_table(bad, table)


def test_update_readme_writes_the_file(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"x\n{site.TABLE_START}\n{site.TABLE_END}\ny\n")
    assert site.update_readme("| t |\n", readme)
    assert readme.read_text() == f"x\n{site.TABLE_START}\n| t |\n{site.TABLE_END}\ny\n"
    readme.write_text("no block\n")
    assert not site.update_readme("| t |\n", readme)
    assert readme.read_text() == "no block\n"


def test_readme_studies_table_is_the_generated_one():
    """The README's studies table is generated, never typed: the block between its markers
    is docs/studies/table.md as `adamlab report` renders it."""
    text = site.README.read_text()
    assert site.TABLE_START in text and site.TABLE_END in text, (
        f"README.md must hold the studies table between {site.TABLE_START} and "
        f"{site.TABLE_END} lines; `adamlab report` fills it from docs/studies/")
    block = text.split(site.TABLE_START, 1)[1].split(site.TABLE_END, 1)[0]
    assert block == "\n" + site.render()["table.md"], "README.md's studies table is stale: " \
        "run `adamlab report`"
