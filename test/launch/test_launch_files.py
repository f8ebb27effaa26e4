"""Launch files: always checked statically (valid Python, arguments, config files exist, KITTI remaps);
generated with the real launch / launch_ros API when importable (skipped cleanly otherwise)."""

from __future__ import annotations

import ast
import importlib.util
import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch"
CONFIG = REPO / "config"

EXPECTED_ARGS = {
    "kitti.launch.py": {
        "bag",
        "rate",
        "loop",
        "player",
        "namespace",
        "method",
        "checkpoint",
        "device",
        "num_threads",
        "rviz",
    },
    "tof.launch.py": {
        "image",
        "camera_info",
        "depth",
        "depth_camera_info",
        "method",
        "checkpoint",
        "device",
        "num_threads",
        "namespace",
    },
}
EXPECTED_CONFIG = {"kitti.launch.py": {"kitti.yaml", "kitti.rviz"}, "tof.launch.py": {"tof.yaml"}}
KITTI_BAG_TOPICS = {"/kitti/camera/image_raw", "/kitti/camera/camera_info", "/kitti/velo/points"}


def _tree(name: str) -> ast.Module:
    return ast.parse((LAUNCH / name).read_text(), filename=name)


def _string_constants(tree: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def _declared_args(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DeclareLaunchArgument":
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Constant):
                names.add(first.value)
    return names


@pytest.mark.parametrize("name", sorted(EXPECTED_ARGS))
def test_launch_file_is_valid_python_with_entry_point(name):
    tree = _tree(name)
    compile(tree, name, "exec")
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in functions


@pytest.mark.parametrize("name", sorted(EXPECTED_CONFIG))
def test_launch_file_references_existing_config(name):
    strings = _string_constants(_tree(name))
    referenced = {s for s in strings if s.endswith((".yaml", ".rviz"))}
    assert referenced == EXPECTED_CONFIG[name]
    for cfg in referenced:
        assert (CONFIG / cfg).is_file(), cfg
    # the installed share dir gets config/ and launch/ (CMakeLists.txt / setup.py data_files)
    assert "config" in strings


def test_kitti_launch_args_and_remaps_static():
    tree = _tree("kitti.launch.py")
    assert _declared_args(tree) == EXPECTED_ARGS["kitti.launch.py"]
    assert _string_constants(tree) >= KITTI_BAG_TOPICS


def test_tof_launch_documents_driver_topics():
    text = (LAUNCH / "tof.launch.py").read_text() + (CONFIG / "tof.yaml").read_text()
    for topic in (
        "/camera/color/image_raw",
        "/camera/aligned_depth_to_color/image_raw",
        "/camera/depth/image_rect_raw",
        "/rgb/image_raw",
        "/depth_to_rgb/image_raw",
    ):
        assert topic in text, topic


def test_rviz_config_shows_the_outputs():
    rviz = yaml.safe_load((CONFIG / "kitti.rviz").read_text())
    displays = rviz["Visualization Manager"]["Displays"]
    topics = {d["Topic"]["Value"] for d in displays if "Topic" in d}
    assert {"/kitti/camera/image_raw", "/sparse_depth", "/depth_color", "/confidence", "/points"} <= topics
    classes = {d["Class"] for d in displays}
    assert {"rviz_default_plugins/Image", "rviz_default_plugins/PointCloud2"} <= classes


def _load_launch_module(name: str):
    spec = importlib.util.spec_from_file_location(name.replace(".", "_"), LAUNCH / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", sorted(EXPECTED_ARGS))
def test_generate_launch_description(name, tmp_path, monkeypatch):
    launch = pytest.importorskip("launch")
    if not hasattr(launch, "LaunchDescription"):  # the repo's own launch/ folder seen as a namespace package
        pytest.skip("the launch package is not installed")
    pytest.importorskip("launch_ros")
    # an ament index that knows this package, so get_package_share_directory works without an install
    index = tmp_path / "share" / "ament_index" / "resource_index" / "packages"
    index.mkdir(parents=True)
    (index / "depth_completion_ros").write_text("")
    (tmp_path / "share" / "depth_completion_ros").mkdir()
    monkeypatch.setenv("AMENT_PREFIX_PATH", os.pathsep.join([str(tmp_path), os.environ.get("AMENT_PREFIX_PATH", "")]))
    module = _load_launch_module(name)
    ld = module.generate_launch_description()
    assert isinstance(ld, launch.LaunchDescription)
    args = {a.name for a in ld.get_launch_arguments()}
    assert args == EXPECTED_ARGS[name]

    from launch_ros.actions import Node

    nodes = [e for e in ld.entities if isinstance(e, Node)]
    completion = [n for n in nodes if n.node_executable == "depth_completion_node"]
    assert len(completion) == 1
    context = launch.LaunchContext()
    for action in ld.get_launch_arguments():
        action.visit(context)
    if name == "kitti.launch.py":
        _check_kitti_launch_time_choices(module, ld, context, monkeypatch)


def _check_kitti_launch_time_choices(module, ld, context, monkeypatch) -> None:
    """Player choice, exit handler and rviz2 (skipped where absent), as the OpaqueFunction decides them."""
    from launch.actions import OpaqueFunction, RegisterEventHandler, TimerAction
    from launch_ros.actions import Node

    import launch
    from depth_completion_ros.ros import launch_support

    assert sum(isinstance(e, OpaqueFunction) for e in ld.entities) == 1
    configs = context.launch_configurations
    assert (configs["rviz"], configs["player"], configs["namespace"]) == ("false", "auto", "")
    assert module._player_and_rviz(context) == []  # live input, no rviz: nothing more to start

    def players(actions):
        # the player starts on the node's "ready" line (OnProcessIO) or, failing that, from a fallback timer
        (timer,) = [a for a in actions if isinstance(a, TimerAction)]
        started = timer.actions[0].execute(context)
        assert timer.actions[0].execute(context) == []  # once only
        return [a for a in started if isinstance(a, launch.actions.ExecuteProcess)]

    configs["bag"] = "/tmp/bag"
    monkeypatch.setattr(launch_support, "rviz2_available", lambda: False)
    for have_ros2bag, choice, expected in [
        (False, "auto", "bag_player"),
        (True, "auto", "ros2"),
        (True, "builtin", "bag_player"),
        (True, "ros2bag", "ros2"),
    ]:
        monkeypatch.setattr(launch_support, "ros2bag_available", lambda have=have_ros2bag: have)
        configs["player"] = choice
        actions = module._player_and_rviz(context)
        (player,) = players(actions)
        if expected == "bag_player":
            assert isinstance(player, Node) and player.node_executable == "bag_player"
        else:
            assert not isinstance(player, Node)
        assert sum(isinstance(a, RegisterEventHandler) for a in actions) == 2  # node ready -> player -> shutdown
    monkeypatch.setattr(launch_support, "ros2bag_available", lambda: False)
    with pytest.raises(ValueError, match="ros2 bag"):
        module._player_and_rviz(context)  # player:=ros2bag where it is not installed

    configs.update(bag="", rviz="true", player="auto", namespace="cam1")
    assert module._player_and_rviz(context) == []  # rviz2 absent: skipped with a warning, the launch goes on
    monkeypatch.setattr(launch_support, "rviz2_available", lambda: True)
    (rviz,) = module._player_and_rviz(context)
    assert isinstance(rviz, Node) and rviz.node_package == "rviz2"


def _run_launch(tmp_path, body: str, timeout: float = 120) -> tuple[int, str]:
    """Run a LaunchService script (`body` defines `ld`) in a child process with an isolated ROS environment."""
    import subprocess
    import sys

    from depth_completion_ros.ros.process_env import ros_process_env

    script = tmp_path / "run_launch.py"
    script.write_text(
        "import sys, threading, time\n"
        "from launch import LaunchDescription, LaunchService\n"
        "from launch.actions import GroupAction, IncludeLaunchDescription\n"
        "from launch.launch_description_sources import PythonLaunchDescriptionSource\n"
        "from ament_index_python.packages import get_package_share_directory\n"
        "share = get_package_share_directory('depth_completion_ros') + '/launch/'\n"
        "def include(name, **args):\n"
        "    source = PythonLaunchDescriptionSource(share + name)\n"
        "    return IncludeLaunchDescription(source, launch_arguments=args.items())\n"
        "ls = LaunchService(argv=[])\n" + body + "ls.include_launch_description(ld)\n"
        "threading.Thread(target=lambda: (time.sleep(90), ls.shutdown()), daemon=True).start()\n"
        "sys.exit(ls.run())\n"
    )
    env = ros_process_env(ros_home=str(tmp_path / "ros_home"))
    run = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return run.returncode, run.stdout + run.stderr


def _need_launch() -> None:
    launch = pytest.importorskip("launch")
    if not hasattr(launch, "LaunchService"):
        pytest.skip("the launch package is not installed")
    pytest.importorskip("launch_ros")


def test_launch_ends_when_the_player_dies(tmp_path):
    """bag:= a bag that is not there, built-in player: the player exits 2, the launch says so and ends."""
    _need_launch()
    args = f"bag='{tmp_path}/no_bag', player='builtin', device='cpu'"
    body = f"ld = LaunchDescription([include('kitti.launch.py', {args})])\n"
    code, out = _run_launch(tmp_path, body)
    assert "bag player exited with code 2" in out, out[-3000:]
    assert "replaying" in out and "built-in bag_player" in out
    assert code == 0, out[-3000:]


def test_two_namespaced_instances_from_the_launch_file(tmp_path):
    """tof.launch.py twice, namespace:=cam1 / cam2: each node reads its camera and publishes in its namespace."""
    _need_launch()
    body = (
        "import rclpy\n"
        "cams = ['cam1', 'cam2']\n"
        "ld = LaunchDescription([GroupAction([include('tof.launch.py', namespace=c, device='cpu',\n"
        "    image=f'/{c}/color/image_raw', camera_info=f'/{c}/color/camera_info',\n"
        "    depth=f'/{c}/depth/image_raw', depth_camera_info=f'/{c}/depth/camera_info')], scoped=True)\n"
        "    for c in cams])\n"
        "def check():\n"
        "    ctx = rclpy.Context(); rclpy.init(context=ctx); node = rclpy.create_node('probe', context=ctx)\n"
        "    topics = ['/cam1/depth', '/cam2/depth', '/depth', '/cam1/camera_info', '/camera_info']\n"
        "    for _ in range(600):\n"
        "        counts = {t: node.count_publishers(t) for t in topics}\n"
        "        if counts['/cam1/depth'] and counts['/cam2/depth']: break\n"
        "        time.sleep(0.1)\n"
        "    time.sleep(1.0); counts = {t: node.count_publishers(t) for t in topics}\n"
        "    print('PUBLISHERS', counts, flush=True); ls.shutdown()\n"
        "threading.Thread(target=check, daemon=True).start()\n"
    )
    code, out = _run_launch(tmp_path, body)
    assert (
        "PUBLISHERS {'/cam1/depth': 1, '/cam2/depth': 1, '/depth': 0, '/cam1/camera_info': 1, '/camera_info': 0}" in out
    ), out[-3000:]
    for cam in ("cam1", "cam2"):
        assert f"inputs: /{cam}/color/image_raw, /{cam}/color/camera_info, /{cam}/depth/image_raw" in out
    assert code == 0, out[-3000:]


def test_launch_service_starts_the_node(tmp_path):
    """Run kitti.launch.py with the real LaunchService (no bag, no rviz): the node starts with the remaps."""
    launch = pytest.importorskip("launch")
    if not hasattr(launch, "LaunchService"):
        pytest.skip("the launch package is not installed")
    pytest.importorskip("launch_ros")
    import subprocess
    import sys

    from depth_completion_ros.ros.process_env import ros_process_env

    script = tmp_path / "run_launch.py"
    script.write_text(
        "import sys, threading, time\n"
        "from launch import LaunchDescription, LaunchService\n"
        "from launch.actions import IncludeLaunchDescription\n"
        "from launch.launch_description_sources import PythonLaunchDescriptionSource\n"
        "from ament_index_python.packages import get_package_share_directory\n"
        "path = get_package_share_directory('depth_completion_ros') + '/launch/kitti.launch.py'\n"
        "ls = LaunchService(argv=[])\n"
        "args = {'rviz': 'false', 'bag': '', 'device': 'cpu'}.items()\n"
        "ls.include_launch_description(LaunchDescription([IncludeLaunchDescription("
        "PythonLaunchDescriptionSource(path), launch_arguments=args)]))\n"
        "threading.Thread(target=lambda: (time.sleep(12), ls.shutdown()), daemon=True).start()\n"
        "sys.exit(ls.run())\n"
    )
    env = ros_process_env(ros_home=str(tmp_path / "ros_home"))
    run = subprocess.run(
        [sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=90, check=False
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    assert "ready: input_type=pointcloud" in out, out[-3000:]
    assert "/kitti/camera/image_raw, /kitti/camera/camera_info, /kitti/velo/points" in out
    assert "process has finished cleanly" in out
