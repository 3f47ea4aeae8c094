"""Producing every shard: in this process, or in worker processes forked
from a fork server.

The fork server imports the shard writer once and forks every worker from
that clean process: no per-worker import, and no fork of a parent whose
threads (a user's TensorFlow runtime, say) may be running. Both die
with the build (`data_prep.lifeline`). Workers only write `.tmp` files; this
process publishes each shard as its result arrives (`writer.publish`).

The fork server is multiprocessing's own, started from the lasting thread
(`lifeline.on_lasting_thread`), whichever thread runs the build: the kernel
ties its death signal to the thread that started it. One that user code
started before the first build (without this preload) is used as it is: its
workers load the writer themselves and die with it, not with the build.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import multiprocessing
import multiprocessing.forkserver
import os
import signal

from data_prep import lifeline, writer
from data_prep.progress import Progress


def _start_fork_server() -> None:
    """Starts the fork server (if not running) with this process's pid in its
    environment (`lifeline.announced`); on the lasting thread only. That
    thread blocks Ctrl-C's SIGINT (the main thread still gets it), and the
    fork server and its workers inherit the mask: the terminal sends SIGINT to
    the whole process group, and the build alone must act on it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    with lifeline.announced():
        multiprocessing.forkserver.ensure_running()


def run_tasks(tasks: list[writer.ShardTask], num_workers: int,
              progress: Progress) -> list[writer.ShardResult]:
    """Every task's result, published; results lose their per-file lists as
    they arrive (they stay on disk in the `.parts` records), so this
    process's memory does not grow with them."""
    if num_workers == 1 or len(tasks) <= 1:
        results = []
        for task in tasks:
            try:
                results.append(_done(task, writer.produce_shard(task, progress.tick),
                                     progress))
            except BaseException:  # Ctrl-C: the shard stays unpublished, its .tmp goes
                _remove_tmp([task])
                raise
        return results
    return _in_workers(tasks, num_workers, progress)


def _in_workers(tasks: list[writer.ShardTask], num_workers: int,
                progress: Progress) -> list[writer.ShardResult]:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["data_prep.forkserver_preload"])
    lifeline.on_lasting_thread(_start_fork_server)
    counter = context.Value("q", 0)
    results = []
    with concurrent.futures.ProcessPoolExecutor(
            max_workers=min(num_workers, len(tasks)), mp_context=context,
            initializer=writer.init_worker, initargs=(counter,)) as pool:
        pending = {pool.submit(writer.produce_shard, t, writer.count_image): t
                   for t in tasks}
        try:
            while pending:
                done, _ = concurrent.futures.wait(
                    pending, timeout=0.5, return_when=concurrent.futures.FIRST_COMPLETED)
                progress.update(counter.value)
                for future in done:
                    task = pending.pop(future)
                    results.append(_done(task, future.result(), progress))
        except BaseException:  # Ctrl-C (or an error): stop every worker now
            # Not future.cancel(): Python 3.11's pool, finding its workers
            # killed, fails every pending future and dies on a cancelled one.
            _kill_workers(pool)
            _remove_tmp(tasks)  # pending, or interrupted while being published
            raise
    return results


def _kill_workers(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """Kills the pool's workers (they ignore SIGINT) and waits for them, so
    that none finishes a shard after the build stopped: a worker's shard is a
    `.tmp` file that only this process publishes. Python 3.14 has
    `kill_workers()`; before it, the pool's process table."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        with contextlib.suppress(OSError, ValueError):
            process.kill()
    for process in processes:
        with contextlib.suppress(OSError, ValueError, AssertionError):
            process.join(timeout=10)


def _remove_tmp(tasks) -> None:
    """The `.tmp` files of shards not published (a published one has none;
    the next run would remove them too). Only once no worker is writing."""
    for task in tasks:
        with contextlib.suppress(OSError):
            os.remove(task.path + writer.TMP_SUFFIX)


def _done(task: writer.ShardTask, result: writer.ShardResult,
          progress: Progress) -> writer.ShardResult:
    writer.publish(task, result)
    progress.shard_done(len(task.plan.files), result.kept)
    return dataclasses.replace(result, converted=[])
