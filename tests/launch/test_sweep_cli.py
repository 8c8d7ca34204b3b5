"""`anvil sweep plan|fit|plot|run --dry-run` through the CLI: outputs, contract fields, one-line errors."""

import json
from pathlib import Path

import numpy as np
import pytest

from launch.cli import main

ROOT = Path(__file__).resolve().parents[2]
CPU_TINY = str(ROOT / "configs" / "sweeps" / "cpu_tiny.yaml")


def _results(path: Path) -> None:
    rng = np.random.default_rng(0)
    lines = ["name,N,D,loss,C"]
    for c in (1e15, 4e15, 1.6e16, 6.4e16):
        for n in np.geomspace(2e5, 2e7, 6):
            d = c / (6 * n)
            loss = (2.0 + 300 / n**0.35 + 900 / d**0.3) * np.exp(rng.normal(0, 0.002))
            lines.append(f"r,{n:.0f},{d:.0f},{loss:.6f},{c}")
    path.write_text("\n".join(lines) + "\n")


def test_plan_fit_plot(tmp_path, capsys):
    assert main(["sweep", "plan", CPU_TINY, "--output", str(tmp_path / "plan.csv")]) == 0
    assert len((tmp_path / "plan.csv").read_text().splitlines()) >= 13  # >= 3 budgets x 4 sizes
    _results(tmp_path / "results.csv")
    assert (
        main(
            [
                "sweep",
                "fit",
                str(tmp_path / "results.csv"),
                "--output",
                str(tmp_path / "fit.json"),
                "--plot",
                str(tmp_path / "fit.png"),
                "--heldout",
            ]
        )
        == 0
    )
    fit = json.loads((tmp_path / "fit.json").read_text())
    assert {"E", "A", "B", "alpha", "beta", "a", "b", "G", "objective", "approach2"} <= set(fit)
    assert fit["alpha"] == pytest.approx(0.35, abs=0.05) and fit["beta"] == pytest.approx(0.3, abs=0.05)
    assert (tmp_path / "fit.png").stat().st_size > 10_000
    assert fit["heldout"]["fit_points"] == 18 and fit["heldout"]["relative_error"] < 0.02
    assert (
        main(
            [
                "sweep",
                "plot",
                str(tmp_path / "results.csv"),
                "--fit",
                str(tmp_path / "fit.json"),
                "--output",
                str(tmp_path / "report"),
            ]
        )
        == 0
    )
    for name in ("isoflop.png", "frontier.png", "contours.png", "report.html"):
        assert (tmp_path / "report" / name).stat().st_size > 1000, name
    page = (tmp_path / "report" / "report.html").read_text()
    assert "alpha" in page
    # the three panels share one wrapping row and shrink with the page: none is cut off at the edge
    assert page.count("<img ") == 3 and ".panels img{width:32%" in page and "max-width:100%" in page


def test_run_dry_run_and_slurm_script(tmp_path, capsys):
    out = tmp_path / "sw"
    assert main(["sweep", "run", CPU_TINY, f"output_dir={out}", "--dry-run"]) == 0
    cmds = capsys.readouterr().out.strip().splitlines()
    assert len(cmds) >= 12 and all(" train configs/train/tiny.yaml " in c for c in cmds)
    assert all("logging.wandb_group=cpu_tiny" in c for c in cmds)
    assert not (out / "results.csv").exists()  # nothing ran
    assert main(["sweep", "run", CPU_TINY, f"output_dir={out}", "--slurm", "--dry-run"]) == 0
    script = (out / "sweep.sbatch").read_text()
    assert f"#SBATCH --array=0-{len(cmds) - 1}" in script and "--index \"$SLURM_ARRAY_TASK_ID\"" in script
    assert f"output_dir={out}" in script  # array tasks plan the sweep that was submitted


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sweep", "fit", "missing.csv", "--output", "x.json"], "results file not found"),
        (["sweep", "plan", "missing.yaml", "--output", "x.csv"], "config file not found"),
        (["sweep", "run", CPU_TINY, "grid.budgets=[]", "--dry-run"], "grid.budgets"),
        (["sweep", "run", CPU_TINY, "--index", "999", "--dry-run"], "outside the plan"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, argv, message):
    try:
        code = main(argv)
    except SystemExit as exc:
        code, err = 1, str(exc)
    else:
        err = capsys.readouterr().err
    assert code != 0 and message in err and len(err.strip().splitlines()) == 1
