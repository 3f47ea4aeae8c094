"""Caffe's reference AlexNet (bvlc_alexnet) into the two-tower model (issue 15).

    netparameter.py  .caffemodel / .binaryproto parsed by the protobuf runtime
                     (caffe.proto's messages declared at import; sizes checked)
    npy.py           caffe-tensorflow's .npy (arrays-only unpickling)
    structure.py     is this net AlexNet? its weights and constants
    blobs.py         AlexNet's learned layers in Caffe's layout
    convert.py       Caffe's layout -> the Keras model's config and weights
    mean.py          Caffe's mean image -> mean_rgb
    synsets.py       labels.txt or Caffe's synset_words.txt -> the label map
    importer.py      all of it -> a model_dir every other tool reads

`launch/import_caffe.py` is the command line.
"""
