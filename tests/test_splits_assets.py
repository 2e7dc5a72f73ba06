"""The split and struct-file assets and their checks, materialised in-process on a small home."""
import numpy as np
from dagster import materialize
from scipy.io import loadmat

from assets.splits import split_assets, split_checks
from pipelines.resources import PipelineHome
from seqvpr.datasets.frames import write_table
from seqvpr.layout import Layout
from test_splits import robotcar_frames


def test_oxford_easy_split_and_struct_assets(tmp_path):
    layout = Layout.from_home(tmp_path)
    write_table(robotcar_frames(), layout.frame_table("robotcar"))
    selected = [a for a in split_assets if a.key.to_user_string().startswith("oxford_easy")]
    checks = [c for c in split_checks if any(k.asset_key.to_user_string() == "oxford_easy_split" for k in c.check_keys)]
    result = materialize(
        [*selected, *checks],
        resources={"home": PipelineHome(home=str(tmp_path))},
        run_config={"ops": {"oxford_easy_split": {"config": {"frame_separation": 4.0, "negatives_per_query": 20}}}},
    )
    assert result.success
    meta = result.asset_materializations_for_node("oxford_easy_split")[0].metadata
    counts = meta["counts"].value
    # Both splits use all six sections, 600 m of road; 4 m separation on frames 2.007 m apart keeps
    # every second frame.
    assert 148 <= counts["train/db"] <= 151 and 148 <= counts["test/query"] <= 151
    assert meta["queries_without_positives"].value == {"train": 0, "test": 0}
    assert meta["pairs"].value.startswith("![pairs](data:image/png;base64,")
    evaluations = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert evaluations == {"every_query_has_a_positive": True, "every_split_present": True,
                           "sequences_within_bounds": True, "counts_match_frame_table": True}
    struct = layout.struct_files("oxford_easy") / "oxford2_2014-11-18-13-20-12-2014-12-16-18-44-24_test.db"  # Adapt-STformer's name
    s = loadmat(struct)["dbStruct"][0, 0]
    assert s["numQueries"].item() == counts["test/query"]
    assert np.load(layout.split_table("oxford_easy").with_name("oxford_easy_negatives_test.npy")).shape[1] == 20
