"""`qcompile tune`: MetaSchedule search with the XGBoost cost model over a model's kernels, records kept on disk."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import signal
import time
from pathlib import Path

from .. import driver, paths, progress
from ..errors import QcompileError
from ..lower import compiler, intrinsics
from ..progress import SILENT, Reporter
from ..runtime.deploy.remote import RemoteSpec
from . import library, pick, records, transfer


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    compile: driver.CompileRequest  # model, target, precision and quantization, as `qcompile build` takes them
    trials: int = 2000  # measured candidates in all, shared among kernels by MetaSchedule's gradient scheduler
    minutes: float | None = None  # stop after this long (after the batch being measured), whichever comes first
    folder: Path | None = None  # the records folder to write (and continue from); default: the model's under root
    root: Path | None = None  # root of the records folders; default: the user's (`paths.user_records`)
    remote: RemoteSpec | None = None  # measure on a board behind a TVM RPC tracker instead of this machine
    cores: int | None = None  # cores the kernels may use (default: the target's num-cores, else this machine's)
    batch: int = 16  # candidates per kernel per round: Ctrl-C and --minutes take effect between batches
    untuned_only: bool = False  # tune only the kernels the records have no schedule for

    def __post_init__(self):
        if self.trials <= 0:
            raise QcompileError(f"{{trials}} must be positive, got {self.trials}")
        if self.minutes is not None and self.minutes <= 0:
            raise QcompileError(f"{{minutes}} must be positive, got {self.minutes}")
        if self.batch <= 0 or (self.cores is not None and self.cores <= 0):
            raise QcompileError("{batch} and {cores} must be positive")
        if self.remote is not None and not self.remote.tracker:
            raise QcompileError("tuning measures through a TVM RPC tracker: give {rpc_tracker} and {rpc_key}")


@dataclasses.dataclass(frozen=True)
class TuneResult:
    folder: Path
    tasks: int  # kernels searched
    measured: int  # candidates measured in this run (schedules transferred from other kernels included)
    stored: int  # candidates in the records after it
    seconds: float
    stopped_early: bool  # by Ctrl-C or --minutes


class _Stop(Exception):
    """Raised between measurement batches to end the search; everything measured is already stored."""


def tune(config: TuneConfig, reporter: Reporter = SILENT) -> TuneResult:
    # MetaSchedule prints its per-task tables on stdout; they stay in the records folder's logs/, the bar shows progress
    # within light_package: MetaSchedule's TuneContext imports every target's tensor intrinsics otherwise (15-80 s)
    with progress.logger_level("tvm.s_tir.meta_schedule", logging.WARNING), intrinsics.light_package():
        return _tune(config, reporter)


def _tune(config: TuneConfig, reporter: Reporter) -> TuneResult:
    from tvm.s_tir import meta_schedule as ms

    spec = config.compile.target
    spec.check_toolchain()
    lowered = driver.lower_model(config.compile, reporter)
    mod, sidecar = lowered.mod, lowered.sidecar
    folder = config.folder or records.folder(config.root or paths.user_records(), config.compile.model,
                                             sidecar.model_sha256, sidecar.precision, spec)
    cores = config.cores or int(spec.target.get("num-cores", 0)) or os.cpu_count()
    target = _tuning_target(spec, cores)
    with reporter.step("extracting tuning tasks"):
        kernels = compiler.lower_kernels(mod, spec, reporter)
        tasks = [task for task in ms.relax_integration.extract_tasks(kernels, target)
                 if not task.dispatched[0]["main"].attrs.get("tirx.is_scheduled", False)]
    if not tasks:
        raise QcompileError("the model has no kernels to tune")
    records.write_target(folder, spec)
    database = records.open_database(folder, spec, create=True)
    before = records.count(folder)
    start = time.monotonic()
    # a --minutes deadline leaves room for the cold re-timing that follows the search (on CPUs)
    reserve = _PICK_SECONDS_PER_KERNEL * len(tasks) if spec.kind == "llvm" else 0
    deadline = None if config.minutes is None else start + max(config.minutes * 60 - reserve, config.minutes * 30)
    builder = ms.builder.LocalBuilder(f_build=_build_candidate, f_export=functools.partial(_export_candidate, spec.cc),
                                      max_workers=cores, timeout_sec=120, initializer=_ignore_interrupt)
    runner = _runner(config.remote, cores)
    unrecorded = [task for task in tasks
                  if database.query_tuning_record(task.dispatched[0], target, "main") is None]
    transferred = transfer.TransferResult(0, 0)
    # the libraries under the roots a build looks in, read (seconds of JSON) only where a kernel lacks a record
    shelves = library.found(records.RecordSource.default(config.root).roots, spec) if unrecorded else []
    if unrecorded and (before or shelves):
        libraries = [records.open_database(path, spec, create=False) for path in shelves]
        with reporter.step(f"trying stored schedules on the {len(unrecorded)} kernels with no record"):
            transferred = transfer.transfer([task.dispatched[0] for task in unrecorded], [database, *libraries],
                                            target, builder, runner)
        reporter.note(f"{transferred.kernels} of them got a record from a same-shaped kernel's schedule, this "
                      f"model's or the records library's ({transferred.measured} candidates measured)")
    extracted = tasks  # the kernels to search
    if config.untuned_only:
        extracted = [task for task in unrecorded
                     if database.query_tuning_record(task.dispatched[0], target, "main") is None]
        if not extracted:
            reporter.note(f"every kernel has a tuning record in {folder}")
            picked = _pick(tasks, set(), database, folder, target, config, builder, cores, reporter)
            return _finish(folder, 0, transferred.measured + picked.measured, time.monotonic() - start, False,
                           reporter, config)
    worth = _worth_searching(extracted, config.minutes, cores)
    if len(worth) < len(extracted):
        reporter.note(f"--minutes {config.minutes:g} leaves no time for a search round over all {len(extracted)} "
                      f"kernels: searching the {len(worth)} with the most work, the others keep their stored or "
                      "default schedules")
        extracted = worth
    reporter.note(f"{len(extracted)} kernels, {config.trials} trials, records in {folder}"
                  + (f" (continuing from {before} stored)" if before else ""))
    # a smaller population than MetaSchedule's default (512): on a few cores the search itself, not the
    # measurements, would otherwise take most of the time of each batch
    strategy = ms.search_strategy.EvolutionarySearch(population_size=256, genetic_num_iters=3)
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        extracted, work_dir=str(folder / "logs"), strategy=strategy, num_threads=cores)
    with progress.native_stderr_to(folder / "logs" / "native.log"):
        watcher = _Progress(config.trials, [c.task_name for c in contexts], weights, deadline, reporter)
        with _stop_on_interrupt(watcher, reporter):
            try:
                ms.tune_tasks(
                    tasks=contexts, task_weights=weights, work_dir=str(folder / "logs"),
                    max_trials_global=config.trials, num_trials_per_iter=min(config.batch, config.trials),
                    builder=builder, runner=runner, database=database, cost_model="xgb",
                    measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), watcher.callback()],
                )
            except Exception:  # a stop request (_Stop) comes back through TVM's FFI as one of its own errors
                if not watcher.stopped:
                    raise
            finally:
                watcher.close()
    searched = {id(task) for task, best in zip(extracted, watcher.best) if best != float("inf")}
    picked = _pick(tasks, searched, database, folder, target, config, builder, cores, reporter)
    return _finish(folder, len(contexts), transferred.measured + watcher.measured + picked.measured,
                   time.monotonic() - start, watcher.stopped, reporter, config)


# MetaSchedule's first round generates and builds one batch for every kernel before it measures any: about 20 s a
# kernel on 2 cores (ResNet-50's 27 kernels: 8 min; RESULTS, fourteenth session), in core-seconds
_FIRST_ROUND_CORE_SECONDS = 40
# the cold re-timing of one kernel's finalists (ResNet-50's 27: 84 s, same session)
_PICK_SECONDS_PER_KERNEL = 3


def _worth_searching(tasks, minutes: float | None, cores: int) -> list:
    """The kernels to search: all of them, or under a `minutes` budget whose half would not pay for a first round
    over all, as many as it pays for, the most work (estimated flops × calls) first; the search's value is there,
    and the cold re-timing still gives the others their fastest stored or default schedule."""
    from tvm.s_tir.analysis import estimate_tir_flops

    fit = len(tasks) if minutes is None else max(1, int(minutes * 60 / 2 * cores / _FIRST_ROUND_CORE_SECONDS))
    if len(tasks) <= fit:
        return tasks
    work = [estimate_tir_flops(task.dispatched[0]) * task.weight for task in tasks]
    chosen = sorted(range(len(tasks)), key=lambda i: (-work[i], i))[:fit]
    return [tasks[i] for i in sorted(chosen)]


def _pick(tasks, searched, database, folder, target, config, builder, cores, reporter) -> pick.PickResult:
    """Re-time cold (`pick.py`) the kernels the search measured this run (`searched`: their ids) and those that
    have no pick yet."""
    if target.kind.name != "llvm":  # the cold timing flushes CPU caches
        return pick.PickResult(0, 0)
    picks = records.open_database(folder / records.PICKS, config.compile.target, create=True)
    kernels = [task.dispatched[0] for task in tasks
               if id(task) in searched or picks.query_tuning_record(task.dispatched[0], target, "main") is None]
    if not kernels:
        return pick.PickResult(0, 0)
    with reporter.step(f"re-timing the best schedules of {len(kernels)} kernels with their weights out of the "
                       f"caches"):
        result = pick.pick(kernels, database, picks, target, builder, _runner(config.remote, cores, cold=True))
    reporter.note(f"{result.kernels} kernels got a pick ({result.measured} candidates timed)")
    return result


def _finish(folder, tasks, measured, seconds, stopped, reporter, config: TuneConfig) -> TuneResult:
    result = TuneResult(folder, tasks, measured, records.count(folder), seconds, stopped)
    if measured:
        records.add_tuning_time(folder, result.measured, result.seconds)
    if measured and config.folder is None:  # a folder of the user's choosing (--tuning-log) stays on its own
        shared = library.folder(config.root or paths.user_records(), config.compile.target)
        added = library.add(shared, folder, config.compile.target)
        reporter.note(f"records library {shared}: {added} kernels' best schedules added")
    reporter.note(f"tuned {result.measured} candidates in {result.seconds / 60:.1f} min"
                  f"{' (stopped early)' if result.stopped_early else ''}; {result.stored} stored in {folder}")
    return result


def _tuning_target(spec, cores: int):
    import tvm

    return tvm.target.Target({**spec.target, "num-cores": cores})


def _build_candidate(mod, target, _params):
    """MetaSchedule's default builder function, less its `import tvm.s_tir.tensor_intrin`: a fresh worker
    process would spend 15-80 s on it (past the build timeout), and the candidates are already tensorized."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)


