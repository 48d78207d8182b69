"""noposplat_ros: ament_python package (colcon on an apt ROS 2, or pip into the project venv)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "noposplat_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["py.typed"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*")),
        (f"share/{PACKAGE}/config", glob("config/*")),
        (f"share/{PACKAGE}/model", glob("model/*")),
    ],
    install_requires=["setuptools"],
    extras_require={"test": ["pytest"], "fleet": ["ray[default]==2.60.0"]},  # fleet: process-bags on Ray
    zip_safe=False,
    maintainer="noposplat_ros developers",
    maintainer_email="dev@noposplat-ros.invalid",
    description="Live 3D Gaussian splats and relative camera poses from a ROS 2 camera stream (NoPoSplat).",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "noposplat-ros = noposplat_ros.cli:main",
            "noposplat_node = noposplat_ros.ros.node:main",
        ],
    },
)
