"""The nested hyperparameter search (aus_lib.sweep): honest trials, pruning, the search space, and
studies shared by worker processes through a journal file and through a real PostgreSQL server."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import pytest

from aus_lib import folds, normalize, sweep
from aus_lib.config import load_config
from aus_lib.folds import split_fold
from aus_lib.paths import REPO_ROOT

SPACE = {"lr": {"low": 0.001, "high": 0.01, "log": True}, "model_params.encoder.dim": {"choices": [4, 8]}}
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def setup(tiny_synthetic, tmp_path_factory):
    """Base params (2 outer folds of the 4 tiny actors, 1 inner validation actor), a space, fold lists."""
    from conftest import TINY_PARAMS

    root = tmp_path_factory.mktemp("sweep")
    params = {**json.loads(json.dumps(TINY_PARAMS)), "kfolds": 2, "inner_val_actors": 1, "epochs": 3}
    (root / "base.json").write_text(json.dumps(params))
    (root / "space.json").write_text(json.dumps(SPACE))
    manifest = folds.load_or_make(root / "folds", 2, aus_dir=tiny_synthetic, seed=7)
    return {"root": root, "base": root / "base.json", "space": root / "space.json", "folds": root / "folds",
            "params": params, "manifest": manifest}


def objective_of(setup, **changes):
    params = {**setup["params"], **changes}
    return sweep.NestedObjective(params, sweep.read_space(setup["space"]), setup["manifest"])


# --- honest by construction ---------------------------------------------------------------------------

def test_a_trial_loads_only_the_training_actors_of_each_outer_fold(setup, monkeypatch):
    manifest = setup["manifest"]
    outer = folds.folds_from_manifest(manifest)
    loaded = []
    real_load = sweep.load_clips
    monkeypatch.setattr(sweep, "load_clips", lambda m, **kw: loaded.append(set(m["actor"])) or real_load(m, **kw))
    objective = objective_of(setup)
    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=1)

    assert sorted(map(sorted, loaded)) == sorted(sorted(set(manifest["actor"]) - set(t)) for t in outer.values())
    for k, test_actors in outer.items():
        data, split = objective.fold_data(k, objective.base)
        assert not set(data.actors.tolist()) & set(test_actors)
        assert len(split.test) == 0
        expected = split_fold(manifest, k, objective.base)
        assert set(data.actors[split.val].tolist()) == set(manifest["actor"].to_numpy()[expected.val].tolist())
        assert set(data.actors[split.train].tolist()) == set(manifest["actor"].to_numpy()[expected.train].tolist())


def test_trials_see_the_clips_scaled_per_actor_as_training_would(setup):
    """With actor_normalization, a trial trains on what train_cv trains on: each actor z-scored with its own
    clips' statistics; without it, on the raw clips."""
    raw_objective, z_objective = objective_of(setup), objective_of(setup, actor_normalization="zscore")
    raw, _ = raw_objective.fold_data(1, raw_objective.base)
    scaled, _ = z_objective.fold_data(1, z_objective.base)
    expected = normalize.normalize_data(raw, "zscore", normalize.statistics_of(raw, "zscore"))
    np.testing.assert_allclose(scaled.features, expected.features)
    assert not np.allclose(scaled.features, raw.features)


def test_the_value_is_the_mean_inner_validation_f1_reported_after_every_epoch(setup):
    study = optuna.create_study(direction="maximize")
    study.optimize(objective_of(setup), n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.value == pytest.approx(np.mean(list(trial.user_attrs["fold_val_f1"].values())))
    assert sorted(trial.intermediate_values) == [1, 2, 3]
    assert trial.intermediate_values[3] == pytest.approx(trial.value)


def test_a_pruned_trial_stops_training_at_the_pruned_epoch(setup):
    # F1 never reaches 2: this pruner stops every trial at the first epoch it hears of.
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    study.optimize(objective_of(setup, epochs=20), n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert sorted(trial.intermediate_values) == [1]


def test_a_trial_is_never_pruned_at_its_last_epoch(setup):
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    study.optimize(objective_of(setup, epochs=1), n_trials=1)
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE


# --- the search space ------------------------------------------------------------------------------------

@pytest.mark.parametrize("space, message", [
    ({"model_params.encoder.dimm": {"choices": [4, 8]}}, "model_params.encoder.dimm"),
    ({"model_params.encoder.dropout": {"low": 0.1, "high": 1.5}}, "model_params.encoder.dropout=1.5 must be less than 1"),
    ({"lr": {"low": 0.1, "high": 0.01}}, "above high"),
    ({"lr": {"low": 0.0, "high": 0.01, "log": True}}, "log range needs low > 0"),
    ({"lr": {"min": 0.001, "max": 0.01}}, "unknown field"),
    ({"batch_size": {"choices": []}}, "non-empty list"),
    ({}, "empty"),
])
def test_a_bad_search_space_is_refused_naming_the_key(setup, tmp_path, space, message):
    path = tmp_path / "space.json"
    path.write_text(json.dumps(space))
    with pytest.raises(sweep.SweepError, match=re.escape(message)):
        sweep.check_space(sweep.read_space(path), setup["params"], str(setup["base"]))


def test_a_null_choice_sets_null_instead_of_keeping_the_base_value(setup):
    params = sweep.trial_params({**setup["params"], "preprocessor": "standard"}, {"preprocessor": None})
    assert params["preprocessor"] is None and params["selection"] == "inner"


def test_a_study_refuses_to_continue_with_another_search_space(setup, tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "OUTPUTS", tmp_path)
    run = dict(base_params=setup["base"], folds_dir=setup["folds"], progress=False, log=lambda _: None)
    sweep.run_sweep(setup["space"], "s", 0, **run)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**SPACE, "batch_size": {"choices": [16, 32]}}))
    with pytest.raises(sweep.SweepError, match="search space"):
        sweep.run_sweep(other, "s", 0, **run)