def _export_candidate(cc, module) -> str:
    """A shared library (cross-linked for a board): what both the local runner and an RPC server load."""
    import tempfile

    path = os.path.join(tempfile.mkdtemp(prefix="qcompile-tune-"), "candidate.so")
    module.export_library(path, cc=cc) if cc else module.export_library(path)
    return path


def _runner(remote: RemoteSpec | None, cores: int, cold: bool = False):
    """Where candidates are measured: a worker process on this machine running them on `cores` threads, or a
    board's RPC server (whose thread pool is the board's own).

    The search times a candidate warm, a few runs in a row (fast, and stable enough to rank); `cold` times ten
    single runs, each after every argument but the first (the input, which the layer before has just written) has
    been flushed from the CPU caches, as a layer's weights are in the running network (`pick.py`)."""
    from tvm.s_tir import meta_schedule as ms

    if cold:
        evaluator = ms.runner.EvaluatorConfig(number=1, repeat=10, min_repeat_ms=0, enable_cpu_cache_flush=True)
    else:
        evaluator = ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=40, enable_cpu_cache_flush=False)
    if remote is None:
        return ms.runner.LocalRunner(timeout_sec=60, evaluator_config=evaluator,
                                     initializer=functools.partial(_measuring_worker, cores))
    rpc = ms.runner.RPCConfig(tracker_host=remote.host, tracker_port=remote.port, tracker_key=remote.key,
                              session_timeout_sec=120)
    return ms.runner.RPCRunner(rpc_config=rpc, evaluator_config=evaluator, max_workers=1,
                               initializer=_ignore_interrupt)


