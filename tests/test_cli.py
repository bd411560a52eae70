"""Command lines: exit status, files written, and a user error as one line on stderr with exit
status 2."""

import dataclasses
import json
import os
import signal
import time

import pytest
import tensorflow as tf

import tools
from pipeline import interrupt
from pipeline.config import analysis as analysis_config
from pipeline.config import demo as demo_config
from pipeline.config import offline as offline_config
from pipeline.config import options
from pipeline.config import training as training_config
from tools import compare
from tools import demo
from tools import evaluate
from tools import make_tfrecords
from tools import predict
from tools import prune
from tools import qf_histogram
from tools import report
from tools import train_block_by_block
from tools import verify


def _one_line_error(capsys, program: str) -> str:
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(f"{program}: error: "), error
    return error


def test_make_tfrecords_writes_its_files_and_explains_user_errors(tmp_path, tiny_dataset, capsys):
    out_dir = str(tmp_path / "out")
    argv = [
        "--data-dir",
        tiny_dataset,
        "--out-dir",
        out_dir,
        "--backbone",
        "mobilenet_v2",
        "--weights",
        "none",
        "--input-size",
        "32",
        "--nodes",
        "pool",
        "--qualities",
        "50",
        "--num-shards",
        "1",
        "--test-percent",
        "0",
        "--no-progress",
    ]
    assert make_tfrecords.main(argv) == 0
    assert "12 images written" in capsys.readouterr().out
    assert sorted(os.listdir(out_dir)) == [
        ".lock",
        ".progress",
        "manifest.json",
        "pool",
        "quarantine.csv",
        "timings.json",
    ]
    assert sorted(os.listdir(os.path.join(out_dir, "pool"))) == [
        "train-00000-of-00001.tfrecord",
        "validation-00000-of-00001.tfrecord",
    ]
    assert make_tfrecords.main(["--verify", out_dir]) == 0
    assert make_tfrecords.main(argv[:-1] + ["--qualities", "60", "--no-progress"]) == 2
    assert "different job" in _one_line_error(capsys, "make_tfrecords")
    assert make_tfrecords.main(argv[:-1] + ["--storage-dtype", "float16", "--no-progress"]) == 2
    assert "different job (it differs in: storage_dtype)" in _one_line_error(
        capsys, "make_tfrecords"
    )
    assert make_tfrecords.main(["--data-dir", str(tmp_path / "nowhere"), "--out-dir", out_dir]) == 2
    assert "no such directory" in _one_line_error(capsys, "make_tfrecords")


