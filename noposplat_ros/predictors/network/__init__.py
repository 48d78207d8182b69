"""Our own implementation of the NoPoSplat network (ICLR 2025), loading the official weights."""
from noposplat_ros.predictors.network.config import NoPoSplatConfig
from noposplat_ros.predictors.network.model import NetOutput, NoPoSplatNet, build_model

__all__ = ["NoPoSplatConfig", "NoPoSplatNet", "NetOutput", "build_model"]
