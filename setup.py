"""Build script of segtrack_ros (ament_python; also a plain pip package)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'segtrack_ros'

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    package_data={PACKAGE: ['data/*']},
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        (f'share/{PACKAGE}/launch', glob('launch/*.launch.py')),
        (f'share/{PACKAGE}/config', glob('config/*')),
    ],
    install_requires=['setuptools'],
    extras_require={'fleet': ['ray[client]==2.60.0']},  # client: --address ray://host:port
    zip_safe=True,
    maintainer='segtrack_ros maintainers',
    maintainer_email='segtrack@example.com',
    description='YOLOv8-seg segmentation and tracking for ROS 2 camera topics and video files.',
    license='AGPL-3.0-only',
    entry_points={
        'console_scripts': [
            'segtrack-video = segtrack_ros.cli.video:main',
            'segtrack-eval = segtrack_ros.eval.evaluate:main',
            'segtrack-bag = segtrack_ros.cli.bag:main',
            'segtrack-fleet = segtrack_ros.cli.fleet:main',
            'segtrack_node = segtrack_ros.ros.node:main',
            'video_publisher = segtrack_ros.ros.video_publisher:main',
        ],
    },
)