def test_make_tfrecords_flags(tmp_path):
    base = ["--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "out")]
    assert (
        make_tfrecords.parse_flags(base + ["--input-size", "0"]).input_size is None
    )  # the backbone's own
    assert make_tfrecords.parse_flags(base + ["--input-size", "96"]).input_size == 96
    assert make_tfrecords.parse_flags(["--verify", str(tmp_path)]) == offline_config.VerifyConfig(
        str(tmp_path)
    )
    assert make_tfrecords.parse_flags(base).storage_dtype == "float32"
    assert (
        make_tfrecords.parse_flags(base + ["--storage-dtype", "bfloat16"]).storage_dtype
        == "bfloat16"
    )
    for wrong in (
        ["--data-dir", str(tmp_path)],
        ["--verify", "a", "--data-dir", "b"],
        base + ["--qualities", "x"],
        base + ["--storage-dtype", "int8"],
    ):
        with pytest.raises(SystemExit) as raised:
            make_tfrecords.parse_flags(wrong)
        assert raised.value.code == 2


def test_train_shuffle_buffer_flags(tmp_path):
    base = ["--records", str(tmp_path), "--logdir", str(tmp_path / "run")]
    config = train_block_by_block.parse_flags(
        base + ["--shuffle-buffer", "500", "--shuffle-buffer-mb", "64"]
    )
    assert (config.shuffle_buffer, config.shuffle_buffer_mb) == (500, 64.0)
    assert config.export and not train_block_by_block.parse_flags(base + ["--no-export"]).export
    for wrong in (
        ["--shuffle-buffer", "0"],
        ["--shuffle-buffer-mb", "0"],
        ["--logdir", "gs://bucket/run"],
    ):
        with pytest.raises(SystemExit) as raised:
            train_block_by_block.parse_flags(base + wrong)
        assert raised.value.code == 2


def test_verify_user_error(tmp_path, capsys):
    assert verify.main([str(tmp_path / "nowhere")]) == 2
    assert "no manifest.json" in _one_line_error(capsys, "jpeg-ladder-verify")


def test_qf_histogram_writes_json_and_refuses_a_missing_folder(tmp_path, tiny_dataset, capsys):
    assert qf_histogram.main([tiny_dataset, "--json", str(tmp_path / "counts.json")]) == 0
    with open(tmp_path / "counts.json") as file:
        assert json.load(file)
    assert qf_histogram.main([str(tmp_path / "nowhere")]) == 2
    assert "no such directory" in _one_line_error(capsys, "qf_histogram")


def test_predict_refuses_a_missing_model(tmp_path, tiny_dataset, capsys):
    assert (
        predict.main(
            ["--model", str(tmp_path / "nowhere"), os.path.join(tiny_dataset, "cat", "cat_000.jpg")]
        )
        == 2
    )
    _one_line_error(capsys, "predict")


@pytest.mark.parametrize(
    "program, main, argv, message",
    [
        (
            "train_block_by_block",
            train_block_by_block.main,
            ["--logdir", "{tmp}/run"],
            "no manifest.json",
        ),
        ("compare", compare.main, ["--out-dir", "{tmp}/out"], "no manifest.json"),
        (
            "evaluate",
            evaluate.main,
            ["--model", "{tmp}/nowhere", "--data-dir", "{tmp}", "--out-dir", "{tmp}/out"],
            "{tmp}/nowhere",
        ),
        (
            "report",
            report.main,
            ["--logdir", "{tmp}/nowhere", "--out-dir", "{tmp}/out"],
            "no results.json",
        ),
        (
            "jpeg-ladder-prune",
            prune.main,
            ["--logdir", "{tmp}/nowhere", "--out-dir", "{tmp}/out"],
            "no results.json",
        ),
        (
            "demo",
            demo.main,
            ["--data-dir", "{tmp}/nowhere", "--out-dir", "{tmp}/out", "--no-progress"],
            "nowhere",
        ),
    ],
)
def test_every_tool_explains_missing_input_in_one_line(
    tmp_path, capsys, program, main, argv, message
):
    records = (
        ["--records", str(tmp_path / "records")]
        if program in ("train_block_by_block", "compare")
        else []
    )
    argv = [part.format(tmp=tmp_path) for part in argv] + records
    assert main(argv) == 2
    assert message.format(tmp=tmp_path) in _one_line_error(capsys, program)
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


def test_an_output_folder_that_cannot_be_made_is_one_line(tmp_path, tiny_dataset, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert qf_histogram.main([tiny_dataset, "--json", str(blocker / "counts.json")]) == 2
    _one_line_error(capsys, "qf_histogram")


@pytest.mark.parametrize(
    "error",
    [
        tf.errors.PermissionDeniedError(
            None, None, 'gs://bucket/records: HTTP 403\n{"error": {"code": 403}}'
        ),
        tf.errors.NotFoundError(None, None, "gs://bucket/images/cat: not found"),
    ],
)
def test_a_url_that_is_missing_or_not_allowed_is_one_line(error, capsys):
    def job(config):
        raise error

    assert tools.run("make_tfrecords", job, None) == 2
    assert "gs://bucket/" in _one_line_error(capsys, "make_tfrecords")


def test_a_library_bug_keeps_its_traceback_where_a_user_error_is_one_line(capsys):
    def bug(config):
        raise RuntimeError("an internal invariant broke")

    with pytest.raises(RuntimeError, match="an internal invariant broke"):
        tools.run("make_tfrecords", bug, None)

    def full_disk(config):
        raise OSError(28, "No space left on device")

    assert tools.run("make_tfrecords", full_disk, None) == 2
    assert "No space left on device" in _one_line_error(capsys, "make_tfrecords")


TOOLS_DIRECTORY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")


def test_no_tool_writes_a_flag_by_hand():
    for name in sorted(os.listdir(TOOLS_DIRECTORY)):
        if name.endswith(".py") and name != "flags.py":
            with open(os.path.join(TOOLS_DIRECTORY, name), encoding="utf-8") as file:
                assert "add_argument" not in file.read(), name


@pytest.mark.parametrize(
    "config_class",
    [
        offline_config.ExtractConfig,
        training_config.TrainConfig,
        analysis_config.CompareConfig,
        analysis_config.PruneConfig,
        analysis_config.CompressConfig,
        demo_config.DemoConfig,
        analysis_config.EvaluateConfig,
        analysis_config.PredictConfig,
        analysis_config.ReportConfig,
        analysis_config.HistogramConfig,
    ],
)
def test_every_option_of_a_config_is_a_flag_with_its_help(config_class):
    from tools import flags

    parser = flags.Flags().add(config_class).parser
    helps = {action.help for action in parser._actions}
    for field in dataclasses.fields(config_class):
        if field.metadata.get("nested"):
            continue
        assert ("help" in field.metadata) == any(
            text and text.startswith(field.metadata.get("help", "\0")) for text in helps
        ), field.name


def test_a_template_s_flags_set_the_runs_that_a_config_derives():
    config = compare.parse_flags(
        [
            "--records",
            "r",
            "--out-dir",
            "o",
            "--optimizer",
            "sgd",
            "--seeds",
            "2",
            "--plateau-epochs",
            "7",
            "--fusions",
            "shared",
        ]
    )
    assert config.fusions == ("shared",)
    assert (config.training.optimizer, config.training.seeds, config.training.plateau_epochs) == (
        "sgd",
        2,
        7.0,
    )
    defaults = compare.parse_flags(["--records", "r", "--out-dir", "o"])
    assert defaults.training == analysis_config.compare_training()
    with pytest.raises(SystemExit):  # the protocol sets each arm's fusion: not a flag of compare
        compare.parse_flags(["--records", "r", "--out-dir", "o", "--fusion", "shared"])


def test_adding_an_option_is_one_edit():
    from tools import flags

    @dataclasses.dataclass(frozen=True)
    class Example:
        out_dir: str = options.option(help="where")
        rate: float = options.option(0.5, help="how fast")
        names: tuple[str, ...] | None = options.option(None, help="which")
        quiet: bool = options.option(False, help="say less")
        internal: int = 3

    config = flags.parse(Example, ["--out-dir", "o", "--rate", "2", "--names", "a,b", "--quiet"])
    assert config == Example(out_dir="o", rate=2.0, names=("a", "b"), quiet=True)
    with pytest.raises(SystemExit):
        flags.parse(Example, ["--out-dir", "o", "--internal", "4"])


def test_a_second_signal_wrapped_by_the_code_it_stopped_still_stops_the_job(capsys):
    # TensorFlow tracing a function re-raises an exception from inside it as its own StagingError;
    # the second signal's stop must survive that.
    def job(config, stop):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler raises here
        except interrupt.Interrupted as stopped:
            raise RuntimeError(f"in user code: {stopped}") from None
        return "finished"

    status = tools.run("make_tfrecords", job, None, argv=["--x"], safe_point="after the shard")
    assert status == 128 + signal.SIGINT
    error = capsys.readouterr().err
    assert "stopped at once on a second SIGINT" in error and "To resume" in error
