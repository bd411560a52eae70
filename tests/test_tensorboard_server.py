"""The real TensorBoard server, over HTTP, serves a training run's runs, scalars, hparams and JPEG
ladder."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from pipeline.training import run_directory
from pipeline.training import train
from tests.test_train import STAGES
from tests.test_train import _config
from tests.test_train import _scalars

RUN_NAMES = tuple(f"stage{index}_{node}" for index, node in enumerate(STAGES))
VALIDATION_TAGS = {"top1", "top5", "loss", "learning_rate", "best_top1"}
TRAIN_TAGS = {"top1", "loss", "learning_rate"}
START_SECONDS = (
    90  # TensorBoard imports TensorFlow before it listens: seconds, more on a busy machine
)
LOAD_SECONDS = 60  # the first load of the logdir happens after the server already answers

# No ProxyHandler entries: a proxy from the environment must not carry the loopback requests
# elsewhere.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def trained_run(records, tmp_path_factory):
    """Two short stages (about three evaluations each) logged to a fresh LOGDIR."""
    logdir = tmp_path_factory.mktemp("tensorboard_server") / "run"
    results = train.train_and_evaluate(
        _config(records, logdir, export=False, max_epochs_per_stage=1.0)
    )
    return str(logdir), results.to_json()


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _server_log(log_path) -> str:
    with open(log_path, errors="replace") as log:
        return log.read()[-4000:]


def _start_server(logdir: str, log_path):
    """Starts TensorBoard on a free loopback port and returns (process, base URL) once it
    answers."""
    # Another process may take the probed port before TensorBoard binds it: then try another port.
    for _ in range(3):
        port = _free_loopback_port()
        command = [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            logdir,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--reload_interval",
            "1",
        ]
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_SECONDS
        while process.poll() is None and time.monotonic() < deadline:
            try:
                with _OPENER.open(base_url + "/data/runs", timeout=5) as response:
                    if response.status == 200:
                        return process, base_url
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.25)
        if process.poll() is not None and "already in use" in _server_log(log_path):
            continue
        exit_code = process.poll()
        _stop(process)
        problem = (
            f"exited with code {exit_code}"
            if exit_code is not None
            else f"did not answer in {START_SECONDS} s"
        )
        pytest.fail(f"TensorBoard on {base_url} {problem}:\n{_server_log(log_path)}")
    pytest.fail(f"TensorBoard found no free port in three tries:\n{_server_log(log_path)}")


def _stop(process) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def server(trained_run, tmp_path_factory):
    logdir, _ = trained_run
    log_path = tmp_path_factory.mktemp("tensorboard_log") / "tensorboard.log"
    process, base_url = _start_server(logdir, log_path)
    try:
        yield base_url, log_path
    finally:
        _stop(process)
    assert process.returncode is not None


def _get_json(base_url: str, route: str, **query):
    url = base_url + route + ("?" + urllib.parse.urlencode(query) if query else "")
    with _OPENER.open(url, timeout=30) as response:
        return json.load(response)


def _post_json(base_url: str, route: str, body: dict):
    # The hparams routes parse the raw body as JSON; urllib's default form content type would hide
    # it.
    request = urllib.request.Request(
        base_url + route,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with _OPENER.open(request, timeout=30) as response:
        return json.load(response)


def _eventually(fetch, is_complete, log_path):
    """fetch() until is_complete(answer) or LOAD_SECONDS pass; the last answer, for the caller to
    assert on.

    The server answers before its first load of the logdir ends, and a load may show a run half
    read.
    """
    deadline = time.monotonic() + LOAD_SECONDS
    while True:
        try:
            answer = fetch()
        except urllib.error.HTTPError as error:
            if error.code != 400 and error.code != 404:  # 400/404: the run or tag is not loaded yet
                raise AssertionError(f"{error}:\n{_server_log(log_path)}") from error
            answer = None
        if (answer is not None and is_complete(answer)) or time.monotonic() > deadline:
            return answer
        time.sleep(0.25)


def _served_scalars(server, run: str, tag: str, expected_steps: list[int]):
    base_url, log_path = server
    rows = _eventually(
        lambda: _get_json(base_url, "/data/plugin/scalars/scalars", run=run, tag=tag),
        lambda rows: [step for _, step, _ in rows] == expected_steps,
        log_path,
    )
    assert rows is not None, f"no {tag} for {run}:\n{_server_log(log_path)}"
    return [(step, value) for _, step, value in rows]


@pytest.mark.slow
def test_every_stage_run_and_the_stages_run_are_listed(server):
    base_url, log_path = server
    expected = {f"{name}/{split}" for name in RUN_NAMES for split in ("train", "validation")} | {
        "stages"
    }
    runs = _eventually(
        lambda: _get_json(base_url, "/data/runs"), lambda runs: expected <= set(runs), log_path
    )
    assert expected <= set(runs), f"missing {expected - set(runs)}; served {runs}"


@pytest.mark.slow
def test_scalar_tags_of_each_run(server):
    base_url, log_path = server

    def complete(tags):
        return (
            all(VALIDATION_TAGS <= set(tags.get(f"{name}/validation", {})) for name in RUN_NAMES)
            and all(TRAIN_TAGS <= set(tags.get(f"{name}/train", {})) for name in RUN_NAMES)
            and {"best_top1", "best_top5"} <= set(tags.get("stages", {}))
        )

    tags = _eventually(lambda: _get_json(base_url, "/data/plugin/scalars/tags"), complete, log_path)
    for name in RUN_NAMES:
        assert set(tags[f"{name}/validation"]) == VALIDATION_TAGS
        assert set(tags[f"{name}/train"]) == TRAIN_TAGS
    assert set(tags["stages"]) == {"best_top1", "best_top5"}


@pytest.mark.slow
def test_served_scalars_equal_the_event_files_and_results(server, trained_run):
    logdir, results = trained_run
    assert [stage["node"] for stage in results["stages"]] == list(STAGES)
    for name, outcome in zip(RUN_NAMES, results["stages"], strict=True):
        for split, tags in (("validation", VALIDATION_TAGS), ("train", TRAIN_TAGS)):
            for tag in sorted(tags):
                written = _scalars(os.path.join(logdir, name, split), tag)
                assert len(written) >= 2, f"{name}/{split} {tag}: {written}"
                served = _served_scalars(
                    server, f"{name}/{split}", tag, [step for step, _ in written]
                )
                assert [step for step, _ in served] == [step for step, _ in written], (
                    f"{name}/{split} {tag}"
                )
                # Both sides are the same float32 summaries; the tolerance only covers float32 ->
                # JSON.
                assert [value for _, value in served] == pytest.approx(
                    [value for _, value in written], rel=1e-6, abs=1e-7
                ), f"{name}/{split} {tag}"
                if (split, tag) == ("validation", "top1"):
                    assert max(value for _, value in served) == pytest.approx(
                        outcome["best_top1"], rel=1e-6
                    )

    with open(os.path.join(logdir, run_directory.RESULTS_NAME)) as file:
        saved = json.load(file)
    best_top1 = _served_scalars(server, "stages", "best_top1", list(range(len(STAGES))))
    assert best_top1 == [
        (index, pytest.approx(stage["best_top1"], rel=1e-6))
        for index, stage in enumerate(saved["stages"])
    ]


@pytest.mark.slow
def test_hparams_are_active_and_the_jpeg_ladder_is_served(server, records, trained_run):
    base_url, log_path = server
    _, results = trained_run
    listing = _eventually(
        lambda: _get_json(base_url, "/data/plugins_listing"),
        lambda listing: listing.get("hparams", {}).get("enabled"),
        log_path,
    )
    assert listing["hparams"]["enabled"], f"hparams inactive: {listing}"
    assert listing["scalars"]["enabled"]
    # One hparams session per stage, named by its trial id, with the stage's node and learning rate.
    session_request = {
        "startIndex": 0,
        "sliceSize": 100,
        "aggregationType": "AGGREGATION_AVG",
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        "colParams": [],
    }
    groups = _eventually(
        lambda: _post_json(base_url, "/data/plugin/hparams/session_groups", session_request),
        lambda answer: len(answer.get("sessionGroups", [])) == len(RUN_NAMES),
        log_path,
    )
    served_stages = {
        group["name"]: (group["hparams"].get("node"), group["hparams"].get("learning_rate"))
        for group in groups.get("sessionGroups", [])
    }
    assert served_stages == {
        name: (stage["node"], pytest.approx(stage["learning_rate"]))
        for name, stage in zip(RUN_NAMES, results["stages"], strict=True)
    }

    with open(os.path.join(records, "manifest.json")) as file:
        data_dir = json.load(file)["config"]["data_dir"]
    if not os.path.isdir(data_dir):
        pytest.skip(
            f"{data_dir} is gone: the trainer logs no JPEG ladder without the source images"
        )
    tags = _eventually(
        lambda: _get_json(base_url, "/data/plugin/images/tags"),
        lambda tags: "jpeg_ladder" in tags.get("stages", {}),
        log_path,
    )
    assert "jpeg_ladder" in tags.get("stages", {}), f"images tags: {tags}"
    # One image per branch: the original and its ten JPEG re-encodings.
    assert tags["stages"]["jpeg_ladder"]["samples"] == len(results["branches"]) == 11
