import io

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from alexnet_tf.figures import features
from alexnet_tf.data import records


def _write_shard(path, count, seed):
    rng = np.random.default_rng(seed)
    with tf.io.TFRecordWriter(str(path)) as w:
        for i in range(count):
            pixels = rng.integers(0, 255, size=(256, 256, 3), dtype=np.uint8)
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
            w.write(records.serialize(records.ImageRecord(
                buf.getvalue(), 256, 256, label=i % 3, synset=f"c{i % 3}",
                text=f"class {i % 3}", filename=f"{path.name}_{i}.JPEG")))


def _tiny_model():
    inputs = keras.Input((224, 224, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    fc7 = keras.layers.Dense(8, activation="relu", name="fc7")(x)
    logits = keras.layers.Dense(3, name="fc8")(fc7)
    return keras.Model(inputs, keras.layers.Softmax(name="probabilities")(logits))


def test_extract_features_writes_rows_that_point_back_to_their_records(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _write_shard(data / records.shard_name("train", 0, 2), 3, seed=0)
    _write_shard(data / records.shard_name("train", 1, 2), 2, seed=1)
    model = _tiny_model()
    npy, index = features.extract_features(model, str(data), "train", str(tmp_path / "f"),
                                           batch_size=2)
    feats, rows = features.load_features(str(tmp_path / "f"), "train")
    assert feats.shape == (5, 8)
    assert [(r["shard"][:11], r["position"]) for r in rows] == [
        ("train-00000", 0), ("train-00000", 1), ("train-00000", 2),
        ("train-00001", 0), ("train-00001", 1)]
    # a row's image, fetched by shard and position, gives the row's features
    images = features.read_record_images(str(data), rows[3:5], 224)
    direct = features.feature_model(model)(images).numpy()
    np.testing.assert_allclose(direct, feats[3:5], rtol=1e-5, atol=1e-5)


def test_nearest_neighbours_matches_brute_force_across_chunks():
    rng = np.random.default_rng(0)
    db = rng.normal(size=(50, 16)).astype(np.float32)
    queries = np.concatenate([db[[7, 20]], rng.normal(size=(3, 16))]).astype(np.float32)
    idx, dist = features.nearest_neighbours(queries, db, k=6, chunk=7)
    brute = np.linalg.norm(queries[:, None, :] - db[None], axis=2)
    np.testing.assert_array_equal(idx, np.argsort(brute, axis=1, kind="stable")[:, :6])
    np.testing.assert_allclose(dist, np.sort(brute, axis=1)[:, :6], rtol=1e-4, atol=1e-4)
    assert idx[0, 0] == 7 and idx[1, 0] == 20
