"""Builds from threads, and beside a fork server that is not ours: real
processes, a user's program each.

Linux's PR_SET_PDEATHSIG fires when the *thread* that started a process
ends, not its process: a build run in a thread used to leave its fork server
armed against that thread, so the thread's end killed it and the next build
of the process failed (EOFError / BrokenProcessPool). And a fork server
already started by user code (without our preload) made every worker exit
silently at start. The build now starts the fork server only from a thread
that lasts as long as the process (`data_prep.lifeline`), and a fork server
without the preload is used as it is.

The user's program is `main` here, run in a process that the module's
build server (tests/build_probe.py) forks once the build's modules are
imported: one import for both programs instead of one each. The
fork servers and workers each program's builds start are fresh, as in any
program (their `__main__` is tests/build_probe.py, whose hook on conversion
holds nothing unless a build asks). The tests read the JSON lines it prints.
"""

import json
import os
import signal
import sys
import threading
import time

FORKSERVER_MARK = "multiprocessing.forkserver"


# ----------------------------------------------------------- the program


def _build(input_dir: str, out: str, train_shards: int = 4) -> dict:
    """A 2-worker build: its shards come from the fork server's workers."""
    from data_prep import build_tfrecords

    try:
        with open(os.devnull, "w") as log:
            summary = build_tfrecords.build(build_tfrecords.BuildConfig(
                input_dir=input_dir, output_dir=out, image_size=32, num_workers=2,
                min_images_per_worker=0, overwrite=True, train_shards=train_shards),
                log=log)
        return {"ok": True, "written": summary.written}
    except BaseException as e:  # noqa: BLE001 - reported to the test
        return {"ok": False, "error": f"{type(e).__name__}: {e}"[:300]}


def _in_thread(job) -> dict:
    box = {}
    thread = threading.Thread(target=lambda: box.update(job()))
    thread.start()
    thread.join()
    return box


def _server_pid():
    import multiprocessing.forkserver

    return multiprocessing.forkserver._forkserver._forkserver_pid


