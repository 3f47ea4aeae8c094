"""The tf.data pipelines over tiny synthetic TFRecord shards.

Every record's image is a flat grey of value 20 * id, its label is the id, so
a label can be checked against the image it travels with.
"""

import io
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from alexnet_tf.data import dataset_stats, input_pipeline, records

SIZE = 256
TRAIN_SHARDS, PER_SHARD = 3, 4
NUM_TRAIN = TRAIN_SHARDS * PER_SHARD
NUM_VALIDATION = 7  # 2 shards of 4 and 3: a partial last batch


def grey_jpeg(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((SIZE, SIZE, 3), value, np.uint8)).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def write_split(data_dir, prefix, ids_per_shard, label_offset=0):
    for index, ids in enumerate(ids_per_shard):
        path = data_dir / records.shard_name(prefix, index, len(ids_per_shard))
        with tf.io.TFRecordWriter(str(path)) as writer:
            for i in ids:
                writer.write(records.serialize(records.ImageRecord(
                    encoded=grey_jpeg(20 * i), height=SIZE, width=SIZE,
                    label=i + label_offset, synset=f"n{i:08d}", text=f"class {i}",
                    filename=f"img{i}.JPEG")))


def make_data(data_dir, label_offset=0):
    data_dir.mkdir(parents=True, exist_ok=True)
    train = [list(range(s * PER_SHARD, (s + 1) * PER_SHARD)) for s in range(TRAIN_SHARDS)]
    write_split(data_dir, records.TRAIN_PREFIX, train, label_offset)
    write_split(data_dir, records.VALIDATION_PREFIX, [[0, 1, 2, 3], [4, 5, 6]], label_offset)
    return data_dir


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("records"))


def labels_of(dataset, batches):
    return np.concatenate([y.numpy() for _, y in dataset.take(batches)])


def assert_images_match_labels(images, labels):
    means = images.numpy().mean(axis=tuple(range(1, images.ndim)))
    np.testing.assert_allclose(means, 20.0 * labels.numpy(), atol=2.0)


def context(pipelines, pipeline_id):
    return tf.distribute.InputContext(num_input_pipelines=pipelines,
                                      input_pipeline_id=pipeline_id,
                                      num_replicas_in_sync=pipelines)


def train_dataset(data_dir, **overrides):
    """Batches of 5, seed 0, the label range checked; lighting off unless asked."""
    return input_pipeline.make_train_dataset(data_dir, 5, **{
        "seed": 0, "shuffle_buffer": 8, "lighting_stddev": 0.0, "num_classes": NUM_TRAIN,
        **overrides})


def test_train_batches_shapes_and_labels(data_dir):
    dataset = train_dataset(data_dir)
    features, labels_spec = dataset.element_spec
    # uint8 crops (drop_remainder: a static batch) and their lighting shifts.
    assert features[input_pipeline.IMAGE].shape.as_list() == [5, 224, 224, 3]
    assert features[input_pipeline.IMAGE].dtype == tf.uint8
    assert features[input_pipeline.LIGHTING].shape.as_list() == [5, 3]
    assert labels_spec.dtype == tf.int32
    seen = []
    for features, labels in dataset.take(6):  # 30 images > 12 records: it repeats
        images = input_pipeline.training_images(features)
        assert images.dtype == tf.float32 and images.shape == (5, 224, 224, 3)
        np.testing.assert_array_equal(images, tf.cast(features[input_pipeline.IMAGE],
                                                      tf.float32))  # lighting off
        assert_images_match_labels(images, labels)
        seen.extend(labels.numpy())
    assert set(seen) == set(range(NUM_TRAIN))


def test_train_lighting_shifts_colour_per_image(data_dir):
    stats = dataset_stats.RGBStats()
    plain = train_dataset(data_dir, crop_size=32)
    lit = train_dataset(data_dir, crop_size=32, rgb_stats=stats, lighting_stddev=0.1)
    plain_features, plain_labels = next(iter(plain))
    lit_features, lit_labels = next(iter(lit))
    np.testing.assert_array_equal(plain_labels, lit_labels)  # same order: same seed
    np.testing.assert_array_equal(plain_features[input_pipeline.LIGHTING], 0.0)
    shifts = lit_features[input_pipeline.LIGHTING].numpy()
    assert np.abs(shifts).max() > 0.1
    # The alphas recovered from shift = eigvec @ (alpha * eigval) are of
    # N(0, 0.1)'s size (a shift on another scale would give far larger ones).
    alpha = np.linalg.solve(np.array(stats.eigvec), shifts.T).T / np.array(stats.eigval)
    assert np.abs(alpha).max() < 1.0
    # training_images adds one RGB shift per image, the same at every pixel
    # (crops of a flat image).
    shift = (input_pipeline.training_images(lit_features)
             - input_pipeline.training_images(plain_features)).numpy()
    np.testing.assert_allclose(shift, np.broadcast_to(shifts[:, None, None, :], shift.shape),
                               atol=1e-3)


