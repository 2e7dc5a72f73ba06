"""Names shared by the synthetic world, the loaders and the splits: traversals, maps, seasons."""

# RobotCar run name -> lighting condition. The four Oxford-hard runs of the Adapt-STformer paper
# and the seqNet Oxford database run (2015-03-17-11-08-44, queried with 2014-12-16-18-44-24).
ROBOTCAR_TRAVERSALS = {
    "2014-11-18-13-20-12": "day",
    "2014-12-16-09-14-09": "day",
    "2014-12-16-18-44-24": "night",
    "2014-12-17-18-18-43": "night",
    "2015-03-17-11-08-44": "day",
}

NUSCENES_LOCATIONS = ("singapore-onenorth", "singapore-queenstown", "singapore-hollandvillage")

NORDLAND_SEASONS = ("spring", "summer", "fall", "winter")

# nuScenes conditions (seqvpr.datasets.nuscenes: "night" when the scene description mentions night).
NUSCENES_CONDITIONS = ("day", "night")
