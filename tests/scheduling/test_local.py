"""A process's local-job runner: each job once per tick, one catch-up at most, reloads when the marker moves."""

from datetime import datetime, timedelta, timezone

from scheduling import current_run
from scheduling.local import LocalJobRunner
from scheduling.registry import ScheduledJob
from scheduling.schedules import EverySeconds

T0 = datetime(2024, 5, 1, 10, 0, 0, tzinfo=timezone.utc)


class Recorder:
    def __init__(self):
        self.ticks: list[datetime] = []

    def __call__(self) -> None:
        self.ticks.append(current_run().tick)


def local_job(name: str, function, seconds: int = 10) -> ScheduledJob:
    return ScheduledJob(name, function, EverySeconds(seconds), clustered=False, transactional=False)


def runner_with(jobs: list[ScheduledJob], marker: list[int]) -> LocalJobRunner:
    return LocalJobRunner(load_jobs=lambda: list(jobs), change_marker=lambda: marker[0])


def test_a_local_job_runs_once_per_tick_starting_with_the_next_one():
    recorder = Recorder()
    runner = runner_with([local_job("cache.expire", recorder)], [1])
    runner.refresh(T0 + timedelta(seconds=3))

    assert runner.run_due(T0 + timedelta(seconds=3)) == []
    assert runner.run_due(T0 + timedelta(seconds=10)) == ["cache.expire"]
    assert runner.run_due(T0 + timedelta(seconds=15)) == []
    assert runner.run_due(T0 + timedelta(seconds=20)) == ["cache.expire"]
    assert recorder.ticks == [T0 + timedelta(seconds=10), T0 + timedelta(seconds=20)]


def test_after_a_stall_a_local_job_catches_up_once():
    recorder = Recorder()
    runner = runner_with([local_job("cache.expire", recorder)], [1])
    runner.refresh(T0)

    runner.run_due(T0 + timedelta(seconds=95))

    assert recorder.ticks == [T0 + timedelta(seconds=90)]


def test_a_failing_local_job_does_not_stop_the_others():
    def broken() -> None:
        raise RuntimeError("boom")

    recorder = Recorder()
    runner = runner_with([local_job("a.broken", broken), local_job("b.fine", recorder)], [1])
    runner.refresh(T0)

    assert runner.run_due(T0 + timedelta(seconds=10)) == ["a.broken", "b.fine"]
    assert recorder.ticks == [T0 + timedelta(seconds=10)]


def test_jobs_are_reloaded_only_when_the_change_marker_moves():
    first, second = Recorder(), Recorder()
    jobs, marker = [local_job("a.first", first)], [1]
    runner = runner_with(jobs, marker)
    runner.refresh(T0)

    jobs[:] = [local_job("a.first", first), local_job("b.second", second)]
    runner.refresh(T0 + timedelta(seconds=10))
    runner.run_due(T0 + timedelta(seconds=10))
    assert (len(first.ticks), len(second.ticks)) == (1, 0)

    marker[0] = 2
    runner.refresh(T0 + timedelta(seconds=12))
    runner.run_due(T0 + timedelta(seconds=20))
    assert (len(first.ticks), len(second.ticks)) == (2, 1)


def test_a_paused_or_removed_job_stops_running_at_the_next_reload():
    recorder, jobs, marker = Recorder(), [], [1]
    jobs.append(local_job("cache.expire", recorder))
    runner = runner_with(jobs, marker)
    runner.refresh(T0)

    jobs.clear()
    marker[0] = 2
    runner.refresh(T0 + timedelta(seconds=5))

    assert runner.run_due(T0 + timedelta(seconds=30)) == []
    assert recorder.ticks == []


def test_the_thread_sleeps_until_the_next_tick():
    runner = runner_with([local_job("a.fast", Recorder(), seconds=2), local_job("b.slow", Recorder(), seconds=60)], [1])
    runner.refresh(T0)

    assert runner.seconds_until_next_tick(T0 + timedelta(seconds=1.25)) == 0.75