def test_rgb_stats_are_read_from_stats_json(tmp_path):
    stats = dataset_stats.RGBStats((1.0, 2.0, 3.0), (9.0, 4.0, 1.0),
                                   ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)))
    (tmp_path / "stats.json").write_text(json.dumps({"rgb": dataset_stats.rgb_stats_to_json(stats)}))
    assert input_pipeline.resolve_rgb_stats(tmp_path) == stats
    assert input_pipeline.resolve_rgb_stats(tmp_path / "absent") == dataset_stats.RGBStats()


@pytest.fixture(scope="module")
def one_based(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("one_based"), label_offset=1)


def test_label_offset_reads_one_based_records(one_based):
    dataset = input_pipeline.make_eval_dataset(one_based, 4, label_offset=1,
                                               num_classes=NUM_VALIDATION, crop_size=32)
    np.testing.assert_array_equal(labels_of(dataset, 2), np.arange(NUM_VALIDATION))
    for images, labels in dataset:
        assert_images_match_labels(images, labels)


def test_label_out_of_range_names_the_record(one_based):
    dataset = input_pipeline.make_eval_dataset(one_based, 8, num_classes=NUM_VALIDATION,
                                               crop_size=32)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"(?s)label out of range.*label_offset=1.*img6.JPEG.*validation-00001"):
        next(iter(dataset))


@pytest.fixture(scope="module")
def validation_batches(data_dir):
    """The validation split in batches of 3, the one-crop view."""
    return list(input_pipeline.make_eval_dataset(data_dir, 3))


def test_eval_in_file_order_with_partial_batch(data_dir, validation_batches):
    batches = validation_batches
    assert [len(y) for _, y in batches] == [3, 3, 1]
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]),
                                  np.arange(NUM_VALIDATION))
    for images, labels in batches:
        assert images.shape[1:] == (224, 224, 3)
        assert_images_match_labels(images, labels)
    assert input_pipeline.make_eval_dataset(data_dir, 3, split="train").reduce(
        0, lambda n, batch: n + tf.shape(batch[1])[0]).numpy() == NUM_TRAIN


def test_ten_crops_shape_and_centre_crop(data_dir, validation_batches):
    ten = input_pipeline.make_eval_dataset(data_dir, 3, crops=10)
    assert ten.element_spec[0].shape.as_list() == [None, 10, 224, 224, 3]
    (ten_images, ten_labels), (one_images, one_labels) = next(iter(ten)), validation_batches[0]
    assert ten_images.shape == (3, 10, 224, 224, 3)
    np.testing.assert_array_equal(ten_labels, one_labels)
    np.testing.assert_array_equal(ten_images[:, 4], one_images)  # index 4 = centre
    with pytest.raises(ValueError, match="crops"):
        input_pipeline.make_eval_dataset(data_dir, 4, crops=5)


# 3 shards of 4: two pipelines shard by file (shards 0+2 and 1), five by record.
@pytest.mark.slow  # builds an eval and a train pipeline per worker, up to 10
@pytest.mark.parametrize("pipelines, part_sizes", [(2, [8, 4]), (5, [3, 3, 2, 2, 2])])
def test_per_worker_shards_are_disjoint_and_cover(data_dir, pipelines, part_sizes):
    small = dict(crop_size=32)  # the split is under test, not the images
    eval_parts, train_parts = [], []
    for i in range(pipelines):
        ctx = context(pipelines, i)
        eval_parts.append(labels_of(input_pipeline.make_eval_dataset(
            data_dir, 2 * pipelines, split="train", input_context=ctx, **small), 100))
        train = input_pipeline.make_train_dataset(
            data_dir, 2 * pipelines, seed=3, shuffle_buffer=1, input_context=ctx,
            lighting_stddev=0.0, **small)
        assert train.element_spec[1].shape[0] == 2  # per-replica batch
        train_parts.append(set(labels_of(train, 6).tolist()))  # 12 images: > 1 pass
    assert [len(part) for part in eval_parts] == part_sizes
    all_eval = np.concatenate(eval_parts)
    assert sorted(all_eval.tolist()) == list(range(NUM_TRAIN))  # disjoint and covering
    # Training reads interleaved, so its record split may differ from eval's,
    # but it too must be disjoint and covering, the same sizes.
    assert sorted(len(part) for part in train_parts) == sorted(part_sizes)
    assert set().union(*train_parts) == set(range(NUM_TRAIN))