def test_the_command_reports_a_bad_space_with_exit_code_2(setup, tmp_path, monkeypatch, capsys):
    from aus_lib import cli

    monkeypatch.setattr(sweep, "OUTPUTS", tmp_path)
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"model_params.encoder.width": {"low": 8, "high": 64}}))
    code = cli.main(["sweep", "--space", str(space), "--study", "bad", "--n-trials", "1",
                     "--base-params", str(setup["base"]), "--folds-dir", str(setup["folds"])])
    assert code == 2
    assert "model_params.encoder.width" in capsys.readouterr().err


# --- workers sharing a study ---------------------------------------------------------------------------------

N_TRIALS = 4
FINISHED_LINE = re.compile(r"^trial (\d+) (COMPLETE|PRUNED)", re.M)


def start_worker(setup, out: Path, storage: str | None) -> subprocess.Popen:
    command = [sys.executable, "-m", "aus_lib.cli", "sweep", "--space", str(setup["space"]), "--study", "shared",
               "--n-trials", str(N_TRIALS), "--base-params", str(setup["base"]), "--folds-dir", str(setup["folds"]),
               "--epochs", "5", "--heartbeat", "1"] + (["--storage", storage] if storage else [])
    env = {**os.environ, "AUS_OUTPUTS": str(out), "AUS_CACHE_DIR": str(out / "cache"), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(worker: subprocess.Popen, timeout: float = 240) -> str:
    output, _ = worker.communicate(timeout=timeout)
    return output


def two_workers_then_a_kill(setup, out: Path, storage: str | None, study_storage) -> None:
    """Workers A and B share the study; A is killed mid-trial once some trial has finished; B ends; C (the
    same command again) continues. Every trial is then held exactly once and the results load."""
    a, b = start_worker(setup, out, storage), start_worker(setup, out, storage)
    killed = None
    try:
        deadline = time.time() + 180
        while killed is None and time.time() < deadline and a.poll() is None:
            try:
                trials = optuna.load_study(study_name="shared", storage=study_storage).get_trials(deepcopy=False)
            except KeyError:  # the study is not created yet
                trials = []
            mine = [t for t in trials if t.user_attrs.get("worker", {}).get("pid") == a.pid]
            running = [t for t in mine if t.state == optuna.trial.TrialState.RUNNING]
            if running and any(t.state.is_finished() for t in trials):
                a.send_signal(signal.SIGKILL)
                killed = running[0].number
            time.sleep(0.02)
        out_a = finish(a)
        assert killed is not None, f"worker A was never seen mid-trial once a trial had finished:\n{out_a}"
        out_b = finish(b)
        assert b.returncode == 0, out_b
    finally:
        for w in (a, b):
            if w.poll() is None:
                w.kill()
                w.wait()
    c = start_worker(setup, out, storage)
    out_c = finish(c)
    assert c.returncode == 0, out_c

    trials = optuna.load_study(study_name="shared", storage=study_storage).get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    assert not [t.number for t in trials if not t.state.is_finished()]
    finished = {t.number for t in trials if t.state in sweep.FINISHED}
    assert N_TRIALS <= len(finished) <= N_TRIALS + 1  # two workers may start the last trial at once
    reported = [{int(number) for number, _ in FINISHED_LINE.findall(text)} for text in (out_a, out_b, out_c)]
    assert sum(len(r) for r in reported) == len(set().union(*reported)), "a trial was reported by two workers"
    assert set().union(*reported) == finished
    by_number = {t.number: t for t in trials}
    assert by_number[killed].state == optuna.trial.TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].state in sweep.FINISHED
    # The retry repeats whatever values the killed trial had drawn (maybe none yet: then it draws new ones).
    assert by_number[killed].params.items() <= retries[0].params.items()

    folder = out / "sweeps" / "shared"
    cfg = load_config(folder / "best_params.json")
    assert cfg.selection == "inner"
    final = json.loads((folder / "final_evaluation.json").read_text())
    study = optuna.load_study(study_name="shared", storage=study_storage)
    assert final["trial"] == study.best_trial.number and final["folds"] == 2
    assert 0 <= final["accuracy_mean"] <= 1
    assert len((folder / "trials.csv").read_text().strip().splitlines()) == len(trials) + 1
    assert (folder / "optimization_history.png").is_file()


