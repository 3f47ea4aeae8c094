"""The request fuzzer (issue 21): structure-aware mutations of every image
family the serving signatures meet (JPEG baseline and progressive, PNG,
GIF, BMP, WebP) and of tf.Examples (`request_fuzz`), each sent to a tiny
export in a memory-capped child (`request_memory`: a watchdog kills it
past KILL_MB). Every case must be answered, or refused with
InvalidArgumentError naming the item, within the budget: at most 2 CPU
seconds per image, and a peak at most the request's own bytes + 200 MB
above a normal photo's at the same batch size; and the model must still
give its answer to a normal photo afterwards. The budget is about decoding
and parsing, so the model is a tiny probe."""

import pytest

import export_probe
import request_fuzz
from alexnet_tf.data.labels import LabelMap
from alexnet_tf.serving import export

KILL_MB = 2500


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    labels = LabelMap.from_wnids(["n00000000", "n00000001", "n00000002"])
    return export.export_saved_model(export_probe.build_probe_model(3, 32), labels,
                                     str(tmp_path_factory.mktemp("fuzz_model")), warmup=False)


def run_and_check(exported, folder, batch):
    answer = request_fuzz.measure(exported, batch, folder, export.warmup_image_bytes(),
                                  kill_mb=KILL_MB)
    assert "killed" not in answer, f"memory child killed at {answer.get('rss_mb')} MB by " \
                                   f"{answer.get('killed_case')}"
    assert answer["returncode"] == 0 and answer["answers_after"], answer
    for result in answer["cases"]:
        case = f"{result['family']}/{result['mutation']}"
        assert not request_fuzz.over_budget(result), (case, request_fuzz.over_budget(result))
        error = result["error"]
        if error is not None:  # refused: one clean message naming the item
            assert error.startswith("InvalidArgumentError: "), (case, error)
            assert "image_bytes[0] " in error or "inputs[0] " in error, (case, error)
    return answer


def cheap_known_attacks(rng):
    """The known attacks at sizes that build in a second."""
    R = request_fuzz
    return [R.Case("jpeg_progressive", "300 tiny scans at 2048x2048", R.many_scans(rng, 300, 2048)),
            R.Case("png", "20 zTXt bombs", R.ztxt_bombs(rng, 20)),
            R.Case("png", "1-byte IDAT chunks", R.png_tiny_idats(rng)),
            R.Case("gif", "1x1 then 2000x2000", R.gif_huge_second_frame(rng, 2000)),
            R.Case("gif", "1x1 + 20 MB of extension blocks", R.gif_extension_bloat(rng, 20 << 20)),
            R.Case("example", "20000 features", R.example_many_fields(rng), "classify")]


def test_a_fixed_seed_run_stays_within_the_budget(exported, tmp_path):
    import numpy as np
    batch = [(case, 1) for case in cheap_known_attacks(np.random.default_rng(0))]
    batch += [(case, 1) for case in request_fuzz.cases(seed=0, count=21, known=False)]
    answer = run_and_check(exported, tmp_path, batch)
    families = {r["family"] for r in answer["cases"]}
    assert families == set(request_fuzz.FAMILIES)
    assert any(r["error"] is None for r in answer["cases"])  # some mutations still decode
    assert any(r["error"] is not None for r in answer["cases"])


@pytest.mark.slow
def test_a_long_run_with_the_full_size_attacks_stays_within_the_budget(exported, tmp_path):
    import numpy as np
    R = request_fuzz
    rng = np.random.default_rng(1)
    photo = R.valid("jpeg_baseline", rng, 400, 400)
    batch = [(case, 1) for case in R.cases(seed=1, count=210)]
    batch += [
        (R.Case("jpeg_progressive", "3300 tiny scans at 8192x8192", R.many_scans(rng, 3300, 8192)),
         1),
        (R.Case("gif", "1x1 + 200 MB of extension blocks", R.gif_extension_bloat(rng)), 1),
        (R.Case("example", "50 MB Example", R.example(photo + bytes(50 << 20)), "classify"), 1),
        (R.Case("example", "1.1 MB Example", R.example(photo + bytes(1100 << 10)), "classify"),
         256),
    ]
    run_and_check(exported, tmp_path, batch)