def test_shuffle_reproducible_with_seed_and_differs_by_seed(data_dir):
    def order(seed):
        dataset = input_pipeline.make_train_dataset(
            data_dir, 4, seed=seed, shuffle_buffer=6, lighting_stddev=0.0, crop_size=32)
        return labels_of(dataset, 9).tolist()  # three epochs

    first = order(7)
    assert first == order(7)
    assert first != order(8)
    assert first[:NUM_TRAIN] != sorted(first[:NUM_TRAIN])


def test_no_shards_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train-\?\?\?\?\?-of-\?\?\?\?\?"):
        input_pipeline.make_train_dataset(tmp_path, 4)
    with pytest.raises(FileNotFoundError, match="validation"):
        input_pipeline.make_eval_dataset(tmp_path, 4)
    with pytest.raises(ValueError, match="unknown split"):
        input_pipeline.make_eval_dataset(tmp_path, 4, split="test")


def test_count_records(tmp_path, data_dir):
    assert input_pipeline.count_records(data_dir, "train") == NUM_TRAIN  # by reading
    assert input_pipeline.count_records(data_dir, "validation") == NUM_VALIDATION
    # data prep's stats.json layout is read, not the shards
    (tmp_path / "stats.json").write_text(json.dumps({"splits": {"train": {"images": 1234}}}))
    assert input_pipeline.count_records(tmp_path, "train") == 1234


def test_empty_shards_are_skipped_and_all_empty_is_an_error(tmp_path):
    # As data prep leaves them for a small data set: many shard files, most empty.
    data = tmp_path / "records"
    shards = [[0, 1], [], [], [2], []]
    data.mkdir()
    write_split(data, records.TRAIN_PREFIX, shards)
    write_split(data, records.VALIDATION_PREFIX, [[], [3, 4]])
    assert len(records.list_shards(data, "train")) == 5
    assert [p.rsplit("/", 1)[1] for p in input_pipeline.list_shards(data, "train")] == [
        "train-00000-of-00005", "train-00003-of-00005"]
    train = input_pipeline.make_train_dataset(data, 3, shuffle_buffer=3, seed=0,
                                              lighting_stddev=0.0, crop_size=32)
    assert set(labels_of(train, 4)) == {0, 1, 2}
    assert sorted(labels_of(input_pipeline.make_eval_dataset(data, 2, crop_size=32), 5)) \
        == [3, 4]
    empty = tmp_path / "empty"
    empty.mkdir()
    write_split(empty, records.TRAIN_PREFIX, [[], []])
    with pytest.raises(FileNotFoundError, match="all 2 train shards in .* are empty"):
        input_pipeline.make_train_dataset(empty, 2)


@pytest.mark.slow  # writes and reads 2 shards per test set
def test_across_shards_takes_one_record_of_each_shard_in_turn(tmp_path):
    # Validation stored class by class, one class per shard: the first batch
    # of a plain read sees one class, across_shards sees all of them.
    data = tmp_path / "records"
    data.mkdir()
    write_split(data, records.VALIDATION_PREFIX, [[0] * 4, [1] * 4, [2] * 4])
    plain = labels_of(input_pipeline.make_eval_dataset(data, 3, crop_size=32), 1)
    across = labels_of(input_pipeline.make_eval_dataset(data, 3, across_shards=True,
                                                        crop_size=32), 9)
    assert list(plain) == [0, 0, 0] and list(across[:3]) == [0, 1, 2]
    assert sorted(across) == [0] * 4 + [1] * 4 + [2] * 4  # still every record once
