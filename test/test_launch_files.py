"""The launch files, the params YAML and the RViz config only name executables, parameters and
topics the package really has (the launch system is not on PyPI: the .launch.py is parsed with
``ast``, never imported)."""
from __future__ import annotations

import ast
import pathlib
import re

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH_PY = REPO / "launch" / "noposplat.launch.py"
LAUNCH_YAML = REPO / "launch" / "noposplat.launch.yaml"
PARAMS_YAML = REPO / "config" / "noposplat.yaml"
RVIZ = REPO / "config" / "noposplat.rviz"
# parameters every ROS 2 node has
BUILTIN_PARAMS = {"use_sim_time", "start_type_description_service"}
# topics the node subscribes (relative names, remappable)
NODE_INPUTS = {"image", "image/compressed", "camera_info"}


def console_scripts() -> dict[str, str]:
    """name -> entry point, from setup.py's entry_points (parsed, not executed)."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            eps = ast.literal_eval(node.value)
            return dict(s.replace(" ", "").split("=", 1) for s in eps["console_scripts"])
    raise AssertionError("setup.py has no entry_points")


def package_name() -> str:
    return re.search(r"<name>([^<]+)</name>", (REPO / "package.xml").read_text()).group(1)


@pytest.fixture(scope="module")
def declared_params() -> set[str]:
    """The parameters the node really declares: a real node instance, not the table."""
    rclpy = pytest.importorskip("rclpy")
    from noposplat_ros.ros.node import NoPoSplatNode

    rclpy.init()
    try:
        node = NoPoSplatNode("launch_file_check_node")
        names = set(node._parameters)
        node.destroy_node()
    finally:
        rclpy.shutdown()
    return names


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_node_entry_point_resolves():
    scripts = console_scripts()
    assert scripts["noposplat_node"] == "noposplat_ros.ros.node:main"
    import importlib

    mod, func = scripts["noposplat_node"].split(":")
    assert callable(getattr(importlib.import_module(mod), func))


def test_params_yaml_names_only_declared_parameters(declared_params):
    data = yaml.safe_load(PARAMS_YAML.read_text())
    assert list(data) == ["/**"] and list(data["/**"]) == ["ros__parameters"]
    params = flatten(data["/**"]["ros__parameters"])
    unknown = set(params) - declared_params
    assert not unknown, f"{PARAMS_YAML.name} names parameters the node does not declare: {sorted(unknown)}"
    # the YAML is the one place listing every parameter: all of them are there
    missing = {p for p in declared_params if p not in params} - BUILTIN_PARAMS
    assert not missing, f"{PARAMS_YAML.name} lacks {sorted(missing)}"
    # and every value is valid for its declaration (type, range, choices)
    from noposplat_ros.ros.parameters import all_parameters

    specs = {p.name: p for p in all_parameters()}
    bad = {k: specs[k].check(v) for k, v in params.items() if specs[k].check(v)}
    assert not bad, bad
    # node-level defaults in the YAML equal the node's (no drift); keyframe.* values are the shipped
    # tuning of the selector and only need to be valid
    drift = {k: (v, specs[k].default) for k, v in params.items()
             if v != specs[k].default and not k.startswith("keyframe.")}
    assert not drift, f"YAML values differ from the node defaults: {drift}"


def _kw(call: ast.Call) -> dict[str, ast.AST]:
    return {k.arg: k.value for k in call.keywords if k.arg}


def test_launch_py_names_real_executables_and_parameters(declared_params):
    tree = ast.parse(LAUNCH_PY.read_text())
    scripts = console_scripts()
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    declared_args = {ast.literal_eval(c.args[0]) for c in calls
                     if getattr(c.func, "id", "") == "DeclareLaunchArgument"}
    # LaunchConfiguration("x") directly, or through a local helper that wraps LaunchConfiguration(arg)
    wrappers = {"LaunchConfiguration"} | {
        f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and any(
            isinstance(n, ast.Call) and getattr(n.func, "id", "") == "LaunchConfiguration" for n in ast.walk(f))
        and f.name != "generate_launch_description"}
    used_args = {ast.literal_eval(c.args[0]) for c in calls if getattr(c.func, "id", "") in wrappers
                 and c.args and isinstance(c.args[0], ast.Constant)}
    assert {"checkpoint", "image", "camera_info", "params_file"} <= used_args
    assert used_args <= declared_args, f"undeclared launch arguments: {used_args - declared_args}"
    nodes = [c for c in calls if getattr(c.func, "id", "") in ("Node", "LifecycleNode")]
    ours = [c for c in nodes if ast.literal_eval(_kw(c)["package"]) == package_name()]
    assert ours, "the launch file starts none of our nodes"
    for c in ours:
        kw = _kw(c)
        assert ast.literal_eval(kw["executable"]) in scripts
        for item in kw["parameters"].elts:
            if isinstance(item, ast.Dict):
                names = {ast.literal_eval(k) for k in item.keys}
                unknown = names - declared_params - BUILTIN_PARAMS
                assert not unknown, f"launch file sets unknown parameters {unknown}"
        for remap in kw.get("remappings", ast.List(elts=[])).elts:
            assert ast.literal_eval(remap.elts[0]) in NODE_INPUTS
    # the params file it loads is the one we ship
    assert "noposplat.yaml" in LAUNCH_PY.read_text() and PARAMS_YAML.is_file()
    assert "noposplat.rviz" in LAUNCH_PY.read_text() and RVIZ.is_file()


def test_launch_yaml_names_real_executables_and_parameters(declared_params):
    data = yaml.safe_load(LAUNCH_YAML.read_text())
    args = {e["arg"]["name"] for e in data["launch"] if "arg" in e}
    nodes = [e["node"] for e in data["launch"] if "node" in e]
    assert nodes
    text = LAUNCH_YAML.read_text()
    assert set(re.findall(r"\$\(var (\w+)\)", text)) <= args
    for n in nodes:
        assert n["pkg"] == package_name() and n["exec"] in console_scripts()
        for p in n.get("param", []):
            if "from" in p:
                assert p["from"].endswith("/config/noposplat.yaml")
            else:
                assert p["name"] in declared_params | BUILTIN_PARAMS, p["name"]
        for r in n.get("remap", []):
            assert r["from"] in NODE_INPUTS


def test_rviz_config_shows_node_topics():
    cfg = yaml.safe_load(RVIZ.read_text())
    displays = {d["Name"]: d for d in cfg["Visualization Manager"]["Displays"]}
    splats = displays["Splats"]
    assert splats["Class"] == "rviz_default_plugins/PointCloud2"
    assert splats["Topic"]["Value"] == "/noposplat_node/splats"
    assert splats["Color Transformer"] == "RGB8"  # colour from the packed rgb field
    assert splats["Topic"]["Durability Policy"] == "Transient Local"  # matches the latched publisher
    assert displays["TF"]["Class"] == "rviz_default_plugins/TF"
    assert displays["Odometry"]["Topic"]["Value"] == "/noposplat_node/odometry"
    assert cfg["Visualization Manager"]["Global Options"]["Fixed Frame"] == \
        yaml.safe_load(PARAMS_YAML.read_text())["/**"]["ros__parameters"]["odom_frame"]