def _program_sequence(input_dir: str, out: str) -> dict:
    """A build in a thread, then one in the main thread, then two in two
    threads at once; and what ran inside the fork server's workers."""
    import concurrent.futures
    import multiprocessing.forkserver

    from data_prep import lifeline

    report = {"thread": _in_thread(lambda: _build(input_dir, f"{out}/t"))}
    report["server_after_thread"] = _server_pid()
    report["main"] = _build(input_dir, f"{out}/m")
    report["server_after_main"] = _server_pid()
    barrier, both = threading.Barrier(2), {}

    def parallel(name):
        barrier.wait()
        started = time.monotonic()
        both[name] = dict(_build(input_dir, f"{out}/{name}"), started=started,
                          ended=time.monotonic())

    threads = [threading.Thread(target=parallel, args=(n,)) for n in ("p1", "p2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report.update(both)
    report["server_after_parallel"] = _server_pid()
    context = multiprocessing.get_context("forkserver")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as workers:
        report["worker_thinks_it_is_the_fork_server"] = workers.submit(
            lifeline.in_forkserver_preload).result()
    report["here_thinks_it_is_the_fork_server"] = lifeline.in_forkserver_preload()
    return report


def _program_foreign(input_dir: str, out: str) -> dict:
    """User code runs a forkserver pool first (multiprocessing's fork server,
    with the user's preload, not ours), then two builds, then its pool again.
    The user's preload is numpy: the builds' workers load the writer
    themselves."""
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["numpy"])
    with ctx.Pool(1) as p:
        before = p.apply(os.getpid)
    report = {"user_pool_before": before > 0}
    report["build0"] = _build(input_dir, f"{out}/0")
    report["build1"] = _build(input_dir, f"{out}/1")
    with ctx.Pool(1) as p:
        report["user_pool_after"] = p.apply(os.getpid) > 0
    return report


def _program_sequence_then_kill(input_dir: str, slow_dir: str, out: str) -> None:
    """The sequence, its report printed; then a long build in another
    thread, during which the test kills this process."""
    print(json.dumps(_program_sequence(input_dir, out)), flush=True)
    second = _in_thread(lambda: _build(slow_dir, f"{out}/slow", train_shards=16))
    print(json.dumps({"second_ended": second}), flush=True)


def main(mode: str, *args: str) -> None:
    if mode == "sequence-then-kill":
        _program_sequence_then_kill(*args)
    else:
        print(json.dumps(_program_foreign(*args)), flush=True)


# ---------------------------------------------------------------- the tests

import psutil  # noqa: E402
import pytest  # noqa: E402

from build_processes import alive, build_server, published, session, wait_for  # noqa: E402,F401
from tree_data import write_linked_tree, write_two_class_tree  # noqa: E402

pytestmark = [pytest.mark.slow,  # programs in processes of their own, building
              pytest.mark.skipif(not sys.platform.startswith("linux"),
                                 reason="forkserver and PR_SET_PDEATHSIG as on Linux")]


@pytest.fixture(scope="module")
def tiny_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    write_two_class_tree(root, 6)
    return root


@pytest.fixture(scope="module")
def slow_tree(tmp_path_factory):
    return write_linked_tree(tmp_path_factory.mktemp("slow"))


def _start(server, *args):
    """The user's program, `main(*args)`, in a process the server forks."""
    return server.call("test_data_prep_threads", "main", *map(str, args))


def _lines(path) -> list[str]:
    with open(path) as f:
        return [line for line in f.read().splitlines(keepends=True) if line.endswith("\n")]


def test_a_build_beside_a_fork_server_started_by_user_code(build_server, tiny_tree, tmp_path):
    program, stdout = _start(build_server, "foreign", tiny_tree, tmp_path)
    with session(program):
        assert program.wait(timeout=240) == 0, program.stderr.read()[-3000:]
    report = json.loads(_lines(stdout)[-1])
    assert report["user_pool_before"] and report["user_pool_after"], report
    assert report["build0"] == {"ok": True, "written": 12}, report
    assert report["build1"] == {"ok": True, "written": 12}, report


def test_builds_from_threads_then_the_main_thread_then_two_at_once_then_a_kill(
        build_server, tiny_tree, slow_tree, tmp_path):
    """Builds in a thread, in the main thread, in two threads at once, all
    from the fork server the first thread started; then kill -9 of the
    process during a build in yet another thread leaves no fork server,
    worker or tracker alive."""
    program, stdout = _start(build_server, "sequence-then-kill", tiny_tree, slow_tree, tmp_path)
    with session(program):
        wait_for(lambda: _lines(stdout) or program.poll() is not None, 240,
                 "the program's report")
        assert _lines(stdout), program.stderr.read()[-3000:]
        report = json.loads(_lines(stdout)[0])
        for name in ("thread", "main", "p1", "p2"):
            assert report[name] == {**report[name], "ok": True, "written": 12}, report
        # the two parallel builds did run at the same time
        assert max(report["p1"]["started"], report["p2"]["started"]) < min(
            report["p1"]["ended"], report["p2"]["ended"]), report
        # one fork server, still up after the thread that first used it ended
        assert report["server_after_thread"] == report["server_after_main"] == \
            report["server_after_parallel"] is not None, report
        assert report["worker_thinks_it_is_the_fork_server"] is False
        assert report["here_thinks_it_is_the_fork_server"] is False

        wait_for(lambda: published(tmp_path / "slow") or program.poll() is not None, 120,
                 "a shard of the build in another thread")
        assert program.poll() is None, f"the program ended before it was killed: {report}"
        helpers = psutil.Process(program.pid).children(recursive=True)
        servers = [p for p in helpers if p.ppid() == program.pid
                   and FORKSERVER_MARK in " ".join(p.cmdline())]
        assert [p.pid for p in servers] == [report["server_after_thread"]]  # the first one
        assert len(helpers) >= 3  # fork server, two workers (and the resource tracker)
        os.kill(program.pid, signal.SIGKILL)
        program.wait(timeout=10)
        wait_for(lambda: not any(alive(p) for p in helpers), 5,
                 lambda: f"helpers to exit: {[p.pid for p in helpers if alive(p)]}")
