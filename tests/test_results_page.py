"""docs/results.md and README.md: their accuracy tables are what the committed records give."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from ccfs.report import results_page
from ccfs.report.tables import interval95, lead, lead_table, t975, verdict

ROOT = Path(__file__).resolve().parents[1]


def copy_repo(tmp_path: Path) -> Path:
    """The pages and the records, as committed, in a scratch root."""
    for page in results_page.PAGES:
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / page, tmp_path / page)
    shutil.copytree(ROOT / results_page.RECORDS, tmp_path / results_page.RECORDS)
    return tmp_path


@pytest.mark.parametrize("page", results_page.PAGES, ids=str)
def test_the_committed_page_is_what_the_committed_records_give(page):
    text = (ROOT / page).read_text()
    names = [m["name"] for m in results_page.BLOCK.finditer(text)]
    assert names, f"{page} has no generated block"
    assert results_page.render(text, ROOT) == text, (
        f"{page} differs from docs/records/: run python -m ccfs.report.results_page")


def test_every_block_is_on_a_page():
    found = {m["name"] for page in results_page.PAGES for m in results_page.BLOCK.finditer((ROOT / page).read_text())}
    assert found == set(results_page.BLOCKS)


def test_the_pages_stay_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150
    assert len((ROOT / "docs/results.md").read_text().splitlines()) <= 200


def test_check_passes_on_the_committed_pages(tmp_path):
    assert results_page.main(["--check", "--root", str(copy_repo(tmp_path))]) == 0


def test_check_fails_when_a_generated_figure_is_edited_and_the_rewrite_restores_it(tmp_path, capsys):
    root = copy_repo(tmp_path)
    page = root / "docs/results.md"
    committed = page.read_text()
    edited = committed.replace("89.03 ± 0.40", "89.30 ± 0.40", 1)
    assert edited != committed
    page.write_text(edited)
    assert results_page.main(["--check", "--root", str(root)]) == 1
    assert "docs/results.md: ipc50" in capsys.readouterr().err
    assert page.read_text() == edited  # --check changes nothing
    assert results_page.main(["--root", str(root)]) == 0
    assert page.read_text() == committed
    assert results_page.main(["--check", "--root", str(root)]) == 0


def test_check_fails_when_a_record_changes(tmp_path):
    root = copy_repo(tmp_path)
    path = root / results_page.RECORDS / "fmnist_headline.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["final_acc"] += 1.0
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert results_page.main(["--check", "--root", str(root)]) == 1


def test_the_readme_shows_a_share_of_the_data_once_ccfs_and_random_have_every_seed(tmp_path):
    root = copy_repo(tmp_path)
    path = root / results_page.RECORDS / "fmnist_headline.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert results_page.readme(root).count("| 1 % (IPC 55) |") == 1
    rows = [r for r in rows if not (r["ipc"] == 55 and r["method"] == "random" and r["seed"] == 4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    block = results_page.readme(root)
    assert "| 1 % (IPC 55) |" not in block  # four of the preset's five seeds: not landed
    assert "Still training (the sweep lands in parts): 1 % (IPC 55)" in block


def test_prose_outside_the_blocks_is_kept_and_an_unknown_block_is_refused():
    text = "intro\n<!-- generated: nope -->\nold\n<!-- end generated -->\nend\n"
    with pytest.raises(ValueError, match="unknown generated block 'nope'"):
        results_page.render(text, ROOT)
    text = "intro `<!-- generated: ipc50 -->` in prose\n<!-- generated: ipc50 -->\nold\n<!-- end generated -->\nend\n"
    out = results_page.render(text, ROOT)
    assert out.startswith("intro `<!-- generated: ipc50 -->` in prose\n") and out.endswith("<!-- end generated -->\nend\n")
    assert "old" not in out and "89.03 ± 0.40" in out


def test_t_quantiles_and_the_interval():
    assert t975(1) == 12.706 and t975(2) == 4.303 and t975(14) == 2.145
    assert t975(35) == t975(30) and t975(500) == 1.960  # between entries the wider one; beyond 120 the normal
    with pytest.raises(ValueError):
        t975(0)
    assert interval95(0.59, 0.72, 3) == pytest.approx(4.303 * 0.72 / 3 ** 0.5)
    assert interval95(1.0, 0.0, 1) == float("inf")


def test_a_lead_only_where_the_interval_excludes_zero():
    # IPC 50, CCFS minus random: +0.30, +1.41, +0.07 over seeds 0, 1, 2 (mean +0.59, sd 0.72)
    assert lead(0.59, 0.72, 3) == "+0.59 ± 1.79, not resolved with 3 seeds"
    assert verdict(1.12, 0.44, 3) == "ahead" and verdict(-6.5, 1.8, 3) == "behind"
    assert verdict(0.1, 0.1, 3) == "not resolved with 3 seeds" and verdict(5.0, float("inf"), 1) == "not resolved with 1 seed"


def _rec(method, seed, acc, ipc=50, **kw):
    return {"method": method, "model": "m", "ipc": ipc, "alpha": 0.0, "seed": seed, "final_acc": acc, **kw}


def test_lead_table_pairs_by_seed():
    recs = [_rec("ccfs", 0, 90.0), _rec("ccfs", 1, 91.0), _rec("ccfs", 2, 92.0),
            _rec("random", 0, 89.0), _rec("random", 1, 90.1), _rec("random", 2, 90.9),
            _rec("random", 3, 10.0)]  # a seed the reference lacks is not paired
    table = lead_table(recs, {50: 0.9})
    assert "| random | m | +1.00 ± 0.25, ahead |" in table


def test_records_are_read_as_plain_json_lines(tmp_path):
    (tmp_path / results_page.RECORDS).mkdir(parents=True)
    path = tmp_path / results_page.RECORDS / "x.jsonl"
    path.write_text(json.dumps(_rec("ccfs", 0, 90.0)) + "\n" + json.dumps(_rec("ccfs", 1, 91.0, model="n"))[:-1] + "\n")
    assert results_page.read(tmp_path, "x") == [_rec("ccfs", 0, 90.0)]  # a line cut by an interruption is skipped
    with pytest.raises(FileNotFoundError):
        results_page.read(tmp_path, "missing")


def test_neither_the_package_nor_the_suite_imports_research():
    pattern = re.compile(r"^\s*(from|import)\s+research\b", re.M)
    offenders = [str(p.relative_to(ROOT)) for folder in ("ccfs", "tests") for p in (ROOT / folder).rglob("*.py")
                 if pattern.search(p.read_text())]
    assert offenders == []


def test_the_rewrite_draws_the_figures_from_the_records_and_the_pages_show_them(tmp_path):
    root = copy_repo(tmp_path)
    assert results_page.main(["--root", str(root)]) == 0
    for path in results_page.FIGURES:
        assert (root / path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (ROOT / path).is_file(), f"{path} is not committed: run python -m ccfs.report.results_page"
        assert f"]({path.relative_to('docs')})" in (ROOT / "docs/results.md").read_text()
