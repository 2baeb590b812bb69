"""ests-d2: ESTextSpotter as a detectron2 project."""
from setuptools import find_packages, setup

setup(
    name="ests-d2",
    version="0.1.0",
    description="ESTextSpotter (ICCV 2023) scene text spotting, rebuilt as a detectron2 project",
    packages=find_packages(include=["ests_d2", "ests_d2.*"]),
    package_data={"ests_d2": ["data/assets/*", "data/assets/**/*"]},
    python_requires=">=3.9",
    # detectron2 and torch are installed by scripts/install.sh (detectron2 is not on PyPI).
    install_requires=[
        "numpy>=1.23",
        "scipy>=1.9",
        "opencv-python-headless>=4.6",
        "pycocotools>=2.0.6",
        "shapely>=2.0",
        "rapidfuzz>=3.0",
        "tqdm>=4.60",
        "matplotlib>=3.5",
        "fvcore>=0.1.5.post20221221",
        "iopath>=0.1.9",
        "Pillow>=9.0",
        "psutil>=5.9",
        "tabulate>=0.8",
    ],
    extras_require={
        "test": ["pytest>=7.0"],
        # ONNX export (tools/export_model.py) and the torch-free OnnxTextSpotter; tests skip without them
        "export": ["onnx>=1.16", "onnxruntime>=1.17"],
    },
)
