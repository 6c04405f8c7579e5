"""`stpn study`: per-seed runs (resumable), aggregates a reader can recompute."""

import json

import numpy as np

from stpn_tf.artifacts import raw_outputs
from stpn_tf.tuning.sweep import Sweeper
from stpn_tf.artifacts.ground_truth import load_ground_truth
from stpn_tf.localize.config import LocalizerConfig
from stpn_tf.workflows.study import aggregate
from tests.helpers.cli import SMALL, cli
from tests.helpers.releases import write_basnet_release


def test_aggregate_by_hand():
    got = aggregate([[1., 2.], [3., 6.]])
    assert got == {"mean": [2., 4.], "std": [1., 2.], "min": [1., 2.], "max": [3., 6.]}


def test_study_two_seeds_and_resume(tmp_path):
    files = write_basnet_release(str(tmp_path / "release"), num_train=6, num_test=4, feature_dim=8)
    data = tmp_path / "dataset"
    cli("build-dataset", "--layout=thumos14_npy", f"--out={data}", "--num_shards=1",
        *[f"--{k}={v}" for k, v in files.items()])
    study_dir = tmp_path / "study"
    args = ["study", f"--workdir={study_dir}", "--seeds=0,1", "--config=thumos14", f"--config.dataset.dir={data}",
            "--unknown_labels_as_fp", *SMALL]
    proc = cli(*args)
    assert "seed 1: training the flow stream" in proc.stdout
    result = json.loads((study_dir / "study.json").read_text())
    assert result["seeds"] == [0, 1] and set(result["per_seed"]) == {"0", "1"}
    # The tuning objective (the shipped config: the lower of the two protocols' averages) per setting.
    assert result["objective"] == "min"
    lower = [min(result["per_seed"][s]["paper default"][p]["average_mAP"] for p in ("activitynet", "th14kit"))
             for s in ("0", "1")]
    np.testing.assert_allclose(result["objective_average"]["paper default"]["mean"], np.mean(lower))
    raws = [raw_outputs.load_raw(str(study_dir / f"seed_{s}" / "raw_test.npz")) for s in (0, 1)]
    assert not np.array_equal(raws[0]["rgb/attention"], raws[1]["rgb/attention"])  # the seeds differ
    for protocol in ("activitynet", "th14kit"):
        per_seed = [result["per_seed"][s]["paper default"][protocol]["mAP"] for s in ("0", "1")]
        agg = result["aggregate"]["paper default"][protocol]["mAP"]
        np.testing.assert_allclose(agg["mean"], np.mean(per_seed, 0))
        np.testing.assert_allclose(agg["std"], np.std(per_seed, 0))
        np.testing.assert_allclose(agg["max"], np.max(per_seed, 0))
    assert "std" in (study_dir / "study.txt").read_text()
    # Rerunning reuses every trained stream and gives the same study.
    proc = cli(*args)
    assert proc.stdout.count("reusing the trained") == 4 and "training the" not in proc.stdout
    assert json.loads((study_dir / "study.json").read_text()) == result
    # The study's report page: the seeds' curves, then its first seed's figures.
    cli("report", f"--workdir={study_dir}", f"--config.dataset.dir={data}", "--unknown_labels_as_fp",
        "--config.localize.interpolation=4", "--config.localize.max_detections=64",
        "--config.localize.max_components_per_class=16")
    page = (study_dir / "report.html").read_text()
    assert "Seed study (2 seeds)" in page and page.count("<img class='figure'") >= 4
    # A tuned config that chose every snippet: the models run once more per seed, on every snippet, for it.
    tuned = tmp_path / "tuned.py"
    tuned.write_text("from stpn_tf.configs import thumos14 as base\n\n\ndef get_config():\n"
                     "    config = base.get_config()\n    config.localize.interpolation = 4\n"
                     "    config.localize.all_snippets = True\n    config.localize.proposal_streams = 'flow'\n"
                     "    return config\n")
    proc = cli(*args, f"--tuned_config={tuned}")
    assert proc.stdout.count("(every snippet)") == 2 and "training the" not in proc.stdout
    with_tuned = json.loads((study_dir / "study.json").read_text())
    assert with_tuned["settings"]["tuned"]["all_snippets"] and not with_tuned["settings"]["paper default"]["all_snippets"]
    assert with_tuned["per_seed"]["0"]["paper default"] == result["per_seed"]["0"]["paper default"]
    raw_all = raw_outputs.load_raw(str(study_dir / "seed_0" / "raw_test_all_snippets.npz"))
    assert np.array_equal(raw_all["length"], raw_all["num_snippets"])  # every real snippet, not the grid of 16
    truth = load_ground_truth(str(data / "ground_truth.json"), "test")
    expected = Sweeper(raw_all, truth, protocols=("activitynet", "th14kit"), unknown_labels_as_fp=True).score(
        LocalizerConfig(interpolation=4, proposal_streams="flow"))["protocols"]
    for protocol in ("activitynet", "th14kit"):  # the study evaluates at the config's thresholds: compare mAPs
        got = with_tuned["per_seed"]["0"]["tuned"][protocol]
        assert got["mAP"] == expected[protocol]["mAP"][:len(got["mAP"])]
