"""`depth-completion launch kitti|tof [arg:=value ...]`: what `ros2 launch depth_completion_ros <x>.launch.py`
starts, for the pip-only setup where launch / launch_ros are not installable.

The same processes with the same configuration: the parameters file, the remaps and the launch arguments are
read from the launch files themselves (their `KITTI_TOPICS` / `TOPIC_ARGS` tables and `DeclareLaunchArgument`
defaults), so the two cannot drift apart; the launch-time choices (player:=auto|ros2bag|builtin, rviz2 only
where installed, namespace:=) come from `ros/launch_support.py`, as in the launch files. When the bag player
ends or dies, it says so and stops everything, as the launch file does. All processes share `ROS_DOMAIN_ID`
(default 0, or the caller's) and the shared-memory transport profile; SIGINT / SIGTERM stop them all.
"""

from __future__ import annotations

import argparse
import ast
import os
import signal
import subprocess
import sys
import threading
import time
from typing import TextIO

from depth_completion_ros.ros import launch_support
from depth_completion_ros.ros.process_env import package_share_path, ros_process_env

__all__ = ["add_arguments", "launch_file_defaults", "plan", "run"]

CONFIG = {"kitti": "config/kitti.yaml", "tof": "config/tof.yaml"}


def _pass_through(stream: TextIO, ready: threading.Event) -> None:
    """Copy the node's output to ours; set `ready` at its "ready:" line."""
    for line in stream:
        sys.stdout.write(line)
        sys.stdout.flush()
        if "ready:" in line:
            ready.set()


def _module_tree(name: str) -> ast.Module:
    path = package_share_path(f"launch/{name}.launch.py")
    return ast.parse(path.read_text(), filename=str(path))


def _constant(tree: ast.Module, name: str) -> object:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise LookupError(f"{name} not found in the launch file")


def launch_file_defaults(name: str) -> dict[str, str]:
    """Launch arguments and their defaults, as `DeclareLaunchArgument` calls declare them in `<name>.launch.py`."""
    tree = _module_tree(name)
    out: dict[str, str] = {}
    if name == "tof":  # arguments are generated from the TOPIC_ARGS table
        out.update({arg: default for arg, (_, default) in _constant(tree, "TOPIC_ARGS").items()})
    for node in ast.walk(tree):
        is_declare = isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DeclareLaunchArgument"
        if is_declare and node.args and isinstance(node.args[0], ast.Constant):
            kw = {k.arg: k.value for k in node.keywords}
            default = kw.get("default_value")
            out[node.args[0].value] = default.value if isinstance(default, ast.Constant) else ""
    return out