def _ignore_interrupt() -> None:
    """Worker processes share the terminal's process group: Ctrl-C must stop the search, not kill them mid-batch."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _measuring_worker(cores: int) -> None:
    """Start of each local measuring process (and of its replacement after a timeout), before it runs anything.
    TVM sizes its thread pool from TVM_NUM_THREADS on first use; left alone it takes half the logical CPUs on x86
    (one thread on a 2-vCPU machine), and every schedule would be chosen for fewer threads than the library runs on."""
    _ignore_interrupt()
    os.environ["TVM_NUM_THREADS"] = str(cores)


class _Progress:
    """A progress bar over measured candidates, with each kernel's best latency; asks the search to stop."""

    def __init__(self, trials, names, weights, deadline, reporter: Reporter):
        self.names, self.weights, self.deadline = names, weights, deadline
        self.best = [float("inf")] * len(names)
        self.measured = 0
        self.stop_requested = self.stopped = False
        self.bar = reporter.bar(total=trials, unit="trial", desc="tuning", dynamic_ncols=True)

    def callback(self):
        from tvm.ir.utils import derived_object
        from tvm.s_tir import meta_schedule as ms

        watcher = self

        @derived_object
        class _Callback(ms.measure_callback.PyMeasureCallback):
            def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
                watcher.update(task_id, runner_results)

        return _Callback()

    def update(self, task_id, runner_results) -> None:
        for result in runner_results:
            if result.error_msg is None and result.run_secs:
                mean = sum(float(s) for s in result.run_secs) / len(result.run_secs)
                self.best[task_id] = min(self.best[task_id], mean)
        self.measured += len(runner_results)
        self.bar.update(len(runner_results))
        known = [b * w for b, w in zip(self.best, self.weights) if b != float("inf")]
        self.bar.set_postfix_str(f"kernel {task_id + 1}/{len(self.names)} best {self.best[task_id] * 1e3:.3f} ms, "
                                 f"tuned kernels sum {sum(known) * 1e3:.2f} ms")
        if self.stop_requested or (self.deadline is not None and time.monotonic() > self.deadline):
            self.stopped = True
            raise _Stop()

    def close(self) -> None:
        self.bar.close()


@contextlib.contextmanager
def _stop_on_interrupt(watcher: _Progress, reporter: Reporter):
    """First Ctrl-C: finish the batch being measured, keep it, stop. A second one interrupts at once."""

    def first(signum, frame):
        watcher.stop_requested = True
        reporter.note("stopping after the batch being measured and the re-timing of the best schedules "
                      "(Ctrl-C again to abort now)")
        signal.signal(signal.SIGINT, previous)

    previous = signal.signal(signal.SIGINT, first)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
