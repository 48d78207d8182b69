"""Launch noposplat_node on a robot (standard ROS 2 launch; needs a ROS 2 install with launch_ros).

    ros2 launch noposplat_ros noposplat.launch.py image:=/camera/image_raw camera_info:=/camera/camera_info
    ros2 launch noposplat_ros noposplat.launch.py image_transport:=compressed checkpoint:=/data/re10k.safetensors
    ros2 launch noposplat_ros noposplat.launch.py viewer:=true   # + the splats in a browser, http://localhost:8080

The node is a lifecycle node that configures and activates itself (parameter auto_activate); with a
lifecycle manager set auto_activate:=false.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def _str(name: str) -> ParameterValue:
    """A launch argument as a string parameter (an empty checkpoint must stay "", not become None)."""
    return ParameterValue(LaunchConfiguration(name), value_type=str)


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("noposplat_ros")
    args = [
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("image", default_value="image", description="image topic (raw transport)"),
        DeclareLaunchArgument("image_compressed", default_value="image/compressed",
                              description="image topic for image_transport:=compressed"),
        DeclareLaunchArgument("camera_info", default_value="camera_info", description="camera_info topic"),
        DeclareLaunchArgument("image_transport", default_value="raw", description="raw | compressed"),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "noposplat.yaml"]),
                              description="node parameters YAML"),
        DeclareLaunchArgument("predictor", default_value="auto", description="auto | geometry | noposplat"),
        DeclareLaunchArgument("checkpoint", default_value="", description="NoPoSplat checkpoint (.safetensors)"),
        DeclareLaunchArgument("publish_tf", default_value="true", description="publish odom -> base tf"),
        DeclareLaunchArgument("base_frame", default_value="", description="child frame of tf/odometry"),
        DeclareLaunchArgument("odom_frame", default_value="odom", description="parent frame of tf/odometry"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag replay)"),
        DeclareLaunchArgument("rviz", default_value="false", description="start RViz2 with the bundled config"),
        DeclareLaunchArgument("viewer", default_value="false",
                              description="start the web splat viewer (noposplat-ros view --live)"),
        DeclareLaunchArgument("viewer_host", default_value="127.0.0.1",
                              description="viewer address (0.0.0.0: every interface; prefer an SSH tunnel)"),
        DeclareLaunchArgument("viewer_port", default_value="8080", description="viewer HTTP port"),
    ]
    node = LifecycleNode(
        package="noposplat_ros",
        executable="noposplat_node",
        name="noposplat_node",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "image_transport": _str("image_transport"),
                "predictor": _str("predictor"),
                "checkpoint": _str("checkpoint"),
                "publish_tf": LaunchConfiguration("publish_tf"),
                "base_frame": _str("base_frame"),
                "odom_frame": _str("odom_frame"),
                "use_sim_time": LaunchConfiguration("use_sim_time"),
            },
        ],
        remappings=[
            ("image", LaunchConfiguration("image")),
            ("image/compressed", LaunchConfiguration("image_compressed")),
            ("camera_info", LaunchConfiguration("camera_info")),
        ],
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", PathJoinSubstitution([share, "config", "noposplat.rviz"])],
        condition=IfCondition(LaunchConfiguration("rviz")),
        parameters=[{"use_sim_time": LaunchConfiguration("use_sim_time")}],
    )
    # the web splat viewer: its own process, like rviz2 (it reads the node's map, pairs and odometry)
    viewer = Node(
        package="noposplat_ros",
        executable="noposplat-ros",
        name="noposplat_viewer",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        arguments=["view", "--live", "--node", "noposplat_node", "--host", LaunchConfiguration("viewer_host"),
                   "--port", LaunchConfiguration("viewer_port")],
        condition=IfCondition(LaunchConfiguration("viewer")),
        parameters=[{"use_sim_time": LaunchConfiguration("use_sim_time")}],
        remappings=[("camera_info", LaunchConfiguration("camera_info"))],
    )
    return LaunchDescription(args + [node, rviz, viewer])