@pytest.mark.slow
def test_two_workers_share_a_journal_file_and_survive_a_killed_one(setup, tmp_path):
    journal = tmp_path / "sweeps" / "shared" / "journal.log"
    journal.parent.mkdir(parents=True)
    journal.touch()
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    two_workers_then_a_kill(setup, tmp_path, None, storage)


# --- a throwaway PostgreSQL server ---------------------------------------------------------------------------

def postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


@pytest.fixture(scope="module")
def postgres_url():
    """A PostgreSQL server on a private Unix socket in a temporary folder. Under CI=true a server that
    cannot start fails the tests instead of skipping them (`make test` installs the package as root)."""
    def unavailable(why: str):
        (pytest.fail if CI else pytest.skip)(why)

    bindir = postgres_bin()
    if bindir is None:
        unavailable("PostgreSQL is not installed (no initdb): `apt-get install postgresql`, as `make test` does as root")
    # Short path under /tmp: a socket's path is limited to ~100 characters.
    root = Path(tempfile.mkdtemp(prefix="aus-pg-"))
    as_user = []
    if os.geteuid() == 0:  # the server refuses to run as root
        user = "postgres" if shutil.which("runuser") and _has_user("postgres") else "nobody"
        shutil.chown(root, user)
        as_user = ["runuser", "-u", user, "--"]
    data, log = root / "data", root / "server.log"
    ctl = [*as_user, str(bindir / "pg_ctl"), "-D", str(data)]
    try:
        subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                        "--no-sync"], check=True, capture_output=True, text=True, timeout=120)
        subprocess.run([*ctl, "-l", str(log), "-w", "-t", "60", "-o",
                        f"-k {root} -p 5432 -c listen_addresses='' -c fsync=off", "start"],
                       check=True, capture_output=True, text=True, timeout=120)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", "") or ""
        server_log = log.read_text() if log.is_file() else ""
        shutil.rmtree(root, ignore_errors=True)
        unavailable(f"the throwaway PostgreSQL server did not start: {exc}\n{detail}\n{server_log}")
    yield f"postgresql://postgres@/postgres?host={root}&port=5432"
    subprocess.run([*ctl, "-m", "immediate", "stop"], capture_output=True, timeout=60)
    shutil.rmtree(root, ignore_errors=True)


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.mark.slow
def test_two_workers_share_a_postgresql_study_and_survive_a_killed_one(setup, tmp_path, postgres_url):
    two_workers_then_a_kill(setup, tmp_path, postgres_url, sweep.open_storage(postgres_url, tmp_path))


@pytest.mark.slow
def test_notebook_05_runs_a_short_sweep_and_shows_the_outer_fold_figure(setup, tmp_path, monkeypatch):
    from aus_lib.notebooks import run_notebook

    # The kernel is a child process: it reads these at import.
    monkeypatch.setenv("AUS_OUTPUTS", str(tmp_path))
    monkeypatch.setenv("AUS_CACHE_DIR", str(tmp_path / "cache"))
    # Relative to the repository root, as a user gives them (the kernel runs in notebooks/).
    from_root = {key: os.path.relpath(setup[name], REPO_ROOT)
                 for key, name in (("space_file", "space"), ("base_params", "base"), ("folds_dir", "folds"))}
    run_notebook("05_sweep", tmp_path / "05.ipynb", {**from_root, "study": "nb", "n_trials": 2, "epochs": 2})
    assert "mean ± std over 2 outer folds" in (tmp_path / "05.ipynb").read_text()
    assert load_config(tmp_path / "sweeps" / "nb" / "best_params.json").selection == "inner"
