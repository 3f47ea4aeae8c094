"""The Caffe importer's error for files and settings the user must fix."""

from alexnet_tf.errors import InputError


class CaffeFormatError(InputError):
    """A Caffe file (or a labels / mean file given with it) that cannot be
    imported; the message names the file or layer and the shapes involved."""
