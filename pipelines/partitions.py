"""Static partitions of the heavy per-traversal stages (normalise, embed).

RobotCar traversals are the runs the Adapt-STformer paper uses (Oxford-hard) plus the seqNet
Oxford database run (Oxford-easy); nuScenes is partitioned by Singapore map; Nordland by season.
"""
from dagster import StaticPartitionsDefinition

from seqvpr.datasets.catalog import NORDLAND_SEASONS, NUSCENES_LOCATIONS, ROBOTCAR_TRAVERSALS

robotcar_partitions = StaticPartitionsDefinition(list(ROBOTCAR_TRAVERSALS))
nuscenes_partitions = StaticPartitionsDefinition(list(NUSCENES_LOCATIONS))
nordland_partitions = StaticPartitionsDefinition(list(NORDLAND_SEASONS))

PARTITIONS = {
    "robotcar": robotcar_partitions,
    "nuscenes": nuscenes_partitions,
    "nordland": nordland_partitions,
}
