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

# RobotCar stereo camera -> its camera model in the SDK's models/ folder (robotcar-dataset-sdk
# python/camera_model.py names models by sensor: stereo_wide_left, stereo_narrow_left, ...).
CAMERA_MODELS = {"left": "stereo_wide_left", "centre": "stereo_narrow_left", "right": "stereo_wide_right"}

# Longest INS gap (s) a RobotCar frame may be interpolated across; seqvpr/datasets/robotcar.py says why.
MAX_INS_GAP_S = 1.0
