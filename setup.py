"""alexnet_tf: the AlexNet paper (Krizhevsky et al., 2012) as a TF2 / Keras 3 package."""

from setuptools import find_packages, setup

TF_VERSION = "2.21.*"

setup(
    name="alexnet_tf",
    version="0.1.0",
    description="ImageNet data prep, training and TF Serving export of the 2012 AlexNet paper",
    python_requires=">=3.11",
    packages=find_packages(include=["alexnet_tf", "alexnet_tf.*", "data_prep",
                                    "data_prep.*", "launch", "launch.*",
                                    "experiments", "experiments.*"]),
    package_data={"launch": ["*.sh"]},
    # TensorFlow comes from an extra so the user picks the build: `cpu` for
    # laptops and CI, `gpu` for CUDA machines (Keras 3 comes bundled with it).
    install_requires=[
        "numpy>=1.26",
        "absl-py>=2.1",
        "pillow>=10.0",
        "simplejpeg>=1.7",              # data prep: JPEG decode at 1/2, 1/4, 1/8 scale
        "opencv-python-headless>=4.8",  # data prep: fast resize of the centre square
        "psutil>=5.9",
        "google-crc32c>=1.9",           # data prep writes TFRecord files without TensorFlow
        "protobuf>=6.31.1,<8",          # ... and declares tf.train.Example itself (records.py)
        "tensorboard>=2.16",  # tf.summary needs it; tensorflow-cpu 2.21 no longer pulls it in
    ],
    extras_require={
        "cpu": [f"tensorflow-cpu=={TF_VERSION}"],
        "gpu": [f"tensorflow[and-cuda]=={TF_VERSION}"],
        "devkit": ["scipy>=1.10"],        # reads the ILSVRC devkit's meta.mat
        "figures": ["matplotlib>=3.7"],   # launch.figures, launch.reproduce_relu_tanh
        # The gRPC client and the export's warm-up file also need
        # tensorflow-serving-api, installed with --no-deps (see the Makefile):
        # it declares a dependency on the full `tensorflow` package, which
        # would pull a second TensorFlow next to tensorflow-cpu.
        "serving": ["grpcio>=1.24.3"],
        "test": ["pytest>=8.0", "pytest-timeout>=2.3", "pytest-xdist>=3.5", "scipy>=1.10", "matplotlib>=3.7",
                 "grpcio>=1.24.3"],
    },
)
