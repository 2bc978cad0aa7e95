"""The clustered jobs `bench_scheduling` measures, loaded into its beats and workers via SCHEDULING_JOB_MODULES."""

from scheduling import scheduled

BENCH_JOBS = ("bench.scheduling.tick_a", "bench.scheduling.tick_b")


@scheduled(every_seconds=1, name=BENCH_JOBS[0])
def tick_a() -> None:
    """Does nothing: the figure is how late it starts."""


@scheduled(every_seconds=1, name=BENCH_JOBS[1])
def tick_b() -> None:
    """A second job on the same ticks, so two occurrences compete each second."""
