"""The `ccfs` command in-process: exit codes, one-line errors, help text."""
from __future__ import annotations

import pytest

from ccfs.cli import STAGE_HELP, main


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ccfs: error:"), err
    assert "Traceback" not in err
    return lines[0]


def test_prepare_prints_one_summary_line(fake_fmnist, ccfs_cache, capsys):
    assert main(["prepare", "--dataset", "fashion-mnist", "--root", str(fake_fmnist)]) == 0
    out, err = capsys.readouterr()
    assert out.strip().splitlines() == ["fashion-mnist: 120 train / 40 test, 10 classes, images 1x28x28"]
    assert err == ""
    assert list(ccfs_cache.glob("fashion-mnist-*.pt"))  # it filled the cache
    assert main(["prepare", "--dataset", "fashion-mnist", "--root", str(fake_fmnist)]) == 0  # from the cache
    assert capsys.readouterr().out.count("\n") == 1


def test_prepare_unknown_dataset(tmp_path, capsys):
    assert main(["prepare", "--dataset", "nope", "--root", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert "fashion-mnist" in one_error_line(err) and out == ""


def test_prepare_missing_root(tmp_path, capsys):
    assert main(["prepare", "--dataset", "fashion-mnist", "--root", str(tmp_path / "missing")]) == 2
    assert "does not exist" in one_error_line(capsys.readouterr().err)


def test_prepare_truncated_file(fake_fmnist, capsys):
    path = fake_fmnist / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:40])
    assert main(["prepare", "--dataset", "fashion-mnist", "--root", str(fake_fmnist)]) == 2
    assert "t10k-images" in one_error_line(capsys.readouterr().err)


def test_run_with_unknown_key_fails_before_any_work(fake_fmnist, tmp_path, capsys):
    out_dir = tmp_path / "run"
    code = main(["run", "tiny", f"out={out_dir}", f"data.root={fake_fmnist}", "select.ipcc=3"])
    assert code == 2
    out, err = capsys.readouterr()
    line = one_error_line(err)
    assert "select.ipcc" in line and "select.ipc" in line.split("valid keys")[1]
    assert not (out_dir / "teacher").exists()
    assert not out_dir.exists()  # not even config.yaml: the config is checked first
    assert out == ""


@pytest.mark.parametrize("stage", ["select", "evaluate"])
@pytest.mark.parametrize("methods", ["[random]", "[ccfs]"])
def test_a_stage_before_its_teacher_names_the_stage_to_run(stage, methods, fake_fmnist, ccfs_cache, tmp_path,
                                                           capsys):
    out_dir = tmp_path / "run"
    code = main([stage, "tiny", f"out={out_dir}", f"data.root={fake_fmnist}", f"select.method={methods}",
                 "distill.method=none", "select.alpha=0", "progress=false"])
    assert code == 2
    line = one_error_line(capsys.readouterr().err)
    assert "ccfs teacher" in line or "ccfs select" in line
    assert not list(out_dir.rglob("selected_indices.json")) and not list(out_dir.rglob("results.jsonl"))


@pytest.mark.parametrize("argv, needle", [
    (["run", "no-such-preset"], "no preset"),
    (["teacher", "tiny", "select.alpha=1.5"], "select.alpha"),
    (["select", "tiny", "select.ipc=abc"], "select.ipc"),
    (["run", "tiny", "ipc50"], "key=value"),
])
def test_bad_config_is_one_line_exit_2(argv, needle, capsys):
    assert main(argv) == 2
    assert needle in one_error_line(capsys.readouterr().err)


def test_config_rejects_an_unknown_method(capsys):
    assert main(["config", "tiny", "select.method=[ccfs,foo]"]) == 2
    out, err = capsys.readouterr()
    assert "'foo'" in one_error_line(err) and "random" in err  # names the valid methods
    assert out == ""  # nothing listed before the error


def test_top_level_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "key=value" in out and "prepare" in out
    assert all(stage in out for stage in STAGE_HELP)


def test_run_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "key=value" in out and "preset" in out.lower()


def test_missing_stage_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_run_with_unknown_model_fails_in_preflight(fake_fmnist, tmp_path, capsys):
    out_dir = tmp_path / "run"
    code = main(["run", "tiny", f"out={out_dir}", f"data.root={fake_fmnist}", "eval.models=[nope]"])
    assert code == 2
    assert "convnet" in one_error_line(capsys.readouterr().err)  # lists the valid models
    assert not (out_dir / "teacher").exists()
