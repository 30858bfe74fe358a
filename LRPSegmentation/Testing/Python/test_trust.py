"""The Slicer side of "Check this explanation", torch-free: the check command line and the trust summary rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from LRPSegmentationLib.analysis.trust import CheckFileError, read_check, trust_headline, trust_rows
from LRPSegmentationLib.mrml.job import CheckRequest, ExplainRequest, JobError
from LRPSegmentationLib.pipeline.cli import build_parser

MODULE_DIR = Path(__file__).resolve().parents[2]


def method(spearman_full, morf, random, logit=0.1, floor=0.2):
    return {"randomisation": {"layers": ["head", "encoders.0"], "spearman": [0.9, spearman_full], "ssim": [0.8, 0.1],
                              "null_spearman": floor},
            "random_logit": {"spearman": logit},
            "flipping": {"morf_aopc": morf, "lerf_aopc": -0.1, "random_aopc": random},
            "localisation": {"gt_inclusivity": 0.5, "mass_accuracy": 0.7, "pointing_game": 1.0}, "seconds": 1.0}


REPORT = {"case": "c", "target": {"kind": "lesion-logits"},
          "methods": {"lrp-epsilon": method(0.12, 0.40, 0.05), "lrp-zplus": method(0.93, 0.20, 0.05),
                      "gradient": method(0.05, 0.02, 0.05), "grad-cam": method(0.88, 0.01, 0.05, floor=0.86)},
          "modality_ablation": {"ADC": 0.3}, "share_vs_ablation_spearman": {"lrp-epsilon": 0.8, "lrp-zplus": 0.1,
                                                                            "gradient": None, "grad-cam": 0.0}}


def test_trust_rows_say_pass_fail_faithfulness_and_rank(tmp_path):
    (tmp_path / "check.json").write_text(json.dumps(REPORT))
    rows = {row["Method"]: row for row in trust_rows(read_check(tmp_path))}
    assert [rows[m]["Randomisation"] for m in ("lrp-epsilon", "lrp-zplus", "gradient")] == ["passed", "failed",
                                                                                            "passed"]
    assert rows["grad-cam"]["Randomisation"] == "passed"  # high, but no higher than two random networks share
    assert [rows[m]["Faithful"] for m in ("lrp-epsilon", "lrp-zplus", "gradient")] == ["yes", "yes", "no"]
    assert [rows[m]["Faithfulness rank"] for m in ("lrp-epsilon", "lrp-zplus", "gradient")] == ["1 of 4", "2 of 4",
                                                                                                "3 of 4"]
    assert rows["gradient"]["Share vs ablation"] is None
    headline = trust_headline(REPORT)
    assert headline.startswith("lrp-epsilon; randomisation passed (similarity 0.12") and "rank 1 of 4" in headline
    skipped = json.loads(json.dumps(REPORT))
    skipped["methods"]["lrp-epsilon"]["randomisation"] = {"layers": [], "spearman": [], "ssim": []}
    assert trust_rows(skipped)[0]["Randomisation"] == "not run"
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(CheckFileError, match="not a check.json"):
        read_check(tmp_path / "bad.json")


def test_check_request_is_a_command_line_the_cli_accepts(tmp_path):
    request = CheckRequest(tmp_path / "case", tmp_path / "out", rule="epsilon-zb", filter="clamp", alpha=0.2,
                           parts=("flipping", "ablation"), methods=("lrp-epsilon-zb", "gradient"))
    arguments = request.arguments()
    assert arguments[:2] == ["check", str(tmp_path / "case")] and arguments[arguments.index("--progress") + 1] == "json"
    args = build_parser().parse_args(arguments)
    assert (args.flipping, args.ablation, args.randomisation, args.random_logit, args.localisation) == (
        True, True, False, False, False)
    assert args.rule == "epsilon-zb" and args.filter == "clamp" and args.alpha == 0.2
    assert args.methods == "lrp-epsilon-zb,gradient" and request.check_file == tmp_path / "out" / "check.json"
    assert request.command("python")[:3] == ["python", "-m", "LRPSegmentationLib.pipeline.cli"]
    explained = ExplainRequest(tmp_path / "run" / "case", tmp_path / "run" / "out", rule="zplus", filter="pass",
                               alpha=0.3)
    check = CheckRequest.for_explanation(explained, parts=("ablation",))
    assert (check.case_dir, check.out_dir, check.rule, check.filter, check.alpha, check.parts) == (
        explained.case_dir, tmp_path / "run" / "check", "zplus", "pass", 0.3, ("ablation",))
    with pytest.raises(JobError, match="check parts"):
        CheckRequest(tmp_path, tmp_path, parts=("speed",))


def test_the_slicer_side_imports_no_torch():
    code = ("import sys\nimport LRPSegmentationLib.analysis.trust, LRPSegmentationLib.mrml.job, "
            "LRPSegmentationLib.analysis.similarity\nassert 'torch' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=MODULE_DIR)
    assert result.returncode == 0, result.stderr[-2000:]