def plan(name: str, values: dict[str, str]) -> list[tuple[str, list[str]]]:
    """(label, argv) of each process `<name>.launch.py` would start with these argument values.

    Raises:
        ValueError: a bad `player` value, or `player:=ros2bag` where `ros2 bag` is not installed.
    """
    tree = _module_tree(name)
    if name == "kitti":
        remaps = dict(_constant(tree, "KITTI_TOPICS"))
    else:
        remaps = {node_input: values[arg] for arg, (node_input, _) in _constant(tree, "TOPIC_ARGS").items()}
    node = [sys.executable, "-m", "depth_completion_ros.ros.depth_completion_node", "--ros-args"]
    node += ["--params-file", str(package_share_path(CONFIG[name]))]
    for key in ("method", "checkpoint", "device", "num_threads"):
        node += ["-p", f"{key}:={values[key]}" if values[key] else f"{key}:=''"]
    for src, dst in remaps.items():
        node += ["-r", f"{src}:={dst}"]
    namespace = values.get("namespace", "").strip("/")
    if namespace:
        node += ["-r", f"__ns:=/{namespace}"]
    procs = [("depth_completion_node", node)]
    if name == "kitti" and values.get("bag"):
        kind = launch_support.choose_player(values.get("player", "auto"))
        args = launch_support.player_arguments(kind, values["bag"], values["rate"], values["loop"].lower() == "true")
        player = args if kind == "ros2bag" else [sys.executable, "-m", "depth_completion_ros.ros.bag_player", *args]
        procs.append(("bag_play", player))
    if name == "kitti" and values.get("rviz", "false").lower() == "true":
        if not launch_support.rviz2_available():
            print("[launch] rviz:=true but rviz2 is not installed: not starting it", file=sys.stderr)
        else:
            rviz = ["rviz2", "-d", str(package_share_path("config/kitti.rviz"))]
            remaps = launch_support.rviz_remappings(namespace)
            rviz += ["--ros-args", *[a for src, dst in remaps for a in ("-r", f"{src}:={dst}")]] if remaps else []
            procs.append(("rviz2", rviz))
    return procs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options."""
    parser.add_argument("name", choices=sorted(CONFIG), help="which launch file to mirror")
    parser.add_argument("launch_args", nargs="*", metavar="arg:=value", help="launch arguments, as for ros2 launch")
    parser.add_argument("--print", action="store_true", help="only print the commands")


def run(args: argparse.Namespace) -> int:
    """Start the processes and wait; exit code 2 on unknown arguments."""
    values = launch_file_defaults(args.name)
    for item in args.launch_args:
        key, sep, value = item.partition(":=")
        if not sep or key not in values:
            print(
                f"depth-completion launch: error: unknown argument {item!r} (known: {', '.join(values)})",
                file=sys.stderr,
            )
            return 2
        values[key] = value
    try:
        procs = plan(args.name, values)
    except ValueError as exc:
        print(f"depth-completion launch: error: {exc}", file=sys.stderr)
        return 2
    if args.print:
        for label, argv in procs:
            print(f"{label}: {' '.join(argv)}")
        return 0
    raw_domain = os.environ.get("ROS_DOMAIN_ID", "0").strip() or "0"
    if not raw_domain.isdigit() or int(raw_domain) > 232:
        print(
            f"depth-completion launch: error: ROS_DOMAIN_ID must be an integer 0..232, got {raw_domain!r}",
            file=sys.stderr,
        )
        return 2
    env = ros_process_env(int(raw_domain))
    profile = env["FASTDDS_DEFAULT_PROFILES_FILE"]
    print(f"[launch] ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']} FASTDDS_DEFAULT_PROFILES_FILE={profile}")
    # The node first; the bag player once the node logs "ready" (at the latest after PLAYER_START_TIMEOUT_S), as
    # the launch file does; the node's output is passed through to watch for that line.
    node = subprocess.Popen(procs[0][1], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ready = threading.Event()
    threading.Thread(target=_pass_through, args=(node.stdout, ready), daemon=True).start()
    running = [("depth_completion_node", node)]
    waiting = [(label, argv) for label, argv in procs[1:] if label == "bag_play"]
    running += [(label, subprocess.Popen(argv, env=env)) for label, argv in procs[1:] if label != "bag_play"]
    stop = {"flag": False}

    def _stop(*_: object) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    player = None
    t_start = time.monotonic()
    while not stop["flag"] and node.poll() is None:
        if waiting and (ready.is_set() or time.monotonic() - t_start > launch_support.PLAYER_START_TIMEOUT_S):
            why = "depth_completion_node is ready" if ready.is_set() else "no ready line from the node"
            print(f"[launch] starting the bag player ({why})", flush=True)
            player = subprocess.Popen(waiting.pop()[1], env=env)
            running.append(("bag_play", player))
        if player is not None and player.poll() is not None:  # as the launch file's OnProcessExit -> Shutdown
            loop = values.get("loop", "false").lower() == "true"
            print(f"[launch] {launch_support.player_exit_message(player.returncode, loop=loop)}", flush=True)
            break
        time.sleep(0.1)
    for _, proc in reversed(running):
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    codes = []
    for label, proc in running:
        try:
            codes.append(proc.wait(10))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(proc.wait())
        print(f"[launch] {label} exited ({proc.returncode})")
    return 0 if stop["flag"] else int(node.returncode or 0)
