"""Launch noposplat_node on a robot (standard ROS 2 launch; needs a ROS 2 install with launch_ros).

    ros2 launch noposplat_ros noposplat.launch.py image:=/camera/image_raw camera_info:=/camera/camera_info
    ros2 launch noposplat_ros noposplat.launch.py image_transport:=compressed checkpoint:=/data/re10k.safetensors

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
    return LaunchDescription(args + [node, rviz])
